//! The audit log: an append-only, hash-chained file of every control action, written and made
//! durable before the action takes effect (DESIGN.md invariant 7).
//!
//! # Format
//!
//! One record per line, each line one JSON object with its fields in this order and no
//! whitespace outside strings:
//!
//! ```text
//! {"seq":1,"time":1700000000000000000,"actor":"alice","event":{...},"prev":"000…0","hash":"9f…"}
//! ```
//!
//! `seq` counts 1, 2, 3… with no gaps; `time` is nanoseconds since the Unix epoch, passed in by
//! the caller (nothing here reads a clock); `actor` is who acted; `event` is the action as the
//! caller's event type serializes it (compact JSON); `prev` is the `hash` of the previous record
//! (64 zeros for the first); `hash` is the lowercase hex SHA-256 of the line's exact bytes up to,
//! not including, `,"hash":` — that is, `{"seq":…,"prev":"…"`.
//!
//! Hashing the bytes as written, rather than a re-serialization, keeps verification independent
//! of the event type (a tool that knows nothing of the gateway's events can check the chain) and
//! of serializer details such as map key order. What makes the bytes canonical instead is a strict
//! reader: the envelope must match byte for byte the form [`AuditLog::append`] writes (the actor
//! may not contain a quote, backslash or control character, so it needs no escaping), `prev` and
//! `hash` are exactly 64 lowercase hex digits, numbers have no leading zeros, and the event must be
//! valid JSON with no whitespace outside strings. A line that means the same but has an extra
//! space is rejected even if its hash was recomputed. Other re-spellings of the same JSON (an
//! escaped `\u0041` for `A`, `1.0` for `1`) are not normalized away: every byte is hashed, so
//! such an edit breaks the chain unless every later hash is recomputed too, which is what the
//! head anchored elsewhere is for.
//!
//! # What it proves
//!
//! Tamper-evidence, not tamper-proofing. Changing, removing, inserting or reordering any complete
//! record breaks the chain at that record, and [`verify`] names the first bad line. But anyone
//! who can write the file can also rewrite the whole chain from the change onwards, or cut
//! records off its end; only a head hash kept somewhere else (a ticket, a second system, a
//! printout) catches that. `baton audit verify` prints the head for exactly this purpose.
//!
//! # Crashes
//!
//! [`AuditLog::append`] writes a whole line and fsyncs before it returns, so a record the caller
//! acted on is on disk. A crash during an append can leave a torn last line (no trailing newline):
//! that record was never acknowledged, so [`AuditLog::open`] cuts it off (with a warning) and
//! [`verify`] reports its size without touching the file. A complete line that fails any check is
//! never cut: it is damage or tampering, and [`AuditLog::open`] refuses the file, because a
//! stopped control plane is better than a silently broken trail.
//!
//! A last line without its newline is only a torn write if it is not a whole record: an append
//! writes the newline with the record, so a whole record missing only its newline was torn after
//! its last byte and is completed (its hash verifies), while a whole record that fails its checks
//! is an edit that also removed the newline to pass as torn, and is refused like any bad line.
//! Bytes [`AuditLog::open`] cuts are kept beside the log and reported ([`AuditLog::take_cut`]),
//! so the caller records the cut in the log itself. Refused bad bytes leave the log only through
//! [`acknowledge`], which an operator runs and the caller audits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::constants::{AUDIT_ACTOR_LEN_MAX, AUDIT_LINE_BYTES_MAX};
use crate::fix::time::Timestamp;

/// Name of the audit log inside the gateway's journal directory: it lives next to the input
/// journal, so one directory holds everything that must survive the gateway.
pub const AUDIT_FILE_NAME: &str = "audit.log";

/// The `prev` of the first record (there is nothing before it to hash), and the head of an
/// empty log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex digits of a SHA-256 hash.
const HASH_HEX_LEN: usize = 64;

/// Where the gateway keeps its audit log, given `[gateway] journal_dir`. One function, so the
/// gateway and `baton audit` never disagree about the file.
pub fn default_path(journal_dir: &Path) -> PathBuf {
    journal_dir.join(AUDIT_FILE_NAME)
}

/// One record of the log, as the caller's event type `E`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord<E> {
    /// Position in the log: 1 for the first record, then one more per record, no gaps, so a
    /// removed record shows as a gap.
    pub seq: u64,
    /// When the action was requested, as the caller stamped it.
    pub time: Timestamp,
    /// Who acted: an operator name or a component ("gate", "failover").
    pub actor: String,
    /// The action itself.
    pub event: E,
    /// Hash of the previous record ([`GENESIS_HASH`] for seq 1): the link that makes the chain.
    pub prev: String,
    /// Lowercase hex SHA-256 of this record's line up to `,"hash":`; see the module docs.
    pub hash: String,
}

/// One verified record read by a tool that does not know the event type (`baton audit show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAuditRecord {
    /// As in [`AuditRecord::seq`].
    pub seq: u64,
    /// As in [`AuditRecord::time`].
    pub time: Timestamp,
    /// As in [`AuditRecord::actor`].
    pub actor: String,
    /// The event's JSON exactly as written (compact), so a tool shows what was hashed.
    pub event_json: String,
    /// As in [`AuditRecord::prev`].
    pub prev: String,
    /// As in [`AuditRecord::hash`].
    pub hash: String,
}

impl RawAuditRecord {
    /// The record's line exactly as it is in the file, without the newline: verified lines are
    /// canonical, so encoding again gives the same bytes.
    pub fn line(&self) -> String {
        let (mut line, _) = encode_line(
            self.seq,
            self.time,
            &self.actor,
            self.event_json.as_bytes(),
            &self.prev,
        );
        line.pop(); // the newline
        // Built from a verified record's text fields, so it is UTF-8.
        String::from_utf8_lossy(&line).into_owned()
    }

    /// One human line: seq, time in RFC 3339 UTC, actor and the event as compact JSON.
    pub fn render(&self) -> String {
        format!(
            "{:>6}  {}  {}  {}",
            self.seq,
            rfc3339(self.time),
            self.actor,
            self.event_json
        )
    }
}

/// What [`verify`] found in a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records that verified, from the start of the file up to the first bad one.
    pub records: u64,
    /// Seq of the last verified record; 0 for an empty log.
    pub head_seq: u64,
    /// Hash of the last verified record (64 zeros for an empty log): what to anchor elsewhere.
    pub head_hash: String,
    /// Bytes after the last complete line: an append a crash interrupted, never acknowledged.
    /// `AuditLog::open` cuts them. Only counted when no record is bad.
    pub torn_tail_bytes: u64,
    /// The last record is whole and verifies but its newline is missing: torn after its last
    /// byte. Counted among `records`; `AuditLog::open` completes it.
    pub newline_missing: bool,
    /// The first record that failed verification; `None` when the whole chain verifies.
    pub first_bad: Option<BadRecord>,
}

