//! The audit log's writer thread: appends, and the `fdatasync` each one ends with, run on a
//! thread of their own instead of on the async runtime's workers.
//!
//! The workers also run the sessions and the sequencer. An `fdatasync` takes 0.2 ms typically
//! and tens of ms when the disk is busy, and every switch writes two records (the request, then
//! the outcome): done on a worker, each one stalled every session scheduled behind it, which is
//! what made the worst latency around a microsecond barrier milliseconds.
//!
//! Invariant 7 is unchanged: [`AuditWriter::append`] resolves only once the record is durable
//! (or failed), and the control plane awaits it before it lets the action run. Only the wait
//! moved: the plane's task is parked on a oneshot while the write runs, so the worker is free for
//! the sessions. The plane is the only writer and awaits each append before it asks for the next,
//! so records keep the order the plane decided them in.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::audit::{AuditError, AuditLog, AuditRecord};
use crate::constants::AUDIT_WRITES_QUEUE_MAX;
use crate::fix::time::Timestamp;

/// Name of the writer thread, as `top -H` and `perf` show it.
const THREAD_NAME: &str = "audit";

/// One append asked of the thread.
struct Write<E> {
    /// When the action was requested, stamped by the caller.
    time: Timestamp,
    /// Who acted.
    actor: String,
    /// The action.
    event: E,
    /// Where the durable record, or why there is none, goes.
    done: oneshot::Sender<Result<AuditRecord<E>, AuditError>>,
}

/// Test hook: the thread stops before each write until released, so a test can show that no
/// action runs before its record is written.
#[cfg(test)]
pub(crate) struct Hold {
    /// The thread says here that a write is waiting at the gate.
    pub arrived: std::sync::mpsc::Receiver<()>,
    /// One message lets one write through; dropping it lets every write through.
    pub release: std::sync::mpsc::Sender<()>,
}

/// Longest a test's gate holds a write, s: far longer than any test holds it on purpose, so a
/// test that fails with the gate shut (dropping the writer joins its thread) ends instead of
/// hanging.
#[cfg(test)]
const GATE_HOLD_MAX_S: u64 = 60;

/// The thread's side of a [`Hold`].
#[cfg(test)]
struct Gate {
    arrived: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

/// Owns an [`AuditLog`] on a thread of its own; appends go to it and are awaited.
///
/// Dropping the writer stops the thread and waits for it, so the log's file lock is released
/// when the writer is gone (a restarted plane in the same process can open the log again).
pub struct AuditWriter<E> {
    /// Appends to the thread; `None` only while dropping.
    writes: Option<mpsc::Sender<Write<E>>>,
    /// The thread; it hands the log back when the channel closes.
    thread: Option<JoinHandle<AuditLog<E>>>,
    /// The log file, for messages.
    path: PathBuf,
    /// Seq of the last durable record, 0 for an empty log: kept here so reading the head
    /// (status, reports) never waits for the thread.
    head_seq: u64,
    /// Hash of that record, the genesis hash for an empty log.
    head_hash: String,
}

impl<E> AuditWriter<E>
where
    E: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    /// Moves `log` onto a new writer thread. An error means the thread could not be started:
    /// nothing can be audited, so the caller must not start either.
    pub fn start(log: AuditLog<E>) -> Result<AuditWriter<E>, AuditError> {
        Self::spawn(
            log,
            #[cfg(test)]
            None,
        )
    }

    /// As [`AuditWriter::start`], with every write held at a gate the test opens.
    #[cfg(test)]
    pub(crate) fn start_held(log: AuditLog<E>) -> Result<(AuditWriter<E>, Hold), AuditError> {
        let (arrived_tx, arrived) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let gate = Gate {
            arrived: arrived_tx,
            release: release_rx,
        };
        let writer = Self::spawn(log, Some(gate))?;
        Ok((writer, Hold { arrived, release }))
    }

