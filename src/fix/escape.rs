//! How a value a counterparty chose is written into the gateway's log.
//!
//! A CompID or any other field is whatever bytes the peer sent: a newline in it would start a
//! forged log line, and NUL or non-ASCII bytes would reach log readers raw. Every peer-supplied
//! value is logged through [`Escaped`], which keeps printable ASCII, spells every other byte as
//! `\xNN` (a backslash as `\\`, so the escaping cannot itself be forged), and cuts long values.

use std::fmt;

use crate::constants;

/// A peer-supplied value, displayed escaped and bounded for the log.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(constants::LOG_PEER_VALUE_BYTES_MAX)];
        for &byte in shown {
            match byte {
                b'\\' => f.write_str("\\\\")?,
                b' '..=b'~' => fmt::Write::write_char(f, char::from(byte))?,
                _ => write!(f, "\\x{byte:02x}")?,
            }
        }
        if shown.len() < self.0.len() {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_non_ascii_bytes_are_spelled_out() {
        let value = b"EVIL\n2026-11-23T12:00:00Z  INFO forged\x00\xc3\xa9\\x41";
        let shown = Escaped(value).to_string();
        assert_eq!(
            shown,
            "EVIL\\x0a2026-11-23T12:00:00Z  INFO forged\\x00\\xc3\\xa9\\\\x41"
        );
        assert!(shown.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let value = vec![b'A'; constants::LOG_PEER_VALUE_BYTES_MAX + 10];
        let shown = Escaped(&value).to_string();
        assert!(shown.starts_with(&"A".repeat(constants::LOG_PEER_VALUE_BYTES_MAX)));
        assert!(shown.ends_with(&format!("...({} bytes)", value.len())));
    }
}