impl VerifyReport {
    /// The report as `key value` lines, in the style of the other `baton` commands.
    pub fn render(&self) -> String {
        let mut out = format!(
            "records {}\nhead_seq {}\nhead_hash {}\ntorn_tail_bytes {}\n",
            self.records, self.head_seq, self.head_hash, self.torn_tail_bytes
        );
        if self.newline_missing {
            out.push_str("newline_missing true\n");
        }
        if let Some(bad) = &self.first_bad {
            out.push_str(&format!("first_bad {bad}\n"));
        }
        out
    }
}

/// The first line of a file that is not a valid next record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// 1-based line number in the file, so an operator can look at it with any editor.
    pub line: u64,
    /// The seq the line claims, when it can be read at all.
    pub seq: Option<u64>,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why the audit log could not be opened, read or appended to. Every one of them means the
/// control action in hand must not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file or its directory could not be read, written or synced. After a failed append the
    /// log refuses further appends with this error until it is reopened, because the file may
    /// hold part of a line.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Another process has the log open for appending; two writers would fork the chain.
    #[error("audit log {} is in use by another process", path.display())]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// A complete line fails verification: damage or tampering. Not repaired automatically.
    #[error("audit log is corrupt at line {line}{}: {reason} (damage or tampering: `baton audit verify` shows it; `baton audit acknowledge` moves it aside under an operator's name)", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
    Corrupt {
        /// 1-based line number.
        line: u64,
        /// The seq the line claims, when readable.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
    /// The actor name could break the line's structure or is unreadable; refused so nobody can
    /// forge records through it.
    #[error("audit actor {actor:?} refused: {reason}")]
    BadActor {
        /// The name as given.
        actor: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The record would be longer than a reader accepts (`AUDIT_LINE_BYTES_MAX`).
    #[error("audit record of {bytes} bytes is over the {max} byte limit")]
    TooLarge {
        /// The encoded line's length, newline included.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// [`acknowledge`] found nothing to acknowledge: every complete line verifies.
    #[error("audit log {} verifies: there is no tampering to acknowledge", path.display())]
    Intact {
        /// The log file.
        path: PathBuf,
    },
    /// The event could not be serialized as JSON (e.g. a map with non-string keys).
    #[error("audit event does not encode as JSON: {source}")]
    Encode {
        /// What serde_json said.
        source: serde_json::Error,
    },
}

/// The writer of an audit log. It holds an exclusive lock on the file while open, so one process
/// appends at a time.
pub struct AuditLog<E> {
    /// The log file, for error messages and [`AuditLog::path`].
    path: PathBuf,
    /// Opened for reading and appending, locked; every write goes to the end.
    file: File,
    /// Seq of the last record on disk; 0 when the log is empty.
    head_seq: u64,
    /// Hash of the last record on disk, [`GENESIS_HASH`] when empty: the next record's `prev`.
    head_hash: String,
    /// Set when an append failed after it may have written bytes: the file may end in a partial
    /// line that the next append would bury mid-file, so appends are refused until reopened.
    failed: bool,
    /// Bytes [`AuditLog::open`] cut off the end, until the caller takes them to record the cut.
    cut: Option<MovedAside>,
    /// The event type this log's records carry.
    _event: PhantomData<fn(E) -> E>,
}

impl<E: Serialize + DeserializeOwned + Clone> AuditLog<E> {
    /// Opens the log at `path`, creating it (and its directory) when missing, verifies the whole
    /// chain, cuts a torn tail, and returns every record so the caller can rebuild its state
    /// from them. A bad complete line is [`AuditError::Corrupt`]: the caller must not start.
    pub fn open(path: &Path) -> Result<(AuditLog<E>, Vec<AuditRecord<E>>), AuditError> {
        let io_err = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = parent_dir(path);
        create_dirs(dir)?;
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        let file = match options.clone().create_new(true).open(path) {
            Ok(file) => {
                // The new directory entry must survive a power loss, or the first records
                // could vanish with it.
                sync_dir(dir)?;
                file
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                options.open(path).map_err(io_err)?
            }
            Err(error) => return Err(io_err(error)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_err(source)),
        }

        let mut records = Vec::new();
        let scan = scan(BufReader::new(&file), |_line, raw| {
            let event = serde_json::from_str::<E>(raw.event).map_err(|error| {
                format!("the record verifies but its event does not decode: {error}")
            })?;
            records.push(AuditRecord {
                seq: raw.seq,
                time: raw.time,
                actor: raw.actor.to_string(),
                event,
                prev: raw.prev.to_string(),
                hash: raw.hash.to_string(),
            });
            Ok(())
        })
        .map_err(io_err)?;
        if let Some(bad) = scan.report.first_bad {
            return Err(AuditError::Corrupt {
                line: bad.line,
                seq: bad.seq,
                reason: bad.reason,
            });
        }
        let mut cut = None;
        if scan.report.newline_missing {
            tracing::warn!(
                path = %path.display(),
                head_seq = scan.report.head_seq,
                "the last audit record is whole and verifies but lacks its newline (a write torn after its last byte); completing it"
            );
            (&file).write_all(b"\n").map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        } else if scan.report.torn_tail_bytes > 0 {
            // The cut bytes are evidence (a crash's half-written record, or someone's edit): keep
            // them beside the log before they leave it.
            let moved = move_aside(&file, path, scan.good_bytes, scan.report.head_seq, "torn")?;
            tracing::error!(
                path = %path.display(),
                torn_tail_bytes = moved.bytes,
                head_seq = moved.after_seq,
                kept = %moved.kept.display(),
                sha256 = %moved.sha256,
                "cut an incomplete last audit record (an append interrupted by a crash, never acknowledged, or an edit); the bytes are kept beside the log"
            );
            cut = Some(moved);
        }
        let log = AuditLog {
            path: path.to_path_buf(),
            file,
            head_seq: scan.report.head_seq,
            head_hash: scan.report.head_hash,
            failed: false,
            cut,
            _event: PhantomData,
        };
        Ok((log, records))
    }

    /// Appends a record and makes it durable (write, then fsync) before returning `Ok`; the
    /// caller acts only after `Ok`. On any error nothing may be acted on.
    pub fn append(
        &mut self,
        time: Timestamp,
        actor: &str,
        event: E,
    ) -> Result<AuditRecord<E>, AuditError> {
        if self.failed {
            return Err(AuditError::Io {
                path: self.path.clone(),
                source: io::Error::other(
                    "an earlier append failed and may have left part of a line; reopen the log",
                ),
            });
        }
        check_actor(actor).map_err(|reason| AuditError::BadActor {
            actor: actor.to_string(),
            reason,
        })?;
        let event_json =
            serde_json::to_vec(&event).map_err(|source| AuditError::Encode { source })?;
        let seq = self.head_seq + 1;
        let (line, hash) = encode_line(seq, time, actor, &event_json, &self.head_hash);
        if line.len() > AUDIT_LINE_BYTES_MAX {
            return Err(AuditError::TooLarge {
                bytes: line.len(),
                max: AUDIT_LINE_BYTES_MAX,
            });
        }
        // One write of the whole line, so a crash leaves at most one partial line at the end.
        if let Err(source) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            self.failed = true;
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        let prev = std::mem::replace(&mut self.head_hash, hash.clone());
        self.head_seq = seq;
        Ok(AuditRecord {
            seq,
            time,
            actor: actor.to_string(),
            event,
            prev,
            hash,
        })
    }

    /// The bytes [`AuditLog::open`] cut off a torn tail, once: the caller records the cut as an
    /// event of its own, so the trail says what left it.
    pub fn take_cut(&mut self) -> Option<MovedAside> {
        self.cut.take()
    }

    /// (last seq, last hash): the head an operator can anchor elsewhere. (0, 64 zeros) when empty.
    pub fn head(&self) -> (u64, &str) {
        (self.head_seq, &self.head_hash)
    }

    /// The log file, for messages and for `baton audit`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Bytes moved out of the log into a file beside it: a torn tail [`AuditLog::open`] cut, or a
/// bad tail an operator acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedAside {
    /// How many bytes left the log.
    pub bytes: u64,
    /// The file that holds them now.
    pub kept: PathBuf,
    /// Their SHA-256, so the record that names the file also pins its content.
    pub sha256: String,
    /// The last record still in the log.
    pub after_seq: u64,
}

/// Copies everything from `from` to the end of `file` into a new file beside `log`
/// (`.{what}-after-N`), durably, then cuts the log there.
fn move_aside(
    file: &File,
    log: &Path,
    from: u64,
    after_seq: u64,
    what: &str,
) -> Result<MovedAside, AuditError> {
    let io_err = |source| AuditError::Io {
        path: log.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    let mut reader = file;
    reader.seek(SeekFrom::Start(from)).map_err(io_err)?;
    reader.read_to_end(&mut bytes).map_err(io_err)?;
    let kept = aside_path(log, after_seq, what);
    std::fs::write(&kept, &bytes)
        .and_then(|()| File::open(&kept)?.sync_all())
        .map_err(|source| AuditError::Io {
            path: kept.clone(),
            source,
        })?;
    file.set_len(from).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    sync_dir(parent_dir(log))?;
    Ok(MovedAside {
        bytes: bytes.len() as u64,
        kept,
        sha256: sha256_hex(&bytes),
        after_seq,
    })
}

/// An operator's answer to a log that [`AuditLog::open`] refuses: the first bad line and
/// everything after it move into a file beside the log (`.tampered-after-N`), named and hashed in
/// what this returns, and the log is opened again, ending at its last good record. The caller
/// must append a record naming what moved, who and why, before anything else. Refuses a log
/// with nothing bad in it, and one another process has open.
pub fn acknowledge<E: Serialize + DeserializeOwned + Clone>(
    path: &Path,
) -> Result<Acknowledged<E>, AuditError> {
    let io_err = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(AuditError::Locked {
                path: path.to_path_buf(),
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_err(source)),
    }
    let scan = scan(BufReader::new(&file), |_, _| Ok(())).map_err(io_err)?;
    let Some(bad) = scan.report.first_bad else {
        return Err(AuditError::Intact {
            path: path.to_path_buf(),
        });
    };
    let moved = move_aside(
        &file,
        path,
        scan.good_bytes,
        scan.report.head_seq,
        "tampered",
    )?;
    drop(file);
    let (log, records) = AuditLog::open(path)?;
    Ok(Acknowledged {
        log,
        records,
        moved,
        first_bad: bad,
    })
}

/// What [`acknowledge`] left: the log open again at its last good record, and what moved.
pub struct Acknowledged<E> {
    /// The log, open and locked, for the acknowledgement record.
    pub log: AuditLog<E>,
    /// The records that verified.
    pub records: Vec<AuditRecord<E>>,
    /// The bytes that left the log and where they are.
    pub moved: MovedAside,
    /// What verification found at the first bad line.
    pub first_bad: BadRecord,
}

/// Where `open` keeps the bytes it cut after record `head_seq`: beside the log, named after it,
/// never over an earlier cut (`.torn-after-N`, then `.torn-after-N.2`, ...).
pub fn torn_path(log: &Path, head_seq: u64) -> PathBuf {
    aside_path(log, head_seq, "torn")
}

/// `.{what}-after-N` beside `log`, never over an earlier one.
fn aside_path(log: &Path, head_seq: u64, what: &str) -> PathBuf {
    let name = |n: u32| {
        let mut name = log.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{what}-after-{head_seq}"));
        if n > 1 {
            name.push(format!(".{n}"));
        }
        log.with_file_name(name)
    };
    (1..u32::MAX)
        .map(name)
        .find(|candidate| !candidate.exists())
        .unwrap_or_else(|| name(u32::MAX))
}

/// Checks a file without modifying it (no lock, no cut): how many records verify, the head, the
/// torn tail, and the first bad record if any. Safe to run on a log a gateway is appending to;
/// a line being written shows as a torn tail.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    read(path).map(|(_, report)| report)
}

/// Reads a file without modifying it, like [`verify`], and returns the records that verified
/// (everything before the first bad one) with their events as JSON text, for tools that do not
/// know the event type.
pub fn read(path: &Path) -> Result<(Vec<RawAuditRecord>, VerifyReport), AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    let scan = scan(BufReader::new(file), |_, raw| {
        records.push(RawAuditRecord {
            seq: raw.seq,
            time: raw.time,
            actor: raw.actor.to_string(),
            event_json: raw.event.to_string(),
            prev: raw.prev.to_string(),
            hash: raw.hash.to_string(),
        });
        Ok(())
    })
    .map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((records, scan.report))
}

/// Refuses actor names that could forge structure or mislead a reader: they are written into the
/// line unescaped, so quotes, backslashes and control characters are out; the length keeps a line
/// readable and bounded.
fn check_actor(actor: &str) -> Result<(), &'static str> {
    if actor.is_empty() {
        return Err("empty");
    }
    if actor.len() > AUDIT_ACTOR_LEN_MAX {
        return Err("longer than 64 characters");
    }
    if !actor
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err("only printable ASCII without quotes or backslashes is allowed");
    }
    Ok(())
}

