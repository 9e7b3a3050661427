//! Artifacts: the builds an operator names in a change, by path and SHA-256.
//!
//! A change record says "run exactly these bytes". This module is how baton keeps that promise:
//! [`Artifact::inspect`] gives an operator the hash to file, [`Artifact::check`] re-verifies it,
//! [`exec_verified`] starts a standby from the artifact with the hash checked on the very file
//! descriptor that is executed, and [`self_sha256`] lets a running engine tell the gateway which
//! bytes it runs, so authority can be tied to an approved artifact.
//!
//! Only ELF executables are supported by [`exec_verified`]: a script would need its interpreter
//! to reopen it by path, which is exactly the window this module exists to close.

use std::ffi::{CString, OsString};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes read per call while hashing: large enough that an 80 MB binary is a few thousand reads,
/// small enough to sit on the stack of any thread.
const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// Hex characters in a SHA-256 digest.
const SHA256_HEX_LEN: usize = 64;

/// What the running program is, on Linux: the executed file, even if its path was replaced or
/// unlinked since.
const SELF_EXE: &str = "/proc/self/exe";

/// A build an operator names in a change: where it is and what its bytes hash to. The hash is
/// the identity; the path only says where to find bytes that must match it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Where the build is. Absolute and canonical when made by [`Artifact::inspect`], so a
    /// change record does not depend on the operator's working directory or symlinks.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes: 64 lowercase hex characters (see [`parse_sha256`]).
    pub sha256: String,
}

/// Why an artifact could not be hashed, verified or executed. Each variant names the path or
/// text at fault, so the operator's CLI error says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Reading or opening the file failed for a reason other than its absence.
    #[error("reading artifact {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Nothing exists at the path.
    #[error("artifact {} does not exist", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// The path exists but is a directory, device or other non-regular file.
    #[error("artifact {} is not a regular file", path.display())]
    NotAFile {
        /// The path as given.
        path: PathBuf,
    },
    /// Text offered as a SHA-256 is not 64 hex characters.
    #[error("{text:?} is not a SHA-256: {reason}")]
    BadHash {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file's bytes are not the ones the change names.
    #[error(
        "artifact {} does not match: expected sha256 {expected}, found {found}",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The hash the change names.
        expected: String,
        /// The hash of the bytes actually there.
        found: String,
    },
    /// The verified file could not be executed (not an ELF executable, no permission, an
    /// argument with a NUL byte).
    #[error("executing artifact {}: {source}", path.display())]
    Exec {
        /// The file.
        path: PathBuf,
        /// What the OS (or the argument check) said.
        source: io::Error,
    },
}