    fn spawn(
        mut log: AuditLog<E>,
        #[cfg(test)] gate: Option<Gate>,
    ) -> Result<AuditWriter<E>, AuditError> {
        let path = log.path().to_path_buf();
        let (seq, hash) = log.head();
        let (head_seq, head_hash) = (seq, hash.to_owned());
        let (writes, mut queue) = mpsc::channel::<Write<E>>(AUDIT_WRITES_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                while let Some(write) = queue.blocking_recv() {
                    #[cfg(test)]
                    if let Some(gate) = &gate {
                        let _ = gate.arrived.send(());
                        // A dropped release opens the gate for good; a test that fails while
                        // holding it still ends, its writer opening after a bound.
                        let _ = gate
                            .release
                            .recv_timeout(std::time::Duration::from_secs(GATE_HOLD_MAX_S));
                    }
                    let Write {
                        time,
                        actor,
                        event,
                        done,
                    } = write;
                    let result = log.append(time, &actor, event);
                    // The plane may have stopped waiting (shutdown); the record is on disk all
                    // the same, which is what the log promises.
                    let _ = done.send(result);
                }
                log
            })
            .map_err(|source| AuditError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(AuditWriter {
            writes: Some(writes),
            thread: Some(thread),
            path,
            head_seq,
            head_hash,
        })
    }

    /// Appends a record and resolves once it is durable (written and synced) with the record,
    /// or with why it is not; the caller acts only on `Ok`. Awaiting parks the caller's task,
    /// not a runtime worker.
    pub async fn append(
        &mut self,
        time: Timestamp,
        actor: &str,
        event: E,
    ) -> Result<AuditRecord<E>, AuditError> {
        let stopped = || AuditError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("the audit writer thread stopped"),
        };
        let Some(writes) = self.writes.as_ref() else {
            return Err(stopped());
        };
        let (done, result) = oneshot::channel();
        let write = Write {
            time,
            actor: actor.to_owned(),
            event,
            done,
        };
        if writes.send(write).await.is_err() {
            return Err(stopped());
        }
        let record = result.await.map_err(|_| stopped())??;
        self.head_seq = record.seq;
        self.head_hash.clone_from(&record.hash);
        Ok(record)
    }

    /// (last seq, last hash) of what is durable, as [`AuditLog::head`].
    pub fn head(&self) -> (u64, &str) {
        (self.head_seq, &self.head_hash)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the thread and takes the log back.
    #[cfg(test)]
    pub(crate) fn stop(mut self) -> Option<AuditLog<E>> {
        self.writes = None;
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl<E> Drop for AuditWriter<E> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the write in hand, if any; joining it
        // releases the log's lock before the writer is gone.
        self.writes = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the audit writer thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_resolves_after_the_record_is_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::<String>::open(&path).expect("open");
        let (mut writer, hold) = AuditWriter::start_held(log).expect("start");
        let pending = tokio::spawn(async move {
            let record = writer
                .append(Timestamp(1), "alice", "switch".to_owned())
                .await;
            (writer, record)
        });
        // Polled, not blocked on: the append's task runs on this test's one thread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while hold.arrived.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the write never reached the thread"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Held at the gate: the append has not resolved and the file is empty.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!pending.is_finished());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        hold.release.send(()).expect("release");
        let (writer, record) = pending.await.expect("task");
        let record = record.expect("appended");
        assert_eq!(record.seq, 1);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"alice\""), "{text}");
        assert_eq!(writer.head(), (1, record.hash.as_str()));
    }

    #[tokio::test]
    async fn dropping_the_writer_releases_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::<String>::open(&path).expect("open");
        let mut writer = AuditWriter::start(log).expect("start");
        writer
            .append(Timestamp(1), "alice", "one".to_owned())
            .await
            .expect("appended");
        drop(writer);
        let (_, records) = AuditLog::<String>::open(&path).expect("reopened after the drop");
        assert_eq!(records.len(), 1);
    }

    #[tokio::test]
    async fn a_failed_append_is_an_error_for_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let (log, _) = AuditLog::<String>::open(&path).expect("open");
        let mut writer = AuditWriter::start(log).expect("start");
        let refused = writer
            .append(Timestamp(1), "al\"ice", "one".to_owned())
            .await;
        assert!(matches!(refused, Err(AuditError::BadActor { .. })));
        assert_eq!(writer.head().0, 0);
        let log = writer.stop().expect("the log back");
        assert_eq!(log.head().0, 0);
    }
}