/// Encodes one record as its line (newline included) and returns it with its hash. The one place
/// the format is written; the reader in [`parse_line`] accepts exactly what this produces.
fn encode_line(
    seq: u64,
    time: Timestamp,
    actor: &str,
    event_json: &[u8],
    prev: &str,
) -> (Vec<u8>, String) {
    let mut line = Vec::with_capacity(event_json.len() + 256);
    line.extend_from_slice(format!(r#"{{"seq":{seq},"time":{},"actor":""#, time.0).as_bytes());
    line.extend_from_slice(actor.as_bytes());
    line.extend_from_slice(br#"","event":"#);
    line.extend_from_slice(event_json);
    line.extend_from_slice(br#","prev":""#);
    line.extend_from_slice(prev.as_bytes());
    line.push(b'"');
    let hash = sha256_hex(&line);
    line.extend_from_slice(br#","hash":""#);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

/// Lowercase hex SHA-256.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(HASH_HEX_LEN);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// A line taken apart by [`parse_line`], borrowing from it.
struct RawLine<'a> {
    seq: u64,
    time: Timestamp,
    actor: &'a str,
    /// The event's JSON text, checked to be compact, valid JSON.
    event: &'a str,
    prev: &'a str,
    hash: &'a str,
}

/// What [`scan`] found.
struct Scan {
    /// The report [`verify`] returns.
    report: VerifyReport,
    /// Bytes of the file up to the end of the last verified line: where [`AuditLog::open`] cuts.
    good_bytes: u64,
}

/// Reads the log line by line, verifying each complete line as the next record of the chain and
/// handing it to `on_record` (which may reject it too); stops at the first bad line. Errors are
/// only I/O errors; everything wrong with the content ends up in `first_bad`.
fn scan<R: BufRead>(
    mut reader: R,
    mut on_record: impl FnMut(u64, &RawLine<'_>) -> Result<(), String>,
) -> io::Result<Scan> {
    let mut report = VerifyReport {
        records: 0,
        head_seq: 0,
        head_hash: GENESIS_HASH.to_string(),
        torn_tail_bytes: 0,
        newline_missing: false,
        first_bad: None,
    };
    let mut good_bytes = 0u64;
    let mut buf = Vec::new();
    let mut line_number = 0u64;
    loop {
        let kind = next_line(&mut reader, &mut buf)?;
        line_number += 1;
        let bad = |reason: String, buf: &[u8]| BadRecord {
            line: line_number,
            seq: seq_hint(buf),
            reason,
        };
        match kind {
            LineKind::End => break,
            // A whole record without its newline is judged like any line: completed if it
            // verifies, refused if not. Only a part of a record is a torn append.
            LineKind::Torn if is_whole_record(&buf) => {}
            LineKind::Torn => {
                report.torn_tail_bytes = buf.len() as u64;
                break;
            }
            LineKind::TooLong => {
                report.first_bad = Some(bad(
                    format!("longer than the {AUDIT_LINE_BYTES_MAX} byte limit"),
                    &buf,
                ));
                break;
            }
            LineKind::Complete => {}
        }
        let newline_missing = buf.last() != Some(&b'\n');
        let text = if newline_missing {
            &buf[..]
        } else {
            &buf[..buf.len() - 1]
        };
        let unterminated = |reason: String| {
            if newline_missing {
                format!(
                    "{reason}; the record is whole but has no newline: an edit made to pass as a torn write, not a torn write"
                )
            } else {
                reason
            }
        };
        let raw = match parse_line(text) {
            Ok(raw) => raw,
            Err(reason) => {
                report.first_bad = Some(bad(unterminated(reason), text));
                break;
            }
        };
        let expected_seq = report.head_seq + 1;
        let problem = if raw.seq != expected_seq {
            Some(format!(
                "seq {} where {expected_seq} was expected: a record is missing, repeated or out of order",
                raw.seq
            ))
        } else if raw.prev != report.head_hash {
            Some(format!(
                "prev does not match the hash of the record before it (seq {})",
                report.head_seq
            ))
        } else {
            on_record(line_number, &raw).err()
        };
        if let Some(reason) = problem {
            report.first_bad = Some(BadRecord {
                line: line_number,
                seq: Some(raw.seq),
                reason: unterminated(reason),
            });
            break;
        }
        report.records += 1;
        report.head_seq = raw.seq;
        report.head_hash = raw.hash.to_string();
        good_bytes += buf.len() as u64;
        if newline_missing {
            report.newline_missing = true;
            break;
        }
    }
    Ok(Scan { report, good_bytes })
}

/// Whether `bytes` (a last line without its newline) end the way every record ends,
/// `,"prev":"<64 hex>","hash":"<64 hex>"}`: then they are a whole record, not part of one, since
/// an append writes the record and its newline at once and a torn write keeps a prefix.
fn is_whole_record(bytes: &[u8]) -> bool {
    const PREV_KEY: &[u8] = br#","prev":""#;
    const HASH_KEY: &[u8] = br#"","hash":""#;
    const END: &[u8] = br#""}"#;
    let tail_len = PREV_KEY.len() + HASH_HEX_LEN + HASH_KEY.len() + HASH_HEX_LEN + END.len();
    let Some(tail) = bytes.len().checked_sub(tail_len).map(|at| &bytes[at..]) else {
        return false;
    };
    let hex = |b: &[u8]| b.iter().all(|c| c.is_ascii_hexdigit());
    let (prev_key, rest) = tail.split_at(PREV_KEY.len());
    let (prev, rest) = rest.split_at(HASH_HEX_LEN);
    let (hash_key, rest) = rest.split_at(HASH_KEY.len());
    let (hash, end) = rest.split_at(HASH_HEX_LEN);
    bytes.starts_with(br#"{"seq":"#)
        && prev_key == PREV_KEY
        && hex(prev)
        && hash_key == HASH_KEY
        && hex(hash)
        && end == END
}

/// How [`next_line`] ended.
enum LineKind {
    /// A line with its newline.
    Complete,
    /// Bytes at the end of the file without a newline.
    Torn,
    /// More than [`AUDIT_LINE_BYTES_MAX`] bytes without a newline, or a complete line longer than
    /// that. Never a torn append either, since no append writes that much.
    TooLong,
    /// End of file at a line boundary.
    End,
}

/// Reads the next line (newline included) into `buf`, holding at most about
/// [`AUDIT_LINE_BYTES_MAX`] bytes plus one read buffer, whatever the file holds.
fn next_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<LineKind> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineKind::End
            } else {
                LineKind::Torn
            });
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                buf.extend_from_slice(&available[..=end]);
                reader.consume(end + 1);
                return Ok(if buf.len() > AUDIT_LINE_BYTES_MAX {
                    LineKind::TooLong
                } else {
                    LineKind::Complete
                });
            }
            None => {
                let taken = available.len();
                buf.extend_from_slice(available);
                reader.consume(taken);
                if buf.len() > AUDIT_LINE_BYTES_MAX {
                    return Ok(LineKind::TooLong);
                }
            }
        }
    }
}

/// Takes a line (without its newline) apart, accepting exactly the form [`encode_line`] writes,
/// and checks its hash. The checks that need the record before it are the caller's.
fn parse_line(line: &[u8]) -> Result<RawLine<'_>, String> {
    let not_canonical = |what: &str| format!("not in the canonical record form: {what}");
    // The tail has a fixed length: `,"prev":"<64 hex>","hash":"<64 hex>"}`.
    const PREV_KEY: &[u8] = br#","prev":""#;
    const HASH_KEY: &[u8] = br#"","hash":""#;
    const END: &[u8] = br#""}"#;
    let tail_len = PREV_KEY.len() + HASH_HEX_LEN + HASH_KEY.len() + HASH_HEX_LEN + END.len();
    let mut rest = line;
    let seq = take_number(&mut rest, br#"{"seq":"#).ok_or_else(|| not_canonical("seq"))?;
    let time = take_number(&mut rest, br#","time":"#).ok_or_else(|| not_canonical("time"))?;
    rest = rest
        .strip_prefix(br#","actor":""#.as_slice())
        .ok_or_else(|| not_canonical("actor"))?;
    let actor_end = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or_else(|| not_canonical("actor"))?;
    let actor = std::str::from_utf8(&rest[..actor_end]).map_err(|_| not_canonical("actor"))?;
    check_actor(actor).map_err(|reason| format!("bad actor: {reason}"))?;
    rest = rest[actor_end..]
        .strip_prefix(br#"","event":"#.as_slice())
        .ok_or_else(|| not_canonical("event"))?;
    if rest.len() < tail_len {
        return Err(not_canonical("prev and hash"));
    }
    let (event, tail) = rest.split_at(rest.len() - tail_len);
    let tail = tail
        .strip_prefix(PREV_KEY)
        .ok_or_else(|| not_canonical("prev"))?;
    let (prev, tail) = tail.split_at(HASH_HEX_LEN);
    let tail = tail
        .strip_prefix(HASH_KEY)
        .ok_or_else(|| not_canonical("hash"))?;
    let (hash, tail) = tail.split_at(HASH_HEX_LEN);
    if tail != END {
        return Err(not_canonical("end of record"));
    }
    let prev = lower_hex(prev).ok_or_else(|| not_canonical("prev is not 64 lowercase hex"))?;
    let hash = lower_hex(hash).ok_or_else(|| not_canonical("hash is not 64 lowercase hex"))?;
    let hashed = &line[..line.len() - (HASH_KEY.len() - 1) - HASH_HEX_LEN - END.len()];
    if sha256_hex(hashed) != hash {
        return Err("hash does not match the record's contents".to_string());
    }
    // Only now is the event looked at: the hash matched, so this is damage only if the writer
    // itself was bypassed.
    let event = std::str::from_utf8(event).map_err(|_| "the event is not UTF-8".to_string())?;
    serde_json::from_str::<serde::de::IgnoredAny>(event)
        .map_err(|error| format!("the event is not valid JSON: {error}"))?;
    if !is_compact_json(event.as_bytes()) {
        return Err(not_canonical("whitespace in the event"));
    }
    Ok(RawLine {
        seq,
        time: Timestamp(time),
        actor,
        event,
        prev,
        hash,
    })
}

/// Strips `key` and a canonical decimal u64 (no sign, no leading zero) from the front of `rest`.
fn take_number(rest: &mut &[u8], key: &[u8]) -> Option<u64> {
    let after = rest.strip_prefix(key)?;
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = std::str::from_utf8(&after[..digits]).ok()?;
    if digits == 0 || (digits > 1 && text.starts_with('0')) {
        return None;
    }
    let value = text.parse().ok()?;
    *rest = &after[digits..];
    Some(value)
}

/// `bytes` as a str when it is exactly 64 lowercase hex digits.
fn lower_hex(bytes: &[u8]) -> Option<&str> {
    let ok = bytes.len() == HASH_HEX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    ok.then(|| std::str::from_utf8(bytes).ok()).flatten()
}

/// Whether valid JSON `json` has no whitespace outside strings, as serde_json's compact writer
/// produces it.
fn is_compact_json(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return false;
        }
    }
    true
}

/// The seq a damaged line claims, if its start is readable; for error messages only.
fn seq_hint(line: &[u8]) -> Option<u64> {
    let mut rest = line;
    take_number(&mut rest, br#"{"seq":"#)
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `dir` and any missing ancestors, each made durable in its parent, so a power loss
/// right after the first append cannot take the new directory (and the log in it) away.
fn create_dirs(dir: &Path) -> Result<(), AuditError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if parent != dir {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Another process made it meanwhile; whoever created it synced it.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(AuditError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Makes a created directory entry survive a power loss.
fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| AuditError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// `time` as RFC 3339 UTC with nanoseconds, for people reading the log.
fn rfc3339(time: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time.0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{}ns", time.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A stand-in for the gateway's control events: variants with strings, numbers and a map,
    /// so escaping and nesting are exercised.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    enum Event {
        Switch { from: String, to: String },
        Note(String),
        Approve { change: u64, approved: bool },
        Labels(BTreeMap<String, String>),
    }

    fn event(seq: u64) -> Event {
        match seq % 3 {
            0 => Event::Switch {
                from: "blue".into(),
                to: format!("green \"v{seq}\"\n"),
            },
            1 => Event::Note(format!("note {seq} ✓")),
            _ => Event::Approve {
                change: seq,
                approved: seq.is_multiple_of(2),
            },
        }
    }

    fn time(seq: u64) -> Timestamp {
        Timestamp(1_795_437_296_789_000_000 + seq)
    }

    /// A log of `count` records in a fresh directory.
    fn write_log(count: u64) -> (tempfile::TempDir, PathBuf, Vec<AuditRecord<Event>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(AUDIT_FILE_NAME);
        let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert!(records.is_empty());
        let written = (1..=count)
            .map(|seq| log.append(time(seq), "alice", event(seq)).unwrap())
            .collect();
        (dir, path, written)
    }

    fn lines(path: &Path) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(path).unwrap();
        bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn corrupt_at(path: &Path) -> (u64, Option<u64>) {
        match AuditLog::<Event>::open(path) {
            Err(AuditError::Corrupt { line, seq, .. }) => (line, seq),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("expected Corrupt, the log opened"),
        }
    }

    #[test]
    fn round_trip_and_head_continue_across_reopen() {
        let (_dir, path, written) = write_log(5);
        let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records, written);
        assert_eq!(log.head(), (5, written[4].hash.as_str()));
        assert_eq!(records[0].prev, GENESIS_HASH);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash);
        }
        let sixth = log.append(time(6), "bob", event(6)).unwrap();
        assert_eq!(sixth.seq, 6);
        assert_eq!(sixth.prev, written[4].hash);
        assert_eq!(log.head(), (6, sixth.hash.as_str()));
        drop(log);
        let report = verify(&path).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                records: 6,
                head_seq: 6,
                head_hash: sixth.hash.clone(),
                torn_tail_bytes: 0,
                newline_missing: false,
                first_bad: None,
            }
        );
        let (raw, _) = read(&path).unwrap();
        let file_lines = lines(&path);
        for (record, line) in raw.iter().zip(&file_lines) {
            assert_eq!(format!("{}\n", record.line()).as_bytes(), line.as_slice());
        }
    }

    #[test]
    fn the_line_format_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE_NAME);
        let (mut log, _) = AuditLog::<serde_json::Value>::open(&path).unwrap();
        let record = log
            .append(
                Timestamp(7),
                "ops",
                serde_json::json!({"b": 1, "a": [true]}),
            )
            .unwrap();
        let prefix = format!(
            r#"{{"seq":1,"time":7,"actor":"ops","event":{{"a":[true],"b":1}},"prev":"{GENESIS_HASH}""#
        );
        assert_eq!(record.hash, sha256_hex(prefix.as_bytes()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{prefix},\"hash\":\"{}\"}}\n", record.hash));
        // The whole line is ordinary JSON that standard tools can read, and it deserializes as
        // the record.
        let parsed: AuditRecord<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, record);
    }

    #[test]
    fn empty_log_has_genesis_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE_NAME);
        let (log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert!(records.is_empty());
        assert_eq!(log.head(), (0, GENESIS_HASH));
        assert_eq!(log.path(), path);
        let report = verify(&path).unwrap();
        assert_eq!((report.records, report.head_seq), (0, 0));
        assert_eq!(report.first_bad, None);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let (_dir, path, _) = write_log(1);
        let (_log, _) = AuditLog::<Event>::open(&path).unwrap();
        assert!(matches!(
            AuditLog::<Event>::open(&path),
            Err(AuditError::Locked { .. })
        ));
        // Readers need no lock.
        assert_eq!(verify(&path).unwrap().records, 1);
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let (_dir, path, _) = write_log(5);
        let original = std::fs::read(&path).unwrap();
        let good = verify(&path).unwrap();
        let mut checked = 0;
        for index in 0..original.len() {
            let mut replacements: Vec<u8> =
                (0..8).map(|bit| original[index] ^ (1 << bit)).collect();
            replacements.extend([b'\n', b' ', b'"', b'0', b'}']);
            for replacement in replacements {
                if replacement == original[index] {
                    continue;
                }
                let mut bytes = original.clone();
                bytes[index] = replacement;
                std::fs::write(&path, &bytes).unwrap();
                let report = verify(&path).unwrap();
                let what = format!(
                    "byte {index} ({:?} -> {:?})",
                    original[index] as char, replacement as char
                );
                if index == original.len() - 1 {
                    // The last newline gone: the last record looks like an interrupted append.
                    // That is indistinguishable from a crash, and cutting the tail is also
                    // something anyone with write access can do; the anchored head catches it.
                    assert_eq!(report.first_bad, None, "{what}");
                    assert_eq!(report.records, 4, "{what}");
                    assert!(report.torn_tail_bytes > 0, "{what}");
                    assert_ne!(report.head_hash, good.head_hash, "{what}");
                } else {
                    assert!(report.first_bad.is_some(), "{what} went unnoticed");
                    assert!(AuditLog::<Event>::open(&path).is_err(), "{what}");
                    // A read-only check never touches the file.
                    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}");
                }
                checked += 1;
            }
        }
        assert!(checked > 8 * original.len());
    }

    #[test]
    fn a_deleted_middle_line_is_detected() {
        let (_dir, path, _) = write_log(5);
        let mut file_lines = lines(&path);
        file_lines.remove(2);
        std::fs::write(&path, file_lines.concat()).unwrap();
        assert_eq!(corrupt_at(&path), (3, Some(4)));
        let report = verify(&path).unwrap();
        assert_eq!(report.records, 2);
        let bad = report.first_bad.unwrap();
        assert_eq!((bad.line, bad.seq), (3, Some(4)));
    }

    #[test]
    fn swapped_lines_are_detected() {
        let (_dir, path, _) = write_log(5);
        let mut file_lines = lines(&path);
        file_lines.swap(1, 3);
        std::fs::write(&path, file_lines.concat()).unwrap();
        assert_eq!(corrupt_at(&path), (2, Some(4)));
    }

    #[test]
    fn a_rewritten_record_breaks_the_next_link() {
        // Someone edits record 3 and recomputes its hash, but not the chain after it.
        let (_dir, path, written) = write_log(5);
        let mut file_lines = lines(&path);
        let (forged, _) = encode_line(
            3,
            time(3),
            "mallory",
            &serde_json::to_vec(&event(3)).unwrap(),
            &written[1].hash,
        );
        file_lines[2] = forged;
        std::fs::write(&path, file_lines.concat()).unwrap();
        let bad = verify(&path).unwrap().first_bad.unwrap();
        assert_eq!((bad.line, bad.seq), (4, Some(4)));
        assert!(bad.reason.contains("prev"), "{}", bad.reason);
    }

    #[test]
    fn a_semantically_equal_but_reformatted_line_is_refused() {
        let (_dir, path, written) = write_log(3);
        let mut file_lines = lines(&path);
        // The last record re-encoded with a space in its event, hash recomputed: same meaning,
        // different bytes.
        let (spaced, _) = encode_line(
            3,
            time(3),
            "alice",
            b"{\"Switch\": {\"from\":\"blue\",\"to\":\"x\"}}",
            &written[1].hash,
        );
        file_lines[2] = spaced;
        std::fs::write(&path, file_lines.concat()).unwrap();
        let bad = verify(&path).unwrap().first_bad.unwrap();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("canonical"), "{}", bad.reason);

        // And a space in the envelope, with the hash over the edited bytes.
        let prefix = format!(
            r#"{{"seq": 3,"time":{},"actor":"alice","event":"x","prev":"{}""#,
            time(3).0,
            written[1].hash
        );
        let line = format!(
            "{prefix},\"hash\":\"{}\"}}\n",
            sha256_hex(prefix.as_bytes())
        );
        file_lines[2] = line.into_bytes();
        std::fs::write(&path, file_lines.concat()).unwrap();
        let bad = verify(&path).unwrap().first_bad.unwrap();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("canonical"), "{}", bad.reason);
    }

    #[test]
    fn a_torn_last_line_is_cut_by_open_and_reported_by_verify() {
        let (_dir, path, written) = write_log(5);
        let full = std::fs::read(&path).unwrap();
        let last_len = lines(&path)[4].len();
        let cut_at = full.len() - last_len / 2;
        std::fs::write(&path, &full[..cut_at]).unwrap();

        let report = verify(&path).unwrap();
        assert_eq!(report.records, 4);
        assert_eq!(report.head_hash, written[3].hash);
        assert_eq!(report.torn_tail_bytes, (last_len - last_len / 2) as u64);
        assert_eq!(report.first_bad, None);
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            cut_at,
            "verify changed the file"
        );

        let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records, written[..4]);
        assert_eq!(log.head(), (4, written[3].hash.as_str()));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            full[..full.len() - last_len],
            "open cuts exactly the torn line"
        );
        let kept = path.with_file_name(format!("{}.torn-after-4", AUDIT_FILE_NAME));
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            full[full.len() - last_len..cut_at],
            "the cut bytes are kept beside the log"
        );
        assert_ne!(
            torn_path(&path, 4),
            kept,
            "a later cut never overwrites this one"
        );
        let next = log.append(time(5), "bob", event(5)).unwrap();
        assert_eq!(
            (next.seq, next.prev.as_str()),
            (5, written[3].hash.as_str())
        );
        drop(log);
        let report = verify(&path).unwrap();
        assert_eq!((report.records, report.torn_tail_bytes), (5, 0));
        assert_eq!(report.first_bad, None);
    }

    #[test]
    fn bad_actors_are_refused_and_leave_the_log_alone() {
        let (_dir, path, written) = write_log(1);
        let (mut log, _) = AuditLog::<Event>::open(&path).unwrap();
        let long = "a".repeat(AUDIT_ACTOR_LEN_MAX + 1);
        for actor in [
            "",
            "a\"b",
            "a\\b",
            "a\nb",
            "tab\there",
            "é",
            "\u{7f}",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    log.append(time(2), actor, event(2)),
                    Err(AuditError::BadActor { .. })
                ),
                "{actor:?}"
            );
        }
        log.append(time(2), &"a".repeat(AUDIT_ACTOR_LEN_MAX), event(2))
            .unwrap();
        log.append(time(3), "ops-bot (gate) #1", event(3)).unwrap();
        assert_eq!(log.head().0, 3);
        drop(log);
        let (_, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], written[0]);
    }

    #[test]
    fn too_large_records_are_refused_on_append_and_corrupt_on_read() {
        let (_dir, path, _) = write_log(1);
        let (mut log, _) = AuditLog::<Event>::open(&path).unwrap();
        let big = Event::Note("x".repeat(AUDIT_LINE_BYTES_MAX));
        assert!(matches!(
            log.append(time(2), "alice", big),
            Err(AuditError::TooLarge { .. })
        ));
        // Just under the limit is fine: the limit is on the whole line.
        let overhead = encode_line(2, time(2), "alice", b"{\"Note\":\"\"}", log.head().1)
            .0
            .len();
        let fits = Event::Note("y".repeat(AUDIT_LINE_BYTES_MAX - overhead));
        let record = log.append(time(2), "alice", fits.clone()).unwrap();
        assert_eq!(record.event, fits);
        let head = log.head().1.to_string();
        drop(log);
        assert_eq!(lines(&path)[1].len(), AUDIT_LINE_BYTES_MAX);
        assert_eq!(verify(&path).unwrap().first_bad, None);

        // A line over the limit can only be damage, complete or not.
        let (too_long, _) = encode_line(
            3,
            time(3),
            "alice",
            &serde_json::to_vec(&Event::Note("z".repeat(AUDIT_LINE_BYTES_MAX))).unwrap(),
            &head,
        );
        let good = std::fs::read(&path).unwrap();
        for tail in [&too_long[..], &too_long[..too_long.len() - 1]] {
            std::fs::write(&path, [&good[..], tail].concat()).unwrap();
            let report = verify(&path).unwrap();
            assert_eq!(report.records, 2);
            let bad = report.first_bad.unwrap();
            assert_eq!((bad.line, bad.seq), (3, Some(3)));
            assert_eq!(corrupt_at(&path), (3, Some(3)));
        }
    }

    #[test]
    fn garbage_and_empty_lines_are_corrupt() {
        let (_dir, path, _) = write_log(2);
        let good = std::fs::read(&path).unwrap();
        for junk in [&b"\n"[..], b"not json\n", b"{}\n", b"\0\0\0\n"] {
            std::fs::write(&path, [&good[..], junk].concat()).unwrap();
            assert_eq!(corrupt_at(&path).0, 3, "{junk:?}");
        }
        // Zeros without a newline: what a crash can leave where an append was under way.
        std::fs::write(&path, [&good[..], b"\0\0\0\0"].concat()).unwrap();
        let (_, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), good);
    }

    #[test]
    fn a_verified_record_whose_event_does_not_decode_refuses_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE_NAME);
        let (mut log, _) = AuditLog::<serde_json::Value>::open(&path).unwrap();
        log.append(time(1), "alice", serde_json::json!({"Unknown": 1}))
            .unwrap();
        drop(log);
        assert_eq!(verify(&path).unwrap().first_bad, None);
        assert!(matches!(
            AuditLog::<Event>::open(&path),
            Err(AuditError::Corrupt {
                line: 1,
                seq: Some(1),
                ..
            })
        ));
    }

    #[test]
    fn verify_of_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            verify(&dir.path().join("nope.log")),
            Err(AuditError::Io { .. })
        ));
    }

    #[test]
    fn default_path_is_in_the_journal_dir() {
        assert_eq!(
            default_path(Path::new("var/journal")),
            Path::new("var/journal/audit.log")
        );
    }

    #[test]
    fn render_shows_utc_time() {
        let record = RawAuditRecord {
            seq: 1,
            time: Timestamp(1_795_437_296_789_000_000),
            actor: "alice".into(),
            event_json: "{\"a\":1}".into(),
            prev: GENESIS_HASH.into(),
            hash: GENESIS_HASH.into(),
        };
        assert_eq!(
            record.render(),
            "     1  2026-11-23T12:34:56.789Z  alice  {\"a\":1}"
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (any::<String>(), any::<String>()).prop_map(|(from, to)| Event::Switch { from, to }),
            any::<String>().prop_map(Event::Note),
            (any::<u64>(), any::<bool>())
                .prop_map(|(change, approved)| Event::Approve { change, approved }),
            proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4)
                .prop_map(Event::Labels),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn appended_records_verify_and_reopen_equal(
            entries in proptest::collection::vec(
                (any::<u64>(), "[ -!#-\\[\\]-~]{1,64}", arb_event()),
                0..12,
            ),
            reopen_every in 1usize..5,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(AUDIT_FILE_NAME);
            let mut written = Vec::new();
            // Created empty first, so an empty sequence checks an empty log.
            drop(AuditLog::<Event>::open(&path).unwrap());
            for chunk in entries.chunks(reopen_every) {
                let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
                prop_assert_eq!(&records, &written);
                for (nanos, actor, event) in chunk {
                    written.push(log.append(Timestamp(*nanos), actor, event.clone()).unwrap());
                }
            }
            let report = verify(&path).unwrap();
            prop_assert_eq!(report.first_bad, None);
            prop_assert_eq!(report.records, entries.len() as u64);
            let (_, records) = AuditLog::<Event>::open(&path).unwrap();
            prop_assert_eq!(records, written);
        }

        #[test]
        fn any_actor_is_either_written_intact_or_refused(actor in any::<String>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(AUDIT_FILE_NAME);
            let (mut log, _) = AuditLog::<Event>::open(&path).unwrap();
            let result = log.append(Timestamp(1), &actor, Event::Note("n".into()));
            drop(log);
            let (_, records) = AuditLog::<Event>::open(&path).unwrap();
            match result {
                Ok(record) => prop_assert_eq!(records, vec![record]),
                Err(AuditError::BadActor { .. }) => prop_assert!(records.is_empty()),
                Err(other) => prop_assert!(false, "{}", other),
            }
        }
    }

    #[test]
    fn reopening_an_intact_log_cuts_nothing_and_keeps_nothing_aside() {
        let (dir, path, _) = write_log(3);
        let before = std::fs::read(&path).unwrap();
        let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(log.take_cut(), None, "an intact log has no torn tail");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let beside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(beside, [AUDIT_FILE_NAME], "nothing was moved aside");
        drop(dir);
    }

    #[test]
    fn a_whole_last_record_without_its_newline_is_completed_not_cut() {
        let (_dir, path, written) = write_log(3);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();

        let report = verify(&path).unwrap();
        assert_eq!(report.first_bad, None);
        assert_eq!((report.records, report.torn_tail_bytes), (3, 0));
        assert!(report.newline_missing, "torn after its last byte");
        assert_eq!(report.head_hash, written[2].hash);

        let (mut log, records) = AuditLog::<Event>::open(&path).unwrap();
        assert_eq!(records, written, "the record is kept, not cut");
        assert_eq!(log.take_cut(), None);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            full,
            "open puts the newline back"
        );
    }

    #[test]
    fn only_a_whole_record_missing_its_newline_passes_as_one() {
        let (_dir, path, _) = write_log(3);
        let full = std::fs::read(&path).unwrap();
        let last = lines(&path)[2].clone();
        let head = &full[..full.len() - last.len()];
        // Torn one byte before its end: the tail is long enough to be judged, and is not whole.
        let torn = &last[..last.len() - 2];
        // Ends like a record but does not start like one: an edit, never an append.
        let mut headless = last[..last.len() - 1].to_vec();
        headless[0] = b'x';
        for tail in [torn, &headless[..]] {
            std::fs::write(&path, [head, tail].concat()).unwrap();
            let report = verify(&path).unwrap();
            assert_eq!(report.first_bad, None, "{}", String::from_utf8_lossy(tail));
            assert_eq!(report.records, 2);
            assert_eq!(report.torn_tail_bytes, tail.len() as u64);
            assert!(!report.newline_missing);
        }
    }

    /// A reader whose first `fill_buf` fails with `kind`, then reads `bytes`.
    struct FailsOnce {
        kind: Option<io::ErrorKind>,
        bytes: io::Cursor<Vec<u8>>,
    }

    impl Read for FailsOnce {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.bytes.read(out)
        }
    }

    impl BufRead for FailsOnce {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            match self.kind.take() {
                Some(kind) => Err(io::Error::from(kind)),
                None => self.bytes.fill_buf(),
            }
        }

        fn consume(&mut self, amount: usize) {
            self.bytes.consume(amount);
        }
    }

    #[test]
    fn an_interrupted_read_is_retried_and_any_other_error_returned() {
        let mut buf = Vec::new();
        let mut reader = FailsOnce {
            kind: Some(io::ErrorKind::Interrupted),
            bytes: io::Cursor::new(b"line\n".to_vec()),
        };
        assert!(matches!(
            next_line(&mut reader, &mut buf),
            Ok(LineKind::Complete)
        ));
        assert_eq!(buf, b"line\n");
        let mut reader = FailsOnce {
            kind: Some(io::ErrorKind::PermissionDenied),
            bytes: io::Cursor::new(b"line\n".to_vec()),
        };
        let error = next_line(&mut reader, &mut buf)
            .err()
            .expect("the error is returned");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_line_too_short_for_prev_and_hash_is_corrupt_not_a_panic() {
        let (_dir, path, _) = write_log(2);
        let good = std::fs::read(&path).unwrap();
        let short = br#"{"seq":3,"time":1,"actor":"alice","event":{},"prev":"00"}"#;
        std::fs::write(&path, [&good[..], short, b"\n"].concat()).unwrap();
        assert_eq!(corrupt_at(&path).0, 3);
    }

    #[test]
    fn numbers_and_hashes_are_read_only_in_their_canonical_form() {
        let number = |text: &[u8]| {
            let mut rest = text;
            take_number(&mut rest, b"n:").map(|value| (value, rest.len()))
        };
        assert_eq!(number(b"n:0,"), Some((0, 1)));
        assert_eq!(number(b"n:10,"), Some((10, 1)));
        assert_eq!(number(b"n:07,"), None, "a leading zero");
        assert_eq!(number(b"n:,"), None, "no digits");
        assert_eq!(number(b"m:1,"), None, "another key");

        let lower = "0123456789abcdef".repeat(4);
        assert_eq!(lower_hex(lower.as_bytes()), Some(lower.as_str()));
        let upper = lower.to_uppercase();
        assert_eq!(lower_hex(upper.as_bytes()), None, "uppercase hex");
        assert_eq!(lower_hex(&lower.as_bytes()[1..]), None, "63 digits");
    }
}
