//! Moving QuickFIX acceptor sessions to baton: reads a QuickFIX settings file (`.cfg`) and writes
//! the equivalent baton TOML, with a note for every key that could not be carried over and why.
//!
//! The import is deliberately conservative. A trading venue that silently changes a session's
//! hours, version or role is worse than one that refuses to start, so anything baton would read
//! differently from QuickFIX is left out and reported, never guessed: an operator reads the notes,
//! decides, and edits the TOML by hand. The produced TOML is parsed with [`Config::parse`] before
//! it is returned, so an import never hands back a file the gateway would refuse.
//!
//! QuickFIX's file is INI-like: `[DEFAULT]` holds values every `[SESSION]` inherits, each
//! `[SESSION]` one session; lines are `Key=Value`, `#` starts a comment. Key names are matched
//! without regard to case, as QuickFIX does.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::{Config, ConfigError};
use crate::fix::schedule::{Schedule, TimeOfDay};

/// Why a QuickFIX file cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line is neither a section header, a comment nor `Key=Value`.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number in the QuickFIX file.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// No `[SESSION]` survived the import; the notes say why each was left out.
    #[error("no session can be carried over{}", notes_text(.0))]
    NoSession(Vec<Note>),
    /// The generated TOML does not load: a bug in the import, or a value baton refuses that the
    /// import did not foresee; the loader's message names it.
    #[error("the converted configuration does not load: {0}")]
    Result(#[from] ConfigError),
}

fn notes_text(notes: &[Note]) -> String {
    notes.iter().map(|note| format!("\n  {note}")).collect()
}

/// One key (or whole session) that was not carried over as it was, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Where: `[DEFAULT]` or `[SESSION] #n` with its CompIDs when known, and the line.
    pub location: String,
    /// The QuickFIX key as written in the file (or `[SESSION]` for a session left out).
    pub key: String,
    /// Why it was dropped or changed, and what to do instead.
    pub reason: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.location, self.key, self.reason)
    }
}

/// The result of an import: the TOML text (already checked to load) and every note.
#[derive(Debug)]
pub struct Import {
    /// The baton configuration, ready to write.
    pub toml: String,
    /// Keys and sessions not carried over as they were, in file order.
    pub notes: Vec<Note>,
}

/// One `Key=Value` line as written.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

/// One `[DEFAULT]` or `[SESSION]` section.
#[derive(Clone, Debug, Default)]
struct Section {
    entries: Vec<Entry>,
    line: usize,
}

impl Section {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(key))
    }
}