impl ArtifactError {
    /// Maps an I/O error on `path` to NotFound or Io, so a missing file reads as such.
    fn io(path: &Path, source: io::Error) -> ArtifactError {
        match source.kind() {
            io::ErrorKind::NotFound => ArtifactError::NotFound {
                path: path.to_owned(),
            },
            _ => ArtifactError::Io {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// SHA-256 of a file's bytes as 64 lowercase hex characters, read 64 KiB at a time so a large
/// build is never held in memory.
pub fn sha256_file(path: &Path) -> Result<String, ArtifactError> {
    let file = open_regular(path)?;
    hash_reader(file).map_err(|source| ArtifactError::io(path, source))
}

/// Checks that `text` is a SHA-256 in hex and returns it in lowercase, the one form baton
/// stores and compares, so a hash pasted in upper case still matches.
pub fn parse_sha256(text: &str) -> Result<String, ArtifactError> {
    let bad = |reason: String| ArtifactError::BadHash {
        text: text.to_owned(),
        reason,
    };
    if let Some((index, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(bad(format!(
            "character {} ({c:?}) is not a hex digit",
            index + 1
        )));
    }
    // All ASCII from here, so bytes and characters agree.
    if text.len() != SHA256_HEX_LEN {
        return Err(bad(format!(
            "{} hex digits, a SHA-256 has {SHA256_HEX_LEN}",
            text.len()
        )));
    }
    Ok(text.to_ascii_lowercase())
}

impl Artifact {
    /// The artifact at `path` as it is now: canonical absolute path and the hash of its bytes.
    /// What an operator files in a change.
    pub fn inspect(path: &Path) -> Result<Artifact, ArtifactError> {
        let canonical = path
            .canonicalize()
            .map_err(|source| ArtifactError::io(path, source))?;
        let sha256 = sha256_file(&canonical)?;
        Ok(Artifact {
            path: canonical,
            sha256,
        })
    }

    /// Re-hashes the file and fails with [`ArtifactError::Mismatch`] if its bytes are no longer
    /// the ones named. Only a snapshot in time: to run the file, use [`exec_verified`], which
    /// leaves no window between check and exec.
    pub fn check(&self) -> Result<(), ArtifactError> {
        let found = sha256_file(&self.path)?;
        self.expect(found)
    }

    /// Compares a hash of this artifact's path with the one it names.
    fn expect(&self, found: String) -> Result<(), ArtifactError> {
        if found == self.sha256 {
            Ok(())
        } else {
            Err(ArtifactError::Mismatch {
                path: self.path.clone(),
                expected: self.sha256.clone(),
                found,
            })
        }
    }
}

/// Replaces this process with the artifact, run with `args` (`argv[0]` is the artifact's path),
/// only if its bytes hash to the artifact's SHA-256. Returns only on failure.
///
/// Hash checked before exec, with no window between check and exec: the file is opened once,
/// the bytes hashed are read from that descriptor, and that same descriptor is executed with
/// fexecve(2), so a file renamed or replaced at the path after the check is never what runs.
/// The descriptor is close-on-exec, so the new program does not inherit it; fexecve of an ELF
/// binary does not need it open after the kernel has loaded it (a script would: not
/// supported). The file's identity and modification time are compared before and after
/// hashing, so a write into the same file while it was hashed is refused too; an artifact is
/// meant to be immutable, and a writer with permission to change it in the microseconds
/// between that comparison and the exec is outside what this guards.
pub fn exec_verified(artifact: &Artifact, args: &[OsString]) -> ArtifactError {
    match try_exec_verified(artifact, args) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

/// [`exec_verified`] with `?`; the Ok type is uninhabited because a successful exec does not
/// return.
fn try_exec_verified(
    artifact: &Artifact,
    args: &[OsString],
) -> Result<std::convert::Infallible, ArtifactError> {
    let path = artifact.path.as_path();
    let exec_error = |source: io::Error| ArtifactError::Exec {
        path: path.to_owned(),
        source,
    };
    // Everything exec needs is built before the file is opened, so nothing but the hash and
    // the identity check stand between opening and executing it.
    let argv = c_strings(std::iter::once(path.as_os_str().to_owned()).chain(args.iter().cloned()))
        .map_err(exec_error)?;
    let envp = c_strings(std::env::vars_os().map(|(key, value)| {
        let mut entry = key;
        entry.push("=");
        entry.push(value);
        entry
    }))
    .map_err(exec_error)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let mut file = open_regular(path)?;
    let before = file
        .metadata()
        .map_err(|source| ArtifactError::io(path, source))?;
    let found = hash_reader(&mut file).map_err(|source| ArtifactError::io(path, source))?;
    let after = file
        .metadata()
        .map_err(|source| ArtifactError::io(path, source))?;
    if !same_contents(&before, &after) {
        return Err(ArtifactError::Io {
            path: path.to_owned(),
            source: io::Error::other("the file changed while it was being hashed"),
        });
    }
    artifact.expect(found)?;

    // Rust ignores SIGPIPE at startup and std's own exec restores the default; do the same, so
    // the new program sees the disposition a shell would give it.
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches no
    // memory of ours; the return value is checked.
    let sigpipe = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if sigpipe == libc::SIG_ERR {
        return Err(exec_error(io::Error::last_os_error()));
    }
    // SAFETY: `file` is an open descriptor we own for the whole call; `argv_ptrs` and
    // `envp_ptrs` are null-terminated arrays of pointers into `argv` and `envp`, NUL-terminated
    // C strings that outlive the call. On success the process image is replaced; on failure
    // nothing was changed and errno says why.
    unsafe { libc::fexecve(file.as_raw_fd(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    let error = io::Error::last_os_error();
    // Still this program: give SIGPIPE back the disposition it had.
    // SAFETY: `sigpipe` is the disposition signal(2) returned above, a valid one to reinstate.
    unsafe { libc::signal(libc::SIGPIPE, sigpipe) };
    Err(exec_error(error))
}

/// SHA-256 of the running program's bytes (/proc/self/exe), so an engine can tell the gateway
/// exactly which build it runs, whatever has happened to its path since it started.
pub fn self_sha256() -> Result<String, ArtifactError> {
    sha256_file(Path::new(SELF_EXE))
}

/// Opens `path` read-only and close-on-exec (std's default), refusing anything but a regular
/// file: hashing a FIFO would block, and a directory is an operator's typo.
fn open_regular(path: &Path) -> Result<File, ArtifactError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO named as an artifact must not block the open; regular files ignore it.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| ArtifactError::io(path, source))?;
    let metadata = file
        .metadata()
        .map_err(|source| ArtifactError::io(path, source))?;
    if !metadata.is_file() {
        return Err(ArtifactError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

/// SHA-256 of everything `reader` yields, in lowercase hex.
fn hash_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    let mut hex = String::with_capacity(SHA256_HEX_LEN);
    for byte in hasher.finalize() {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Whether two stats of one open file show the same file with unchanged contents: a write
/// moves the modification and change times, a truncate or append the size.
fn same_contents(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    (before.dev(), before.ino(), before.size()) == (after.dev(), after.ino(), after.size())
        && (
            before.mtime(),
            before.mtime_nsec(),
            before.ctime(),
            before.ctime_nsec(),
        ) == (
            after.mtime(),
            after.mtime_nsec(),
            after.ctime(),
            after.ctime_nsec(),
        )
}

/// C strings for exec; an interior NUL cannot be passed to a program, so it is an error naming
/// the argument.
fn c_strings(items: impl Iterator<Item = OsString>) -> io::Result<Vec<CString>> {
    items
        .map(|item| {
            CString::new(item.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{item:?} contains a NUL byte"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
