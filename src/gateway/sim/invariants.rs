//! What the simulation checks: after every step, that nothing was delivered twice, out of
//! order or without a journaled input; at rest, that each session holds exactly what a replay
//! of the journal gives it and every engine's book equals that replay's.

use super::*;

impl Sim {
    pub(super) fn status(&mut self) -> crate::gateway::status::CoreStatus {
        let id = CommandId(u64::MAX);
        self.core.handle_command(
            self.now,
            id,
            CoreCommand {
                request: CoreRequest::Status,
                expect_sha256: None,
                canary_only: false,
                expected_divergence: Default::default(),
            },
        );
        while let Some((answered, reply)) = self.core.poll_reply() {
            if let (true, crate::gateway::core::CoreReply::Status(status)) = (answered == id, reply)
            {
                return *status;
            }
        }
        crate::gateway::status::CoreStatus::default()
    }

    /// See [`SimReport::fingerprint`].
    pub(super) fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for session in 0..self.config.sessions {
            self.sessions.with(session as u32, |s| {
                let store = s.store();
                for seq in 1..store.seq_num_next_out() {
                    if let Some(bytes) = store.sent(seq) {
                        hasher.update(bytes);
                    }
                }
            });
        }
        hasher.finalize().into()
    }

    // ----- invariants -------------------------------------------------------------------------

    /// No output delivered twice, none the journal does not explain.
    pub(super) fn check(&mut self) -> Result<(), SimFailure> {
        if let Some(broken) = self.broken.take() {
            return Err(self.fail(broken));
        }
        if let Some(broken) = self.counterparties.iter().find_map(|c| c.broken.clone()) {
            return Err(self.fail(broken));
        }
        let journal_last = self.journal.last_seq();
        for session in 0..self.config.sessions {
            let from = self.checked[session] + 1;
            let (next_out, messages) = self
                .sessions
                .with(session as u32, |s| {
                    let store = s.store();
                    let next = store.seq_num_next_out();
                    let messages: Vec<Option<Vec<u8>>> = (from..next)
                        .map(|seq| store.sent(seq).map(<[u8]>::to_vec))
                        .collect();
                    (next, messages)
                })
                .unwrap_or_default();
            self.checked[session] = next_out.saturating_sub(1);
            for (seq, bytes) in (from..).zip(messages) {
                // The session's outbound numbers are gap-free: each one holds the message sent
                // under it, so a resend can always answer.
                let Some(message) = bytes.and_then(|bytes| Message::parse(&bytes).ok()) else {
                    return Err(self.fail(format!(
                        "{}'s store holds no message under MsgSeqNum {seq}",
                        client_comp_id(session)
                    )));
                };
                if message.uint(crate::fix::tags::MSG_SEQ_NUM).ok() != Some(seq) {
                    return Err(self.fail(format!(
                        "{}'s store holds another MsgSeqNum under {seq}",
                        client_comp_id(session)
                    )));
                }
                if message.msg_type() != b"8" {
                    continue;
                }
                let Some(key) = message
                    .get(crate::gateway::translate::tag::EXEC_ID)
                    .and_then(crate::gateway::translate::exec_id_key)
                else {
                    return Err(self.fail("an execution report without an ExecID".into()));
                };
                // Invariant of verified canaries: no answer the baseline did not match is ever
                // delivered. Only the faulty canary writes this OrderID.
                if message.uint(crate::gateway::translate::tag::ORDER_ID)
                    == Ok(constants::SIM_WRONG_ORDER_ID)
                {
                    return Err(self.fail(format!(
                        "ExecID {}-{}: a verified canary's wrong answer reached CLIENT{} without the baseline's matching it",
                        key.0,
                        key.1,
                        session + 1
                    )));
                }
                if key.0 > journal_last {
                    return Err(self.fail(format!(
                        "ExecID {}-{} delivered for an input the journal does not hold (last {journal_last})",
                        key.0, key.1
                    )));
                }
                if let Some(last) = self.exec_ids[session].last()
                    && key < *last
                    && !self.exec_ids[session].contains(&key)
                {
                    return Err(self.fail(format!(
                        "ExecID {}-{} reached CLIENT{} after {}-{}: outputs out of input order",
                        key.0,
                        key.1,
                        session + 1,
                        last.0,
                        last.1
                    )));
                }
                if !self.exec_ids[session].insert(key) {
                    return Err(self.fail(format!(
                        "ExecID {}-{} delivered twice to CLIENT{}",
                        key.0,
                        key.1,
                        session + 1
                    )));
                }
                self.report.delivered += 1;
            }
        }
        Ok(())
    }

    /// Every fault healed, engines reachable: the run settles.
    pub(super) fn heal_and_settle(&mut self) -> Result<(), SimFailure> {
        self.log("heal: every engine answers; time passes".into());
        self.healed = true;
        for engine in &mut self.engines {
            engine.silent = false;
        }
        // Any switch left waiting completes or is refused; engines reconnect.
        for _ in 0..constants::SIM_SETTLE_ROUNDS_MAX {
            for session in 0..self.config.sessions {
                if !self.counterparties[session].connected {
                    self.connect(session);
                }
            }
            self.advance(constants::ENGINE_RECONNECT_MS);
            for slot in 0..self.engines.len() {
                self.answer(slot, usize::MAX);
            }
            let idle = self.engines.iter().all(|e| {
                e.linked
                    && e.inbox.is_empty()
                    && e.engine.last_input_seq() == self.journal.last_seq()
            });
            if idle && self.core.accepting() && self.sessions_in_step() {
                self.advance(constants::ENGINE_RECONNECT_MS);
                if self.sessions_in_step() {
                    return Ok(());
                }
            }
        }
        let engines: Vec<String> = self
            .engines
            .iter()
            .map(|e| {
                format!(
                    "{} linked={} at={} inbox={}",
                    e.name,
                    e.linked,
                    e.engine.last_input_seq(),
                    e.inbox.len()
                )
            })
            .collect();
        let sessions: Vec<String> = (0..self.config.sessions)
            .map(|session| {
                let c = &self.counterparties[session];
                let (state, next_in, next_out) = self
                    .sessions
                    .with(session as u32, |s| {
                        (
                            format!("{:?}", s.state()),
                            s.seq_num_next_in(),
                            s.store().seq_num_next_out(),
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} logged_on={} in={} out={} gateway {state} in={next_in} out={next_out}",
                    c.comp_id,
                    c.logged_on,
                    c.next_in(),
                    c.next_out()
                )
            })
            .collect();
        let status = self.status();
        Err(self.fail(format!(
            "{}; ",
            sessions.join("; ")
        ) + &format!(
            "the run did not settle after every fault was healed: journal at {}, accepting={}, switch waiting at {:?}, roles {:?}, {}",
            self.journal.last_seq(),
            self.core.accepting(),
            status.switch_waiting_at,
            status.engines.iter().map(|e| (e.role, e.sent_through, e.answered_through)).collect::<Vec<_>>(),
            engines.join("; ")
        )))
    }

    /// Every counterparty logged on, nothing in flight either way, each side at the other's
    /// numbers, and nothing waiting for the sequencer.
    fn sessions_in_step(&self) -> bool {
        self.pending.is_empty()
            && (0..self.config.sessions).all(|session| {
                let c = &self.counterparties[session];
                c.logged_on
                    && self.wires[session].is_empty()
                    && self
                        .sessions
                        .with(session as u32, |s| {
                            s.state() == crate::fix::session::State::Active
                                && !s.resend_pending()
                                && s.seq_num_next_in() == c.next_out()
                                && s.store().seq_num_next_out() == c.next_in()
                        })
                        .unwrap_or(false)
            })
    }

    /// At rest: every journaled input's execution reports delivered once (except those the core
    /// withheld on a halted symbol, which must never be), and every engine's
    /// book equal to a fresh replay of the journal.
    pub(super) fn check_quiescent(&mut self) -> Result<(), SimFailure> {
        let mut reference = fresh_engine();
        let mut expected: BTreeMap<u32, BTreeSet<(u64, u32)>> = BTreeMap::new();
        // What each execution report must say, by session and ExecID.
        let mut bodies: BTreeMap<(u32, (u64, u32)), counterparty::Body> = BTreeMap::new();
        let mut encoder = crate::fix::codec::Encoder::new("FIX.4.4");
        let mut outputs = Vec::new();
        let mut unanswered: BTreeSet<(u32, String)> = BTreeSet::new();
        let mut transfers = 0;
        for entry in self.journal.entries() {
            let Ok(input) = Input::decode_journaled(&entry.payload) else {
                return Err(self.fail(format!("journal record {} does not decode", entry.seq)));
            };
            // A state transfer's snapshot is beside the journal, named by its record.
            let input = match crate::gateway::core::with_blob(input, |sha256| {
                self.journal.load_blob(sha256)
            }) {
                Ok(input) => input,
                Err(error) => return Err(self.fail(error.to_string())),
            };
            if matches!(input.request, crate::engine::Request::Transfer(_)) {
                transfers += 1;
            }
            if self.withheld.contains(&input.seq) {
                // Its answer is withheld for good, so its counterparty may never see one.
                let id = match &input.request {
                    crate::engine::Request::New(order) => Some(order.cl_ord_id),
                    crate::engine::Request::Cancel(cancel) => Some(cancel.cl_ord_id),
                    crate::engine::Request::Replace(replace) => Some(replace.cl_ord_id),
                    crate::engine::Request::Transfer(_) => None,
                };
                if let Some(id) = id {
                    unanswered.insert((input.session, id.as_str().to_string()));
                }
            }
            outputs.clear();
            reference.apply(&input, &mut outputs);
            for output in &outputs {
                if let Report::Execution(_) = output.report
                    && !self.withheld.contains(&output.input_seq)
                {
                    let key = (output.input_seq, output.index);
                    expected.entry(output.session).or_default().insert(key);
                    encoder.start(crate::fix::tags::msg_type::EXECUTION_REPORT);
                    crate::gateway::translate::write_output(&mut encoder, output);
                    if let Ok(message) = Message::parse(encoder.finish()) {
                        bodies.insert((output.session, key), counterparty::body_fields(&message));
                    }
                }
            }
        }
        for session in 0..self.config.sessions {
            let want = expected.remove(&(session as u32)).unwrap_or_default();
            let got = &self.exec_ids[session];
            if let Some(extra) = got.difference(&want).next() {
                return Err(self.fail(format!(
                    "ExecID {}-{} reached CLIENT{} but a replay of the journal does not produce it there",
                    extra.0,
                    extra.1,
                    session + 1
                )));
            }
            if let Some(missing) = want.difference(got).next() {
                return Err(self.fail(format!(
                    "ExecID {}-{} never reached CLIENT{} ({} of {} delivered)",
                    missing.0,
                    missing.1,
                    session + 1,
                    got.len(),
                    want.len()
                )));
            }
        }
        for session in 0..self.config.sessions {
            let counterparty = &self.counterparties[session];
            if counterparty.exec_ids != self.exec_ids[session] {
                let missing = self.exec_ids[session]
                    .difference(&counterparty.exec_ids)
                    .next();
                return Err(self.fail(format!(
                    "{} did not receive every execution report its session stored (first missing {missing:?})",
                    counterparty.comp_id
                )));
            }
            for (key, body) in &counterparty.reports {
                if bodies.get(&(session as u32, *key)) != Some(body) {
                    return Err(self.fail(format!(
                        "{} received ExecID {}-{} saying other than a replay of the journal does",
                        counterparty.comp_id, key.0, key.1
                    )));
                }
            }
            let withheld = |id: &String| unanswered.contains(&(session as u32, id.clone()));
            if let Some((id, count)) = counterparty
                .acks
                .iter()
                .find(|(id, count)| **count > 1 || (**count == 0 && !withheld(id)))
            {
                return Err(self.fail(format!("order {id} acknowledged {count} times at rest")));
            }
        }
        self.report.transfers = transfers;
        let digest = reference.digest();
        for engine in &self.engines {
            if engine.engine.digest() != digest {
                return Err(self.fail(format!(
                    "{}'s book differs from a replay of the journal",
                    engine.name
                )));
            }
        }
        Ok(())
    }
}