/// What baton does with a QuickFIX key.
enum Disposition {
    /// Becomes the session key of the same name (baton uses QuickFIX's names).
    Session(ValueKind),
    /// Read by the import itself (role, version, listener, store); never copied as is.
    Handled,
    /// Not carried over, for this reason.
    Dropped(&'static str),
}

/// How a carried session value is checked and written.
#[derive(Clone, Copy)]
enum ValueKind {
    Text,
    Time,
    Flag,
    Seconds,
}

/// The keys QuickFIX acceptors commonly set, with what happens to each. Anything not listed is
/// reported as unknown, so a key baton has not thought about is never dropped silently.
fn disposition(key: &str) -> Disposition {
    use Disposition::*;
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "sendercompid" | "targetcompid" | "weekdays" => Session(ValueKind::Text),
        "starttime" | "endtime" => Session(ValueKind::Time),
        "nonstopsession" | "checklatency" => Session(ValueKind::Flag),
        "maxlatency" | "logontimeout" | "logouttimeout" => Session(ValueKind::Seconds),
        "connectiontype"
        | "beginstring"
        | "socketacceptport"
        | "socketacceptaddress"
        | "filestorepath" => Handled,
        "heartbtint" => Dropped(
            "an acceptor takes the counterparty's HeartBtInt from its Logon; baton bounds it with HeartBtIntMin/HeartBtIntMax instead",
        ),
        "datadictionary"
        | "appdatadictionary"
        | "transportdatadictionary"
        | "usedatadictionary" => Dropped(
            "the venue dictionary (fix-specs/FIX44.xml) is built in and cannot be replaced per session",
        ),
        "validatefieldsoutoforder"
        | "validatefieldshavevalues"
        | "validateuserdefinedfields"
        | "validatelengthandchecksum"
        | "validateunorderedgroupfields"
        | "allowunknownmsgfields"
        | "rejectinvalidmessage" => Dropped(
            "baton always validates against the venue dictionary; validation cannot be relaxed per session",
        ),
        "resetonlogon" | "resetonlogout" | "resetondisconnect" | "refreshonlogon" => Dropped(
            "baton keeps sequence numbers across connections and resets them at the session window's start or on a Logon with ResetSeqNumFlag (141=Y)",
        ),
        "persistmessages" => {
            Dropped("baton always stores sent messages so that it can answer a ResendRequest")
        }
        "filelogpath"
        | "fileloglogpath"
        | "debugfilelogpath"
        | "screenlogshowincoming"
        | "screenlogshowoutgoing"
        | "screenlogshowevents"
        | "fileincludemilliseconds"
        | "fileincludetimestampforincomingmessages" => Dropped(
            "baton logs to stderr through tracing (RUST_LOG filters it); there is no per-session message log file",
        ),
        "timezone" | "uselocaltime" => Dropped(
            "baton's StartTime/EndTime are UTC; convert the times to UTC by hand (mind daylight saving)",
        ),
        "startday" | "endday" => Dropped(
            "baton has daily windows only (StartTime/EndTime with Weekdays), no weekly session",
        ),
        "sessionqualifier" => Dropped(
            "baton identifies a session by its CompID pair alone; two sessions with the same pair cannot coexist",
        ),
        "socketnodelay" => Dropped("baton always sets TCP_NODELAY on FIX connections"),
        "socketreuseaddress" | "socketreuseaddr" => {
            Dropped("not configurable; the operating system's default applies")
        }
        "socketsendbuffersize" | "socketreceivebuffersize" | "socketrecvbuffersize" => {
            Dropped("not configurable; baton bounds each session's buffers itself")
        }
        "millisecondsintimestamp" | "timestampprecision" => Dropped(
            "baton writes SendingTime with millisecond precision, which FIX 4.4 counterparties accept",
        ),
        "defaultapplverid" => Dropped("FIXT.1.1 sessions are not supported"),
        "socketconnecthost" | "socketconnectport" | "reconnectinterval" | "socketconnecthost1"
        | "socketconnectport1" => Dropped("initiator setting: baton only accepts connections"),
        // TLS: read by the import into [gateway] (one listener), see `tls_keys`.
        "sslenable"
        | "socketusessl"
        | "servercertificatefile"
        | "servercertificatekeyfile"
        | "serverkeyfile"
        | "certificationauthoritiesfile"
        | "sslcacertificate"
        | "certificateverifylevel"
        | "sslrequireclientcertificate"
        | "needclientauth" => Handled,
        "sslprotocol" | "sslprotocols" | "enabledprotocols" | "sslciphersuite" | "ciphersuites" => {
            Dropped(
                "baton offers TLS 1.2 and 1.3 with rustls's default cipher suites; protocols and ciphers are not configurable",
            )
        }
        "sslcertificate" | "socketkeystore" | "sockettruststore" => Dropped(
            "a PKCS#12 file or Java keystore is not read: export the certificate chain and key to PEM (e.g. `openssl pkcs12 -in FILE -nodes`) and set [gateway] tls_cert and tls_key (tls_client_ca for the authority)",
        ),
        "sslcertificatepassword" | "socketkeystorepassword" | "sockettruststorepassword" => {
            Dropped(
                "baton reads unencrypted PEM keys only; protect the key file by its owner and mode instead",
            )
        }
        "certificaterevocationlistfile"
        | "certificaterevocationlistdirectory"
        | "sslcheckcertificaterevocation" => Dropped(
            "revocation lists are not read: to lock a counterparty out, remove its certificate name from [gateway.tls_clients]",
        ),
        "certificationauthoritiesdirectory" => Dropped(
            "a directory of authorities is not read: put the authorities in one PEM file for [gateway] tls_client_ca",
        ),
        "clientcertificatefile"
        | "clientcertificatekeyfile"
        | "sslservername"
        | "sslvalidatecertificates" => Dropped(
            "initiator setting (the certificate an initiator presents, or how it checks the acceptor's): baton only accepts connections",
        ),
        "sendredundantresendrequests" | "resendsessionlevelrejects" | "senderdefaultapplverid" => {
            Dropped("baton's resend behaviour is fixed; see README's Session behavior")
        }
        "checkcompid" => Dropped("baton always checks both CompIDs on every message"),
        _ => Dropped("not a key baton knows; not carried over"),
    }
}

