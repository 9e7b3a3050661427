//! The counterparties' side of the simulation and the gateway's connection tasks: connections
//! as byte queues that the seed delivers whole, in pieces or late, drops, or leaves to a
//! socket holder across a gateway crash; the gateway's sessions driven as the acceptor drives
//! them, their requests queued for the sequencer.

use super::counterparty::GATEWAY_COMP_ID;
use super::*;

/// A TCP connection between a counterparty and the gateway, as two byte queues: bytes written
/// and not yet read, each way. A closed connection loses what is in flight.
#[derive(Default)]
pub(super) struct Wire {
    /// Written by the counterparty, not yet read by the gateway.
    to_gateway: VecDeque<u8>,
    /// Written by the gateway, not yet read by the counterparty.
    to_client: VecDeque<u8>,
}

impl Wire {
    pub(super) fn clear(&mut self) {
        self.to_gateway.clear();
        self.to_client.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.to_gateway.is_empty() && self.to_client.is_empty()
    }
}

/// The gateway's sessions over `stores`, as a gateway process builds them at start.
pub(super) fn gateway_sessions(stores: Vec<MemoryStore>) -> Arc<Sessions<MemoryStore>> {
    Sessions::new(
        stores
            .into_iter()
            .enumerate()
            .map(|(i, store)| {
                Session::new(
                    SessionConfig::new(GATEWAY_COMP_ID, &client_comp_id(i)),
                    store,
                    Dictionary::venue(),
                )
            })
            .collect(),
    )
}

pub(super) fn client_comp_id(session: usize) -> String {
    format!("CLIENT{}", session + 1)
}

impl Sim {
    /// The counterparty of `session` opens a connection and logs on.
    pub(super) fn connect(&mut self, session: usize) {
        self.wires[session].clear();
        self.counterparties[session].connect(self.now);
        let now = self.now;
        self.sessions.with(session as u32, |s| s.on_connect(now));
        let line = format!(
            "{} connects and logs on at {}",
            client_comp_id(session),
            self.counterparties[session].next_out() - 1
        );
        self.log(line);
        self.flush_client(session);
    }

    /// The connection of `session` closes: what was in flight is lost, both sides see it.
    pub(super) fn close(&mut self, session: usize) {
        self.wires[session].clear();
        self.counterparties[session].disconnect();
        self.sessions.with(session as u32, |s| s.on_disconnect());
    }

    /// A counterparty goes away: its connection drops, or it logs out.
    pub(super) fn counterparty_leaves(&mut self) {
        let session = self.rng.below(self.config.sessions as u64) as usize;
        if !self.counterparties[session].connected {
            return;
        }
        self.report.disconnects += 1;
        if self.rng.chance(50) {
            self.log(format!("{} connection drops", client_comp_id(session)));
            self.close(session);
        } else {
            self.log(format!("{} logs out", client_comp_id(session)));
            self.counterparties[session].logout(self.now);
            self.flush_client(session);
        }
    }

    /// A counterparty asks for some of what it already has again.
    pub(super) fn counterparty_asks_resend(&mut self) {
        let session = self.rng.below(self.config.sessions as u64) as usize;
        let counterparty = &self.counterparties[session];
        if !counterparty.logged_on || counterparty.next_in() <= 1 {
            return;
        }
        let begin = 1 + self.rng.below(counterparty.next_in() - 1);
        let end = if self.rng.chance(50) {
            0
        } else {
            begin + self.rng.below(counterparty.next_in() - begin)
        };
        self.log(format!(
            "{} asks for {begin}..{end} again",
            client_comp_id(session)
        ));
        self.report.resend_requests += 1;
        self.counterparties[session].ask_resend(self.now, begin, end);
        self.flush_client(session);
    }

    /// Moves some bytes one way on one connection: whole messages, parts of them, or all.
    pub(super) fn network(&mut self) {
        let session = self.rng.below(self.config.sessions as u64) as usize;
        let to_gateway = self.rng.chance(50);
        let queued = if to_gateway {
            self.wires[session].to_gateway.len()
        } else {
            self.wires[session].to_client.len()
        };
        if queued == 0 {
            return;
        }
        let count = if self.rng.chance(50) {
            queued
        } else {
            1 + self.rng.below(queued as u64) as usize
        };
        if to_gateway {
            self.gateway_reads(session, count);
        } else {
            self.client_reads(session, count);
        }
    }

