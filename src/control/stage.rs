//! Staging: which build an engine slot should run, as the control plane decided it.
//!
//! Step 2 of a release starts the standby from exactly the change's artifact. The control plane
//! (in the gateway process) decides it — after the policy check and the audit record — and the
//! supervisor behind `baton up` (another process) carries it out. They meet in one small file per
//! engine under the journal directory, `stage/<engine>.json`: the plane writes it atomically
//! (temporary file, fsync, rename, fsync of the directory), the supervisor reads it before every
//! start of that engine and runs the artifact through `baton launch`, which checks the hash on
//! the very descriptor it executes. A change of the file makes the supervisor restart the
//! engine (it is never the authoritative one: the sequencer refuses to stage that).
//!
//! The gateway's own build has a record beside them, `stage/gateway.build.json`: the supervisor
//! writes it when the build a planned upgrade started has taken over (a rollback is an upgrade
//! to the previous change's build, and rewrites it), and reads it when `baton up` starts, so a
//! restarted supervisor runs the gateway from the build it was last upgraded to rather than
//! from the configured binary. Its name is not a plain engine name, so no engine's record can
//! be taken for it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The build an engine slot is to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The engine's name ("green").
    pub engine: String,
    /// Absolute path of the artifact.
    pub artifact_path: String,
    /// Its SHA-256, checked again by `baton launch` at every start.
    pub artifact_sha256: String,
    /// The change that staged it (`CHG-n`).
    pub change: String,
}

/// Why a stage file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The file system refused.
    #[error("stage file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a stage record (edited by hand, or from another build).
    #[error("stage file {path} is not a stage record: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// The engine name cannot be a file name.
    #[error("engine name {0:?} cannot name a stage file")]
    BadEngine(String),
}

/// The directory of the stage files, under the journal directory both processes know.
pub fn stage_dir(journal_dir: &Path) -> PathBuf {
    journal_dir.join("stage")
}

/// The stage file of `engine` in `dir`; the name must be plain (letters, digits, `-`, `_`) so it
/// can never point outside the directory.
fn stage_file(dir: &Path, engine: &str) -> Result<PathBuf, StageError> {
    let plain = !engine.is_empty()
        && engine.len() <= 64
        && engine
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(StageError::BadEngine(engine.to_owned()));
    }
    Ok(dir.join(format!("{engine}.json")))
}

/// The name of the gateway's build record in the stage directory.
const GATEWAY_BUILD_FILE_NAME: &str = "gateway.build.json";

/// Writes `staged` so that a reader sees the old record or the new one, never a mix, and the
/// new one survives a crash once this returns.
pub fn write(dir: &Path, staged: &Staged) -> Result<(), StageError> {
    let path = stage_file(dir, &staged.engine)?;
    write_record(dir, &path, staged)
}

/// Records in `dir` that the gateway runs `build` from now on (see the module documentation),
/// as atomically and durably as [`write`].
pub fn write_gateway_build(dir: &Path, build: &Staged) -> Result<(), StageError> {
    write_record(dir, &dir.join(GATEWAY_BUILD_FILE_NAME), build)
}

/// The build a planned upgrade last moved the gateway to, if any.
pub fn read_gateway_build(dir: &Path) -> Result<Option<Staged>, StageError> {
    read_record(dir.join(GATEWAY_BUILD_FILE_NAME))
}

/// Writes `staged` to `path` in `dir` through a temporary file, renamed over it.
fn write_record(dir: &Path, path: &Path, staged: &Staged) -> Result<(), StageError> {
    let path = path.to_owned();
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StageError::Io { path, source }
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // The new directory's name lives in its parent: make it durable too.
        let parent = dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(io(parent))?;
    }
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.tmp"));
    let bytes = serde_json::to_vec_pretty(staged).map_err(|source| StageError::Malformed {
        path: path.clone(),
        source,
    })?;
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(&bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The build staged for `engine`, if any.
pub fn read(dir: &Path, engine: &str) -> Result<Option<Staged>, StageError> {
    read_record(stage_file(dir, engine)?)
}

/// The record at `path`, if there is one.
fn read_record(path: PathBuf) -> Result<Option<Staged>, StageError> {
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StageError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StageError::Malformed { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(engine: &str, sha: &str) -> Staged {
        Staged {
            engine: engine.into(),
            artifact_path: "/opt/baton-2/baton".into(),
            artifact_sha256: sha.into(),
            change: "CHG-1".into(),
        }
    }

    #[test]
    fn a_stage_record_round_trips_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let stage = stage_dir(dir.path());
        assert_eq!(read(&stage, "green").unwrap(), None);
        write(&stage, &staged("green", "aa")).unwrap();
        write(&stage, &staged("green", "bb")).unwrap();
        assert_eq!(read(&stage, "green").unwrap(), Some(staged("green", "bb")));
        assert_eq!(read(&stage, "blue").unwrap(), None);
        // Only the record itself is left: the temporary file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(&stage)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["green.json"]);
    }

    #[test]
    fn names_that_are_not_plain_and_files_that_are_not_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../blue", "a/b", "x y"] {
            assert!(matches!(
                write(dir.path(), &staged(bad, "aa")),
                Err(StageError::BadEngine(_))
            ));
        }
        std::fs::write(dir.path().join("green.json"), b"{not json").unwrap();
        assert!(matches!(
            read(dir.path(), "green"),
            Err(StageError::Malformed { .. })
        ));
    }

    #[test]
    fn the_gateway_build_record_is_apart_from_every_engine_record() {
        let dir = tempfile::tempdir().unwrap();
        let stage = stage_dir(dir.path());
        assert_eq!(read_gateway_build(&stage).unwrap(), None);
        write(&stage, &staged("gateway", "aa")).unwrap();
        assert_eq!(read_gateway_build(&stage).unwrap(), None);
        write_gateway_build(&stage, &staged("gateway", "bb")).unwrap();
        write_gateway_build(&stage, &staged("gateway", "cc")).unwrap();
        assert_eq!(
            read_gateway_build(&stage).unwrap(),
            Some(staged("gateway", "cc"))
        );
        assert_eq!(
            read(&stage, "gateway").unwrap(),
            Some(staged("gateway", "aa"))
        );
        let mut names: Vec<_> = std::fs::read_dir(&stage)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["gateway.build.json", "gateway.json"]);
    }
}