/// Parses QuickFIX settings text into its sections: `[DEFAULT]` (empty if absent) and the
/// `[SESSION]`s in order.
fn parse_sections(text: &str) -> Result<(Section, Vec<Section>), ImportError> {
    let mut default = Section::default();
    let mut sessions: Vec<Section> = Vec::new();
    // None before any header; Some(None) in [DEFAULT]; Some(Some(i)) in session i.
    let mut current: Option<Option<usize>> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            match name.trim().to_ascii_uppercase().as_str() {
                "DEFAULT" => {
                    default.line = line;
                    current = Some(None);
                }
                "SESSION" => {
                    sessions.push(Section {
                        entries: Vec::new(),
                        line,
                    });
                    current = Some(Some(sessions.len() - 1));
                }
                _ => {
                    return Err(ImportError::Syntax {
                        line,
                        message: format!(
                            "section [{}] is neither [DEFAULT] nor [SESSION]",
                            name.trim()
                        ),
                    });
                }
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(ImportError::Syntax {
                line,
                message: "expected Key=Value, a [SECTION] header or a # comment".into(),
            });
        };
        let entry = Entry {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            line,
        };
        if entry.key.is_empty() {
            return Err(ImportError::Syntax {
                line,
                message: "a key is missing before '='".into(),
            });
        }
        match current {
            None => {
                return Err(ImportError::Syntax {
                    line,
                    message: "a setting before any [DEFAULT] or [SESSION] header".into(),
                });
            }
            Some(None) => default.entries.push(entry),
            Some(Some(i)) => sessions[i].entries.push(entry),
        }
    }
    Ok((default, sessions))
}

