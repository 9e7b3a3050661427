//! The audit log's failure latch, through a real failed write: the log sits on a tiny tmpfs that
//! an append fills half way through its line. That append fails, every later one is refused
//! even once space has returned (appending after a partial line would bury it mid-file), and a
//! reopen cuts the half-written line instead of trusting it.
//!
//! Needs root (it mounts a 64 KiB tmpfs); skipped with a message otherwise.

mod support;

use std::io::{ErrorKind, Write};
use std::path::Path;

use baton::control::audit::{AuditError, AuditLog};
use baton::fix::time::Timestamp;
use serde_json::{Value, json};
use support::mount::Mount;

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let page = [0u8; 4096];
    loop {
        match file.write(&page) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

#[test]
fn a_failed_append_refuses_every_later_one_and_its_partial_line_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mount = match Mount::tmpfs(&disk, "64k") {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("SKIPPED the audit latch test: {why} (needs root and tmpfs)");
            return;
        }
    };
    let path = disk.join("audit.log");
    let (mut log, _) = AuditLog::<Value>::open(&path).expect("open");
    for i in 0..3 {
        log.append(Timestamp(i), "ops", json!({"event": "before", "n": i}))
            .expect("append with space");
    }
    let head = (log.head().0, log.head().1.to_owned());
    let good_len = std::fs::metadata(&path).unwrap().len();

    // The disk is full but for one page: the next line, larger than that, is cut short by it.
    let filler = disk.join("filler");
    fill(&filler);
    let filler_len = std::fs::metadata(&filler).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(filler_len - 4096)
        .unwrap();
    let big = "x".repeat(3 * 4096);
    let failed = log.append(Timestamp(10), "ops", json!({"event": "big", "pad": big}));
    match &failed {
        Err(AuditError::Io { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::StorageFull, "{failed:?}")
        }
        other => panic!("an append onto a full disk: {other:?}"),
    }
    let torn_len = std::fs::metadata(&path).unwrap().len();
    assert!(
        torn_len > good_len,
        "no partial line written ({torn_len} bytes, {good_len} before)"
    );

    // Space returns; the log still refuses, small records too, and writes nothing.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..3 {
        let refused = log.append(Timestamp(20 + i), "ops", json!({"event": "after"}));
        match &refused {
            Err(AuditError::Io { source, .. }) => assert!(
                source.to_string().contains("an earlier append failed"),
                "{refused:?}"
            ),
            other => panic!("an append after a failed one: {other:?}"),
        }
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), torn_len);
    assert_eq!((log.head().0, log.head().1), (head.0, head.1.as_str()));
    drop(log);

    // Reopened, the partial line is cut (kept aside) and the chain goes on from the last whole
    // record.
    let (mut reopened, records) = AuditLog::<Value>::open(&path).expect("reopen");
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.event["event"] == "before"));
    assert_eq!(reopened.head(), (head.0, head.1.as_str()));
    let cut = reopened.take_cut().expect("the partial line cut");
    assert_eq!(cut.bytes, torn_len - good_len);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    let next = reopened
        .append(Timestamp(30), "ops", json!({"event": "after reopen"}))
        .expect("append after reopen");
    assert_eq!((next.seq, next.prev.as_str()), (4, head.1.as_str()));
    let report = baton::control::audit::verify(&path).expect("verify");
    assert_eq!((report.records, report.first_bad), (4, None));
}
