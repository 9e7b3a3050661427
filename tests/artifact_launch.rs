//! The real `baton artifact hash` and `baton launch` binaries on copies of real executables in
//! a scratch directory: the hash an operator files, a launch that runs exactly that build, and
//! launches that refuse (wrong hash, file replaced after it was hashed) without running
//! anything. "Did not run" is observable: the build under test is a copy of `touch`, whose only
//! effect is to create the marker file named in its arguments. Last, the whole story: an engine
//! launched from a filed artifact tells the gateway, in its Hello, the hash that was filed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use baton::link::LinkAddr;

use sha2::{Digest, Sha256};

/// SHA-256 of a file, computed here rather than with the code under test.
fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read build");
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn baton(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton")
}

/// A copy of `program` (found on PATH, or a path) at `dir/name`, executable like the original.
fn copy_program(program: &Path, dir: &Path, name: &str) -> PathBuf {
    let source = if program.is_absolute() {
        program.to_owned()
    } else {
        std::env::split_paths(&std::env::var_os("PATH").expect("PATH"))
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| panic!("{} is not on PATH", program.display()))
    };
    let copy = dir.join(name);
    std::fs::copy(&source, &copy).expect("copy program");
    copy
}

/// `baton launch --sha256 HASH BUILD -- ARGS...`.
fn launch(sha256: &str, build: &Path, args: &[&OsStr]) -> Output {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("launch"),
        OsStr::new("--sha256"),
        OsStr::new(sha256),
        build.as_os_str(),
        OsStr::new("--"),
    ];
    all.extend_from_slice(args);
    baton(&all)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn artifact_hash_prints_the_sha256_and_absolute_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(
        Path::new(env!("CARGO_BIN_EXE_baton")),
        dir.path(),
        "baton-v2",
    );
    let out = baton(&[
        OsStr::new("artifact"),
        OsStr::new("hash"),
        build.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let canonical = build.canonicalize().expect("canonical path");
    assert_eq!(
        text(&out.stdout),
        format!("{}  {}\n", sha256_hex(&build), canonical.display())
    );

    let missing = baton(&[
        OsStr::new("artifact"),
        OsStr::new("hash"),
        dir.path().join("missing").as_os_str(),
    ]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("does not exist"));
}

#[test]
fn launch_runs_the_build_when_its_hash_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(
        Path::new(env!("CARGO_BIN_EXE_baton")),
        dir.path(),
        "baton-v2",
    );
    // Upper case, as an operator might paste it.
    let hash = sha256_hex(&build).to_ascii_uppercase();
    let out = launch(&hash, &build, &[OsStr::new("--version")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("baton"), "{}", text(&out.stdout));
}

#[test]
fn launch_with_the_wrong_hash_runs_nothing_and_prints_both_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(Path::new("touch"), dir.path(), "build");
    let right = sha256_hex(&build);
    let wrong = format!("{:064x}", 0xbad_u32);
    let marker = dir.path().join("ran");

    let out = launch(&wrong, &build, &[marker.as_os_str()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&wrong), "{stderr}");
    assert!(stderr.contains(&right), "{stderr}");
    assert!(!marker.exists(), "the build ran despite the wrong hash");

    // The same launch with the right hash runs it: the marker is the build's doing.
    let out = launch(&right, &build, &[marker.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists(), "the verified build did not run");
}

#[test]
fn launch_refuses_a_build_replaced_after_it_was_hashed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(Path::new("touch"), dir.path(), "build");
    let out = baton(&[
        OsStr::new("artifact"),
        OsStr::new("hash"),
        build.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let filed = text(&out.stdout);
    let filed = filed.split_whitespace().next().expect("hash").to_owned();

    // Replaced the way deployments replace files (a new file renamed over the path), by a build
    // that still works: the same program with a byte appended, which would create the marker.
    let replacement = copy_program(Path::new("touch"), dir.path(), "replacement");
    let mut bytes = std::fs::read(&replacement).expect("read");
    bytes.push(0);
    std::fs::write(&replacement, &bytes).expect("write");
    std::fs::rename(&replacement, &build).expect("rename over the build");

    let marker = dir.path().join("ran");
    let out = launch(&filed, &build, &[marker.as_os_str()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&filed), "{stderr}");
    assert!(stderr.contains(&sha256_hex(&build)), "{stderr}");
    assert!(!marker.exists(), "the replaced build ran");

    // The replacement does run when named by its own hash, so the refusal above was the hash.
    let out = launch(&sha256_hex(&build), &build, &[marker.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists());
}

#[test]
fn launch_refuses_text_that_is_not_a_sha256() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(Path::new("touch"), dir.path(), "build");
    let marker = dir.path().join("ran");
    let out = launch("abc", &build, &[marker.as_os_str()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a SHA-256"));
    assert!(!marker.exists());
}

#[tokio::test]
async fn an_engine_launched_from_an_artifact_names_its_hash_in_hello() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(
        Path::new(env!("CARGO_BIN_EXE_baton")),
        dir.path(),
        "baton-v2",
    );
    let filed = sha256_hex(&build);
    let socket = dir.path().join("engine.sock");
    let listen = format!("unix://{}", socket.display());
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["launch", "--sha256", &filed])
        .arg(&build)
        .args(["--", "engine", "--name", "green", "--listen", &listen])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn baton launch");
    let mut child = KillOnDrop(child);

    let addr = LinkAddr::Unix(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    let hello = loop {
        match baton::link::connect_with_timeout(&addr, Duration::from_secs(2)).await {
            Ok((_link, hello)) => break hello,
            Err(error) => {
                if let Some(status) = child.0.try_wait().expect("wait") {
                    panic!("the engine exited ({status}) before serving: {error}");
                }
                assert!(Instant::now() < deadline, "no engine link: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(child);
    assert_eq!(hello.engine_name, "green");
    assert_eq!(hello.executable_sha256, filed);
}

/// A child process killed (SIGKILL) and reaped when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_launched_build_does_not_inherit_rusts_ignored_sigpipe() {
    // baton (a Rust program) ignores SIGPIPE; a build it launches must get the default back, or
    // a write to a closed pipe would fail with EPIPE where its authors expect the signal.
    let dir = tempfile::tempdir().expect("tempdir");
    let build = copy_program(Path::new("cat"), dir.path(), "build");
    let out = launch(
        &sha256_hex(&build),
        &build,
        &[OsStr::new("/proc/self/status")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = text(&out.stdout);
    let ignored = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).expect("hex mask"))
        .expect("SigIgn line");
    let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(ignored & sigpipe_bit, 0, "SIGPIPE is ignored: {status}");
}