/// A TOML basic string: quoted and escaped.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// QuickFIX's `Y`/`N` as a TOML boolean, `None` for anything else.
fn flag(value: &str) -> Option<bool> {
    match value.to_ascii_uppercase().as_str() {
        "Y" | "YES" | "TRUE" => Some(true),
        "N" | "NO" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Converts one section's carried keys to TOML lines, noting the rest.
fn section_keys(section: &Section, location: &str, notes: &mut Vec<Note>) -> String {
    let mut out = String::new();
    for entry in &section.entries {
        let here = format!("{location} line {}", entry.line);
        let note = |notes: &mut Vec<Note>, reason: String| {
            notes.push(Note {
                location: here.clone(),
                key: entry.key.clone(),
                reason,
            })
        };
        let kind = match disposition(&entry.key) {
            Disposition::Handled => continue,
            Disposition::Dropped(reason) => {
                note(notes, reason.to_string());
                continue;
            }
            Disposition::Session(kind) => kind,
        };
        let name = canonical(&entry.key);
        let value = &entry.value;
        let rendered = match kind {
            ValueKind::Text => {
                if name == "Weekdays" && Schedule::parse_weekdays(value).is_none() {
                    note(
                        notes,
                        format!("{value:?} is not a list of days like Mon,Tue,Wed"),
                    );
                    continue;
                }
                quoted(value)
            }
            ValueKind::Time => {
                if TimeOfDay::parse(value).is_none() {
                    note(
                        notes,
                        format!("{value:?} is not HH:MM:SS (dates and time zones are not carried)"),
                    );
                    continue;
                }
                quoted(value)
            }
            ValueKind::Flag => match flag(value) {
                Some(b) => b.to_string(),
                None => {
                    note(notes, format!("{value:?} is neither Y nor N"));
                    continue;
                }
            },
            ValueKind::Seconds => match value.parse::<u64>() {
                Ok(n) => n.to_string(),
                Err(_) => {
                    note(notes, format!("{value:?} is not a whole number of seconds"));
                    continue;
                }
            },
        };
        let _ = writeln!(out, "{name} = {rendered}");
    }
    out
}

/// baton's spelling of a carried key (QuickFIX matches keys without regard to case; baton's TOML
/// does not).
fn canonical(key: &str) -> &'static str {
    const NAMES: [&str; 10] = [
        "SenderCompID",
        "TargetCompID",
        "Weekdays",
        "StartTime",
        "EndTime",
        "NonStopSession",
        "CheckLatency",
        "MaxLatency",
        "LogonTimeout",
        "LogoutTimeout",
    ];
    NAMES
        .iter()
        .find(|name| name.eq_ignore_ascii_case(key))
        .copied()
        .unwrap_or_else(|| unreachable!("canonical() is called only for carried keys: {key}"))
}

/// QuickFIX's TLS settings as `[gateway]` TLS keys (the text to put under `[gateway]`, possibly
/// ending with a `[gateway.tls_clients]` table), noting what does not carry. QuickFIX turns TLS
/// on with `SSLEnable` (QuickFIX/n), `SocketUseSSL` (QuickFIX/J) or by being the SSL build given
/// `ServerCertificateFile` (QuickFIX C++); only PEM files carry, which is what the C++ build
/// reads.
///
/// QuickFIX checks a client certificate against its authority but does not tie it to a CompID.
/// Where it required one, the import keeps it required and writes one placeholder certificate
/// name per session: no certificate bears those names, so no one logs on until the operator
/// names each counterparty's certificate. Failing closed is the point; an import that let any
/// certificate of the authority log on as any CompID would be weaker than nothing said.
fn tls_keys<'a>(
    gateway_value: &dyn Fn(&str) -> Option<&'a Entry>,
    carried: &[(usize, String)],
    sessions: &'a [Section],
    default: &'a Section,
    notes: &mut Vec<Note>,
) -> String {
    let mut note = |entry: &Entry, reason: String| {
        notes.push(Note {
            location: format!("line {}", entry.line),
            key: entry.key.clone(),
            reason,
        })
    };
    let switch = gateway_value("SSLEnable").or_else(|| gateway_value("SocketUseSSL"));
    let enabled = match switch {
        None => None,
        Some(entry) => match flag(&entry.value) {
            Some(on) => Some(on),
            None => {
                note(
                    entry,
                    format!("{:?} is neither Y nor N; TLS is left off", entry.value),
                );
                Some(false)
            }
        },
    };
    let cert = gateway_value("ServerCertificateFile");
    let key = gateway_value("ServerCertificateKeyFile").or_else(|| gateway_value("ServerKeyFile"));
    let authority =
        gateway_value("CertificationAuthoritiesFile").or_else(|| gateway_value("SSLCACertificate"));
    let level = gateway_value("CertificateVerifyLevel");
    let required = gateway_value("SSLRequireClientCertificate")
        .or_else(|| gateway_value("NeedClientAuth"))
        .and_then(|entry| flag(&entry.value))
        .unwrap_or(false)
        || level.is_some_and(|entry| entry.value.trim().parse::<u32>().is_ok_and(|l| l > 0));
    if enabled == Some(false) {
        for entry in [cert, key, authority].into_iter().flatten() {
            note(
                entry,
                "TLS is switched off in the QuickFIX file; not carried".into(),
            );
        }
        return String::new();
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        let given = cert.or(key).or(switch);
        if let Some(entry) = given {
            note(
                entry,
                "TLS was on, but ServerCertificateFile and ServerCertificateKeyFile (PEM) are not both set: the converted gateway listens in plain TCP until [gateway] tls_cert and tls_key are set".into(),
            );
        }
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(out, "tls_cert = {}", quoted(&cert.value));
    let _ = writeln!(out, "tls_key = {}", quoted(&key.value));
    match (required, authority) {
        (false, None) => {}
        (false, Some(entry)) => note(
            entry,
            "client certificates were not required (CertificateVerifyLevel 0 or unset), so the authority is not carried; set [gateway] tls_client_ca to require them".into(),
        ),
        (true, None) => {
            if let Some(entry) = level.or(gateway_value("SSLRequireClientCertificate")) {
                note(
                    entry,
                    "client certificates were required but no CertificationAuthoritiesFile names their authority: the converted gateway encrypts without asking for one until [gateway] tls_client_ca and [gateway.tls_clients] are set".into(),
                );
            }
        }
        (true, Some(entry)) => {
            let _ = writeln!(out, "tls_client_ca = {}", quoted(&entry.value));
            let _ = writeln!(
                out,
                "\n# QuickFIX did not tie certificates to CompIDs. Replace each name with the subject CN or a\n\
                 # DNS name of that counterparty's certificate: until then no certificate matches and no one\n\
                 # logs on.\n[gateway.tls_clients]"
            );
            for (index, _) in carried {
                if let Some(target) = effective(&sessions[*index], default, "TargetCompID") {
                    let placeholder = format!("REPLACE with the certificate name of {}", target.value);
                    let _ = writeln!(
                        out,
                        "{} = [{}]",
                        quoted(&placeholder),
                        quoted(&target.value)
                    );
                }
            }
            note(
                entry,
                "carried as [gateway] tls_client_ca: every counterparty must present a certificate from it; [gateway.tls_clients] holds a placeholder name per session, replace each with that counterparty's certificate CN or DNS name or no one can log on".into(),
            );
            if let Some(level) = level
                && level.value.trim() != "2"
            {
                note(
                    level,
                    format!(
                        "CertificateVerifyLevel {}: baton always requires the client certificate when tls_client_ca is set",
                        level.value
                    ),
                );
            }
        }
    }
    out
}

/// The effective value of `key` for a session: its own, else `[DEFAULT]`'s.
fn effective<'a>(session: &'a Section, default: &'a Section, key: &str) -> Option<&'a Entry> {
    session.get(key).or_else(|| default.get(key))
}

/// Converts a QuickFIX settings file's text; `origin` names it in the TOML's header comment.
pub fn import(text: &str, origin: &str) -> Result<Import, ImportError> {
    let (default, sessions) = parse_sections(text)?;
    let mut notes = Vec::new();

    // Which sessions can be carried: acceptors on FIX.4.4 with both CompIDs, each pair once.
    let mut carried: Vec<(usize, String)> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (index, session) in sessions.iter().enumerate() {
        let get = |key: &str| effective(session, &default, key).map(|e| e.value.as_str());
        let sender = get("SenderCompID").unwrap_or("");
        let target = get("TargetCompID").unwrap_or("");
        let location = format!("[SESSION] #{} {sender}->{target}", index + 1);
        let refuse = |notes: &mut Vec<Note>, reason: String| {
            notes.push(Note {
                location: format!("{location} line {}", session.line),
                key: "[SESSION]".into(),
                reason: format!("session not carried over: {reason}"),
            })
        };
        match get("ConnectionType") {
            Some(kind) if kind.eq_ignore_ascii_case("acceptor") => {}
            Some(kind) if kind.eq_ignore_ascii_case("initiator") => {
                refuse(
                    &mut notes,
                    "it is an initiator; baton only accepts connections".into(),
                );
                continue;
            }
            Some(kind) => {
                refuse(
                    &mut notes,
                    format!("ConnectionType {kind:?} is neither acceptor nor initiator"),
                );
                continue;
            }
            None => {
                refuse(&mut notes, "ConnectionType is not set".into());
                continue;
            }
        }
        match get("BeginString") {
            Some("FIX.4.4") => {}
            Some(other) => {
                refuse(
                    &mut notes,
                    format!("BeginString {other} is not supported (only FIX.4.4)"),
                );
                continue;
            }
            None => {
                refuse(&mut notes, "BeginString is not set".into());
                continue;
            }
        }
        if sender.is_empty() || target.is_empty() {
            refuse(
                &mut notes,
                "SenderCompID and TargetCompID are both required".into(),
            );
            continue;
        }
        let pair = (sender.to_string(), target.to_string());
        if pairs.contains(&pair) {
            refuse(
                &mut notes,
                "an earlier session has the same CompIDs (SessionQualifier is not supported)"
                    .into(),
            );
            continue;
        }
        pairs.push(pair);
        carried.push((index, location));
    }
    if carried.is_empty() {
        return Err(ImportError::NoSession(notes));
    }

    // baton has one listener and one store directory: the first carried session's values win.
    let gateway_value = |key: &str| -> Option<&Entry> {
        carried
            .iter()
            .find_map(|(index, _)| effective(&sessions[*index], &default, key))
    };
    let port_entry = gateway_value("SocketAcceptPort");
    let address_entry = gateway_value("SocketAcceptAddress");
    let mut listen = crate::constants::FIX_LISTEN_DEFAULT;
    match port_entry.map(|e| (e, e.value.parse::<u16>())) {
        Some((_, Ok(port))) => listen.set_port(port),
        Some((entry, Err(_))) => notes.push(Note {
            location: format!("line {}", entry.line),
            key: entry.key.clone(),
            reason: format!("{:?} is not a port; listen left at {listen}", entry.value),
        }),
        None => notes.push(Note {
            location: "[DEFAULT]".into(),
            key: "SocketAcceptPort".into(),
            reason: format!("not set; [gateway] listen left at {listen}"),
        }),
    }
    match address_entry {
        Some(entry) => match entry.value.parse::<IpAddr>() {
            Ok(ip) => listen.set_ip(ip),
            Err(_) => notes.push(Note {
                location: format!("line {}", entry.line),
                key: entry.key.clone(),
                reason: format!(
                    "{:?} is not an IP address (baton does not resolve host names); listen left at {}",
                    entry.value,
                    listen.ip()
                ),
            }),
        },
        // QuickFIX listens on every interface when no address is given; so does the import,
        // and says so, since baton's own default is loopback.
        None if port_entry.is_some() => {
            listen.set_ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            notes.push(Note {
                location: "[gateway]".into(),
                key: "SocketAcceptAddress".into(),
                reason: "not set: listening on every interface (0.0.0.0) as QuickFIX does; set an address to narrow it".into(),
            });
        }
        None => {}
    }
    let listen: SocketAddr = listen;
    for (index, location) in &carried {
        for key in [
            "SocketAcceptPort",
            "SocketAcceptAddress",
            "FileStorePath",
            "ServerCertificateFile",
            "ServerCertificateKeyFile",
            "CertificationAuthoritiesFile",
        ] {
            let (Some(own), Some(first)) = (sessions[*index].get(key), gateway_value(key)) else {
                continue;
            };
            if own.value != first.value {
                notes.push(Note {
                    location: format!("{location} line {}", own.line),
                    key: own.key.clone(),
                    reason: format!(
                        "baton has one {} for all sessions; {:?} from line {} is used",
                        if key == "FileStorePath" {
                            "store directory"
                        } else {
                            "listener"
                        },
                        first.value,
                        first.line
                    ),
                });
            }
        }
    }
    let store_dir = match gateway_value("FileStorePath") {
        Some(entry) => {
            notes.push(Note {
                location: format!("line {}", entry.line),
                key: entry.key.clone(),
                reason: "carried as [gateway] store_dir, but QuickFIX's store files are not read: every session starts again from sequence number 1, so agree a reset with each counterparty (or have it log on with 141=Y)".into(),
            });
            entry.value.clone()
        }
        None => "var/store".to_string(),
    };
    let tls = tls_keys(&gateway_value, &carried, &sessions, &default, &mut notes);

    let mut toml = String::new();
    let _ = writeln!(
        toml,
        "# Converted from the QuickFIX settings {origin} by `baton config import-quickfix`.\n\
         # Review the notes it printed: keys it could not carry over are not in this file.\n"
    );
    let _ = writeln!(toml, "[gateway]");
    let _ = writeln!(toml, "listen = {}", quoted(&listen.to_string()));
    let _ = writeln!(toml, "store_dir = {}", quoted(&store_dir));
    let _ = writeln!(
        toml,
        "# The engines behind the gateway; without any, business messages are rejected (380=4).\n\
         # engines = [\"unix://var/engine-blue.sock\", \"unix://var/engine-green.sock\"]\n"
    );
    if !tls.is_empty() {
        let _ = writeln!(toml, "{tls}");
    }
    let _ = writeln!(toml, "[defaults]");
    let _ = writeln!(toml, "BeginString = \"FIX.4.4\"");
    toml.push_str(&section_keys(&default, "[DEFAULT]", &mut notes));
    for (index, location) in &carried {
        let _ = writeln!(toml, "\n[[session]]");
        toml.push_str(&section_keys(&sessions[*index], location, &mut notes));
    }
    // The keys of a session left out are not listed one by one: its one note says why the whole
    // session stayed behind. What is written must load as it is, or nothing is handed back.
    Config::parse(&toml, "converted configuration")?;
    Ok(Import { toml, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[DEFAULT]\nConnectionType=acceptor\nSocketAcceptPort=5001\nBeginString=FIX.4.4\nSenderCompID=VENUE\n";

    #[test]
    fn keys_match_without_case_and_are_written_in_batons_spelling() {
        let text = format!("{BASE}[SESSION]\ntargetcompid=ALPHA\nmaxlatency=30\ncheckLatency=N\n");
        let import = import(&text, "t.cfg").expect("imports");
        let config = Config::parse(&import.toml, "t").expect("loads");
        let sessions = config.session_configs("t").expect("sessions");
        assert_eq!(sessions[0].target_comp_id, "ALPHA");
        assert_eq!(sessions[0].max_latency_ms, 30_000);
        assert!(!sessions[0].check_latency);
    }

    #[test]
    fn a_session_is_refused_for_its_role_or_version_and_said_why() {
        let text = format!(
            "{BASE}[SESSION]\nTargetCompID=A\nConnectionType=initiator\n[SESSION]\nTargetCompID=B\nBeginString=FIX.4.2\n[SESSION]\nTargetCompID=C\n"
        );
        let import = import(&text, "t.cfg").expect("imports");
        let reasons: Vec<String> = import.notes.iter().map(|n| n.to_string()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("VENUE->A") && r.contains("initiator")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("VENUE->B") && r.contains("FIX.4.2")),
            "{reasons:?}"
        );
        let config = Config::parse(&import.toml, "t").expect("loads");
        assert_eq!(config.sessions.len(), 1);
    }

    #[test]
    fn malformed_lines_and_empty_results_are_errors() {
        assert!(matches!(
            import("[DEFAULT]\nnot a setting\n", "t"),
            Err(ImportError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            import("SenderCompID=X\n", "t"),
            Err(ImportError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            import("[WHATEVER]\n", "t"),
            Err(ImportError::Syntax { line: 1, .. })
        ));
        assert!(matches!(import(BASE, "t"), Err(ImportError::NoSession(_))));
    }

    #[test]
    fn values_baton_cannot_read_are_noted_not_written() {
        let text = format!(
            "{BASE}[SESSION]\nTargetCompID=A\nMaxLatency=soon\nStartTime=08:00\nEndTime=17:00:00\nNonStopSession=Y\nCheckLatency=maybe\n"
        );
        let import = import(&text, "t.cfg").expect("imports");
        for key in ["MaxLatency", "StartTime", "CheckLatency"] {
            assert!(
                import.notes.iter().any(|n| n.key == key),
                "{key}: {:?}",
                import.notes
            );
            assert!(
                !import.toml.contains(&format!("{key} =")),
                "{}",
                import.toml
            );
        }
    }

    #[test]
    fn pem_tls_settings_carry_and_required_client_certificates_fail_closed() {
        let text = format!(
            "{BASE}ServerCertificateFile=/etc/fix/venue.pem\nServerCertificateKeyFile=/etc/fix/venue.key\n\
             CertificationAuthoritiesFile=/etc/fix/clients.pem\nCertificateVerifyLevel=2\nSSLProtocol=+TLSv1.2\n\
             [SESSION]\nTargetCompID=A\n[SESSION]\nTargetCompID=B\n"
        );
        let import = import(&text, "t.cfg").expect("imports");
        let config = Config::parse(&import.toml, "t").expect("loads");
        let gateway = &config.gateway;
        assert_eq!(
            gateway.tls_cert.as_deref(),
            Some(std::path::Path::new("/etc/fix/venue.pem"))
        );
        assert_eq!(
            gateway.tls_key.as_deref(),
            Some(std::path::Path::new("/etc/fix/venue.key"))
        );
        assert_eq!(
            gateway.tls_client_ca.as_deref(),
            Some(std::path::Path::new("/etc/fix/clients.pem"))
        );
        // One placeholder per session: no real certificate is named, so no one logs on yet.
        let mapped: Vec<(&str, &[String])> = gateway
            .tls_clients
            .iter()
            .map(|(name, ids)| (name.as_str(), ids.as_slice()))
            .collect();
        assert_eq!(mapped.len(), 2, "{mapped:?}");
        assert!(
            mapped
                .iter()
                .all(|(name, ids)| name.starts_with("REPLACE") && ids.len() == 1),
            "{mapped:?}"
        );
        let reasons: Vec<String> = import.notes.iter().map(|n| n.to_string()).collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("CertificationAuthoritiesFile") && r.contains("placeholder")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("SSLProtocol") && r.contains("not configurable")),
            "{reasons:?}"
        );
    }

    #[test]
    fn tls_that_cannot_carry_is_said_and_not_guessed() {
        // QuickFIX/n with a PKCS#12 file: on, but nothing baton can read.
        let text = format!(
            "{BASE}SSLEnable=Y\nSSLCertificate=venue.pfx\nSSLCertificatePassword=secret\n[SESSION]\nTargetCompID=A\n"
        );
        let imported = import(&text, "t.cfg").expect("imports");
        assert!(!imported.toml.contains("tls_"), "{}", imported.toml);
        let reasons: Vec<String> = imported.notes.iter().map(|n| n.to_string()).collect();
        for (key, why) in [
            ("SSLEnable", "plain TCP"),
            ("SSLCertificate", "PKCS#12"),
            ("SSLCertificatePassword", "unencrypted PEM"),
        ] {
            assert!(
                reasons.iter().any(|r| r.contains(key) && r.contains(why)),
                "{key}: {reasons:?}"
            );
        }
        // Switched off: the files are noted, not carried.
        let text = format!(
            "{BASE}SocketUseSSL=N\nServerCertificateFile=v.pem\nServerCertificateKeyFile=v.key\n[SESSION]\nTargetCompID=A\n"
        );
        let imported = import(&text, "t.cfg").expect("imports");
        assert!(!imported.toml.contains("tls_"), "{}", imported.toml);
        assert!(
            imported
                .notes
                .iter()
                .any(|n| n.key == "ServerCertificateFile" && n.reason.contains("switched off")),
            "{:?}",
            imported.notes
        );
    }

    #[test]
    fn a_string_with_quotes_is_escaped() {
        let text = format!("{BASE}[SESSION]\nTargetCompID=A\"B\\C\n");
        let import = import(&text, "t").expect("imports");
        let config = Config::parse(&import.toml, "t").expect("loads");
        let sessions = config.session_configs("t").expect("sessions");
        assert_eq!(sessions[0].target_comp_id, "A\"B\\C");
    }
}
