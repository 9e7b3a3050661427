//! The ready file: once a gateway has bound its FIX listener, control endpoint and metrics
//! endpoint, it writes the address each one got to the file [`READY_FILE_ENV`] names. Whoever
//! started it with ports 0 (a test, a script, `baton up`'s supervisor) then knows where to
//! connect without picking a port beforehand, which another process may take in between.
//!
//! The format is one `name address` pair per line (`listen`, `control`, and `metrics` when
//! metrics are served), so a shell script can read it too. The file is written beside its place
//! and renamed there, so a reader polling for it never sees half of it.

use std::net::SocketAddr;
use std::path::Path;

/// The environment variable naming the ready file. An environment variable rather than a flag so
/// that it reaches the gateway that `baton up` starts.
pub const READY_FILE_ENV: &str = "BATON_READY_FILE";

/// The addresses a gateway bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The FIX listener counterparties connect to.
    pub listen: SocketAddr,
    /// The control endpoint `baton ctl` and the supervisor ask.
    pub control: SocketAddr,
    /// The metrics endpoint, when the gateway serves one.
    pub metrics: Option<SocketAddr>,
}

/// A ready file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// It could not be read (not written yet, or not readable).
    #[error("reading the ready file: {0}")]
    Read(#[from] std::io::Error),
    /// A line the format requires is missing.
    #[error("the ready file names no {0} address")]
    Missing(&'static str),
    /// A line's address does not parse.
    #[error("the ready file's {name} address {value:?} is not an address")]
    Invalid {
        /// Which line.
        name: &'static str,
        /// What it holds.
        value: String,
    },
}

/// Writes `ready` to `path`: written to `path` + `.partial` and renamed into place.
pub fn write(path: &Path, ready: &Ready) -> std::io::Result<()> {
    let mut text = format!("listen {}\ncontrol {}\n", ready.listen, ready.control);
    if let Some(metrics) = ready.metrics {
        text.push_str(&format!("metrics {metrics}\n"));
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// Reads the ready file at `path`.
pub fn read(path: &Path) -> Result<Ready, ReadyError> {
    parse(&std::fs::read_to_string(path)?)
}

fn parse(text: &str) -> Result<Ready, ReadyError> {
    let field = |name: &'static str| -> Result<Option<SocketAddr>, ReadyError> {
        let Some(value) = text
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        else {
            return Ok(None);
        };
        value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ReadyError::Invalid {
                name,
                value: value.to_owned(),
            })
    };
    Ok(Ready {
        listen: field("listen")?.ok_or(ReadyError::Missing("listen"))?,
        control: field("control")?.ok_or(ReadyError::Missing("control"))?,
        metrics: field("metrics")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_and_nothing_half_written_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.ready");
        for metrics in [None, Some("127.0.0.1:9102".parse().unwrap())] {
            let ready = Ready {
                listen: "127.0.0.1:9878".parse().unwrap(),
                control: "127.0.0.1:9879".parse().unwrap(),
                metrics,
            };
            write(&path, &ready).unwrap();
            assert_eq!(read(&path).unwrap(), ready);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["gateway.ready"]);
    }

    #[test]
    fn a_file_without_an_address_it_needs_is_refused_naming_it() {
        assert!(matches!(
            parse("listen 127.0.0.1:1\n"),
            Err(ReadyError::Missing("control"))
        ));
        assert!(matches!(
            parse("listen 127.0.0.1:1\ncontrol nowhere\n"),
            Err(ReadyError::Invalid {
                name: "control",
                ..
            })
        ));
    }
}