    /// The gateway reads `count` bytes of `session`'s connection.
    pub(super) fn gateway_reads(&mut self, session: usize, count: usize) {
        let wire = &mut self.wires[session].to_gateway;
        let bytes: Vec<u8> = wire.drain(..count.min(wire.len())).collect();
        let now = self.now;
        self.sessions
            .with(session as u32, |s| s.handle_bytes(now, &bytes));
        self.serve(session);
    }

    /// The counterparty of `session` reads `count` bytes of its connection.
    pub(super) fn client_reads(&mut self, session: usize, count: usize) {
        let wire = &mut self.wires[session].to_client;
        let bytes: Vec<u8> = wire.drain(..count.min(wire.len())).collect();
        if self.counterparties[session].handle_bytes(self.now, &bytes) {
            self.log(format!("{} logged out", client_comp_id(session)));
            self.close(session);
            return;
        }
        self.flush_client(session);
    }

    /// The counterparty of `session` reads everything the gateway wrote to it so far.
    pub(super) fn client_reads_all(&mut self, session: usize) {
        let queued = self.wires[session].to_client.len();
        self.client_reads(session, queued);
    }

    /// Every byte in flight on `session`'s connection is read, both ways, until it is quiet.
    pub(super) fn carry_all(&mut self, session: usize) {
        for _ in 0..constants::SIM_PUMP_STEPS_MAX {
            let wire = &self.wires[session];
            if wire.is_empty() {
                return;
            }
            let (to_gateway, to_client) = (wire.to_gateway.len(), wire.to_client.len());
            self.gateway_reads(session, to_gateway);
            self.client_reads(session, to_client);
        }
        panic!(
            "seed {}: {} and the gateway kept talking after {} rounds",
            self.seed,
            client_comp_id(session),
            constants::SIM_PUMP_STEPS_MAX
        );
    }

    /// What the counterparty wrote goes on its connection.
    pub(super) fn flush_client(&mut self, session: usize) {
        let out = std::mem::take(&mut self.counterparties[session].out);
        if self.counterparties[session].connected {
            self.wires[session].to_gateway.extend(out);
        }
    }

    /// The gateway's connection task for `session`: takes the session's events (requests for
    /// the sequencer, a close) and writes what it has to send, resends included.
    pub(super) fn serve(&mut self, session: usize) {
        if self.handed_over {
            // The old process's connections let go of their sockets at the hand-over.
            return;
        }
        let now = self.now;
        let venue = self.sessions.venue().clone();
        let mut requests = Vec::new();
        let mut out = Vec::new();
        let closing = self
            .sessions
            .with(session as u32, |s| {
                let closing =
                    acceptor::take_events(s, session as u32, &venue, now, &mut requests, |_| {});
                s.poll_transmit(&mut out);
                let mut steps = 0;
                while s.resend_pending() && steps < constants::SIM_PUMP_STEPS_MAX {
                    steps += 1;
                    s.continue_resend(now);
                    s.poll_transmit(&mut out);
                }
                closing
            })
            .unwrap_or(false);
        self.pending.append(&mut requests);
        if self.counterparties[session].connected {
            self.wires[session].to_client.extend(out);
        }
        if closing {
            // The gateway writes what it has, then closes: the counterparty reads it first.
            let line = format!("gateway closes {}'s connection", client_comp_id(session));
            self.log(line);
            let queued = self.wires[session].to_client.len();
            self.client_reads(session, queued);
            self.close(session);
        }
    }

    /// Every session's connection task runs once.
    pub(super) fn serve_all(&mut self) {
        for session in 0..self.config.sessions {
            self.serve(session);
        }
    }

    /// The sequencer takes the requests waiting for it, if it takes requests now.
    pub(super) fn sequence_pending(&mut self) {
        if self.pending.is_empty() || !self.core.accepting() {
            return;
        }
        let before = self.journal.last_seq();
        let mut batch = std::mem::take(&mut self.pending);
        let count = batch.len();
        self.core.handle_requests(self.now, &mut batch);
        let after = self.journal.last_seq();
        self.log(format!(
            "sequencer takes {count} request(s) -> {}",
            if after > before {
                format!("inputs {}..={after}", before + 1)
            } else {
                "refused".into()
            }
        ));
        self.pump();
    }

    /// Every connection carries what is in flight, and the sequencer takes what arrived.
    pub(super) fn carry_everything(&mut self) {
        for session in 0..self.config.sessions {
            self.carry_all(session);
        }
        self.sequence_pending();
    }
}
