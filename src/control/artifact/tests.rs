use std::ffi::OsString;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// SHA-256 of "abc" (FIPS 180-2, appendix B.1).
const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn sha256_file_of_known_content() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        sha256_file(&write(dir.path(), "abc", b"abc")).unwrap(),
        ABC_SHA256
    );
    assert_eq!(
        sha256_file(&write(dir.path(), "empty", b"")).unwrap(),
        EMPTY_SHA256
    );
}

#[test]
fn sha256_file_streams_across_buffer_boundaries() {
    // Not a multiple of the buffer, so the last read is short.
    let bytes: Vec<u8> = (0..3 * HASH_BUFFER_BYTES + 17)
        .map(|i| (i % 251) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "big", &bytes);
    let expected: String = Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(sha256_file(&path).unwrap(), expected);
}

#[test]
fn sha256_file_names_missing_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(
        sha256_file(&missing),
        Err(ArtifactError::NotFound { path }) if path == missing
    ));
    assert!(matches!(
        sha256_file(dir.path()),
        Err(ArtifactError::NotAFile { path }) if path == dir.path()
    ));
}

#[test]
fn parse_sha256_accepts_64_hex_digits_in_any_case() {
    assert_eq!(parse_sha256(ABC_SHA256).unwrap(), ABC_SHA256);
    assert_eq!(
        parse_sha256(&ABC_SHA256.to_ascii_uppercase()).unwrap(),
        ABC_SHA256
    );
}

#[test]
fn parse_sha256_names_the_problem() {
    let reason = |text: &str| match parse_sha256(text) {
        Err(ArtifactError::BadHash { text: t, reason }) => {
            assert_eq!(t, text);
            reason
        }
        other => panic!("{text:?} gave {other:?}"),
    };
    assert!(reason("").contains("0 hex digits"));
    assert!(reason(&ABC_SHA256[..63]).contains("63 hex digits"));
    assert!(reason(&format!("{ABC_SHA256}0")).contains("65 hex digits"));
    let mut bad = ABC_SHA256.to_owned();
    bad.replace_range(9..10, "g");
    assert!(
        reason(&bad).contains("character 10 ('g')"),
        "{}",
        reason(&bad)
    );
    // Whitespace is not silently trimmed: the operator sees what was passed.
    assert!(reason(&format!(" {ABC_SHA256}")).contains("character 1 (' ')"));
    assert!(reason(&format!("{}é", &ABC_SHA256[..63])).contains("'é'"));
}

#[test]
fn inspect_gives_the_canonical_path_and_check_sees_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "build", b"abc");
    // Through a relative-looking detour that canonicalization removes.
    let detour = dir.path().join(".").join("build");
    let artifact = Artifact::inspect(&detour).unwrap();
    assert_eq!(artifact.path, path.canonicalize().unwrap());
    assert!(artifact.path.is_absolute());
    assert_eq!(artifact.sha256, ABC_SHA256);
    artifact.check().unwrap();

    std::fs::write(&path, b"abd").unwrap();
    match artifact.check() {
        Err(ArtifactError::Mismatch {
            path: at,
            expected,
            found,
        }) => {
            assert_eq!(at, artifact.path);
            assert_eq!(expected, ABC_SHA256);
            assert_eq!(found, sha256_file(&path).unwrap());
            assert_ne!(found, expected);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        artifact.check(),
        Err(ArtifactError::NotFound { .. })
    ));
    assert!(matches!(
        Artifact::inspect(&path),
        Err(ArtifactError::NotFound { .. })
    ));
}

#[test]
fn exec_verified_returns_a_mismatch_without_executing() {
    // On a mismatch exec_verified returns, so this can run in the test process: had it executed
    // the file, the test binary would have been replaced and the test harness would not finish.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "build", b"abc");
    let artifact = Artifact {
        path: path.clone(),
        sha256: EMPTY_SHA256.to_owned(),
    };
    match exec_verified(&artifact, &[]) {
        ArtifactError::Mismatch {
            expected, found, ..
        } => {
            assert_eq!(expected, EMPTY_SHA256);
            assert_eq!(found, ABC_SHA256);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn exec_verified_refuses_arguments_with_nul_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "build", b"abc");
    let artifact = Artifact {
        path,
        sha256: ABC_SHA256.to_owned(),
    };
    let args = [OsString::from("a\0b")];
    assert!(matches!(
        exec_verified(&artifact, &args),
        ArtifactError::Exec { .. }
    ));
}

#[test]
fn exec_verified_reports_a_file_that_is_not_executable() {
    // The right hash, but the bytes are not an ELF executable (and the mode forbids it): the
    // exec fails and says so instead of running anything.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "build", b"abc");
    let artifact = Artifact {
        path,
        sha256: ABC_SHA256.to_owned(),
    };
    assert!(matches!(
        exec_verified(&artifact, &[]),
        ArtifactError::Exec { .. }
    ));
}

#[test]
fn self_sha256_is_the_hash_of_the_running_binary() {
    let exe = std::env::current_exe().unwrap();
    assert_eq!(self_sha256().unwrap(), sha256_file(&exe).unwrap());
}
