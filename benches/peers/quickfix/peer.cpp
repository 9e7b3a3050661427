// The QuickFIX C++ peer of `baton bench --peer quickfix`: an acceptor that answers every
// NewOrderSingle with ExecutionReport New (150=0) in its own process, with a FileStore, so
// baton (gateway + engines + journal) can be compared with a FIX engine answering in-process.
//
// Usage: quickfix-peer --port P --sessions N --store DIR [--dictionary FIX44.xml]
//                      [--sender-prefix TRADER] [--comp-id BATON]
// The session table is generated here: BATON <- TRADER1..TRADERN, like `baton bench` names its
// initiator sessions. "ready" is printed on stdout once the port is bound; SIGTERM or SIGINT
// stops the acceptor (its FileStore stays on disk).

#include <quickfix/Application.h>
#include <quickfix/FileStore.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketAcceptor.h>
#include <quickfix/fix44/ExecutionReport.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace {

std::atomic<bool> stopping{false};

void on_signal(int) { stopping.store(true); }

class Answerer : public FIX::Application {
 public:
  void onCreate(const FIX::SessionID&) override {}
  void onLogon(const FIX::SessionID&) override {}
  void onLogout(const FIX::SessionID&) override {}
  void toAdmin(FIX::Message&, const FIX::SessionID&) override {}
  void toApp(FIX::Message&, const FIX::SessionID&) throw(FIX::DoNotSend) override {}
  void fromAdmin(const FIX::Message&, const FIX::SessionID&)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
             FIX::RejectLogon) override {}

  void fromApp(const FIX::Message& message, const FIX::SessionID& session)
      throw(FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
             FIX::UnsupportedMessageType) override {
    FIX::MsgType type;
    message.getHeader().getField(type);
    if (type.getValue() != FIX::MsgType_NewOrderSingle) {
      // Only new orders are answered; anything else is refused the FIX way.
      throw FIX::UnsupportedMessageType();
    }
    FIX::ClOrdID cl_ord_id;
    FIX::Symbol symbol;
    FIX::Side side;
    FIX::OrderQty quantity;
    message.getField(cl_ord_id);
    message.getField(symbol);
    message.getField(side);
    message.getField(quantity);
    // One counter for the whole process: ExecIDs and OrderIDs are unique across sessions.
    const std::string id = std::to_string(++next_id_);
    const FIX::OrderID order_id(id);
    const FIX::ExecID exec_id(id);
    FIX44::ExecutionReport report(order_id, exec_id, FIX::ExecType(FIX::ExecType_NEW),
                                  FIX::OrdStatus(FIX::OrdStatus_NEW), side,
                                  FIX::LeavesQty(quantity.getValue()), FIX::CumQty(0),
                                  FIX::AvgPx(0));
    report.set(cl_ord_id);
    report.set(symbol);
    report.set(quantity);
    if (message.isSetField(FIX::FIELD::Price)) {
      FIX::Price price;
      message.getField(price);
      report.set(price);
    }
    FIX::Session::sendToTarget(report, session);
  }

 private:
  std::atomic<unsigned long long> next_id_{0};
};

int usage(const char* why) {
  std::cerr << "quickfix-peer: " << why
            << "\nusage: quickfix-peer --port P --sessions N --store DIR [--dictionary FIX44.xml]"
               " [--sender-prefix TRADER] [--comp-id BATON]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string port, store, dictionary, sender_prefix = "TRADER", comp_id = "BATON";
  long sessions = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage(("missing value after " + arg).c_str());
    const std::string value = argv[++i];
    if (arg == "--port") {
      port = value;
    } else if (arg == "--sessions") {
      char* end = nullptr;
      sessions = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || sessions < 1 || sessions > 10000)
        return usage("--sessions takes a count from 1 to 10000");
    } else if (arg == "--store") {
      store = value;
    } else if (arg == "--dictionary") {
      dictionary = value;
    } else if (arg == "--sender-prefix") {
      sender_prefix = value;
    } else if (arg == "--comp-id") {
      comp_id = value;
    } else {
      return usage(("unknown argument " + arg).c_str());
    }
  }
  if (port.empty() || store.empty() || sessions == 0)
    return usage("--port, --sessions and --store are required");

  std::ostringstream config;
  config << "[DEFAULT]\n"
         << "ConnectionType=acceptor\n"
         << "SocketAcceptPort=" << port << "\n"
         << "SocketReuseAddress=Y\n"
         << "SocketNodelay=Y\n"
         << "FileStorePath=" << store << "\n"
         << "StartTime=00:00:00\nEndTime=00:00:00\n"
         << "ResetOnLogon=N\n"
         << "RefreshOnLogon=N\n";
  if (dictionary.empty()) {
    config << "UseDataDictionary=N\n";
  } else {
    config << "UseDataDictionary=Y\nDataDictionary=" << dictionary << "\n";
  }
  for (long n = 1; n <= sessions; ++n) {
    config << "[SESSION]\nBeginString=FIX.4.4\nSenderCompID=" << comp_id
           << "\nTargetCompID=" << sender_prefix << n << "\n";
  }

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  try {
    std::istringstream stream(config.str());
    FIX::SessionSettings settings(stream);
    Answerer application;
    FIX::FileStoreFactory store_factory(settings);
    FIX::SocketAcceptor acceptor(application, store_factory, settings);
    acceptor.start();
    std::cout << "ready" << std::endl;
    while (!stopping.load()) {
      usleep(50 * 1000);
    }
    acceptor.stop();
  } catch (const std::exception& error) {
    std::cerr << "quickfix-peer: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
