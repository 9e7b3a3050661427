//! `baton launch` against a file swapped while it runs: what the artifact's path names flips
//! between the filed build and another one, as fast as the test can, from before the launch
//! starts until it ends. Whichever file the launch opened and hashed, what runs must be that
//! file: the filed build, or nothing (a refusal). The other build must never run, even when the
//! path names it between the hash check and the exec.
//!
//! The path is a symlink flipped by rename, the way releases are often switched (`current` to a
//! new directory). Renaming or linking the build files themselves would change their inode
//! change time, which the launch already refuses as "changed while hashed"; flipping a symlink
//! leaves the hashed file untouched, so only executing the very descriptor that was hashed keeps
//! the other build out.
//!
//! The two builds are copies of `touch` and `mkdir` given the same marker path: a marker that is
//! a file means the filed build ran, a directory means the other one did. The filed build is
//! padded (an ELF ignores trailing bytes) so that hashing it takes far longer than one flip,
//! which makes the file at the path at exec time independent of the one opened.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// Launches raced. Each has about even odds of opening either build, so both outcomes of the
/// race (refused, filed build ran) show up many times; a launch that execs by path instead of
/// by the hashed descriptor runs the other build in about a quarter of them.
const ATTEMPTS: usize = 24;

/// Padding after the filed build: a few milliseconds of hashing even on an idle machine, much
/// longer than one flip of the path.
const PADDING_BYTES: usize = 16 << 20;

/// The full path of `program` on PATH.
fn on_path(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// An executable copy of `bytes` at `path`, closed before anything runs it.
fn write_build(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write build");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make it executable");
}

/// Points `path` at `source` atomically: a new symlink renamed over the old one.
fn place(source: &Path, path: &Path, staging: &Path) {
    std::os::unix::fs::symlink(source, staging).expect("symlink");
    std::fs::rename(staging, path).expect("rename over the path");
}

#[test]
fn a_build_swapped_in_after_the_hash_check_never_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filed = dir.path().join("filed");
    let mut bytes = std::fs::read(on_path("touch")).expect("read touch");
    bytes.resize(bytes.len() + PADDING_BYTES, 0);
    write_build(&filed, &bytes);
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let other = dir.path().join("other");
    write_build(
        &other,
        &std::fs::read(on_path("mkdir")).expect("read mkdir"),
    );
    let build = dir.path().join("build");

    let (mut refused, mut ran) = (0, 0);
    for attempt in 0..ATTEMPTS {
        place(&filed, &build, &dir.path().join("staging"));
        let marker = dir.path().join(format!("ran-{attempt}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, filed, other, build) =
                (stop.clone(), filed.clone(), other.clone(), build.clone());
            let staging = dir.path().join("flipping");
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let source = if flips.is_multiple_of(2) {
                        &other
                    } else {
                        &filed
                    };
                    place(source, &build, &staging);
                    flips += 1;
                }
                flips
            })
        };
        let out = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["launch", "--sha256", &sha256])
            .arg(&build)
            .arg("--")
            .arg(&marker)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run baton launch");
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().expect("flipper");
        assert!(flips > 0, "the path never flipped during the launch");

        assert!(
            !marker.is_dir(),
            "attempt {attempt}: the build swapped in after the check ran"
        );
        if out.status.success() {
            assert!(
                marker.is_file(),
                "attempt {attempt}: the filed build did not run"
            );
            ran += 1;
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("does not match") && !marker.exists(),
                "attempt {attempt}: {stderr}"
            );
            refused += 1;
        }
    }
    // Both outcomes seen: the race was real, the path did flip under the launch.
    assert!(
        refused > 0 && ran > 0,
        "refused {refused}, ran {ran} of {ATTEMPTS}"
    );
    // Sanity check of the markers: the other build, run directly, makes a directory.
    let probe = dir.path().join("probe");
    let status = Command::new(&other)
        .arg(&probe)
        .status()
        .expect("run the other build");
    assert!(status.success() && probe.is_dir());
}
