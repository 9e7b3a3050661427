//! Mutual proof of a shared secret on the link handshake, so a `tcp://` engine only takes inputs
//! from a gateway that knows the secret and a gateway only takes answers from such an engine.
//!
//! The secret never crosses the wire. Each side sends a fresh random nonce (the engine in Hello,
//! the gateway in Welcome); the gateway proves itself in Welcome with
//! `HMAC-SHA256(secret, "baton-link gateway" ‖ engine nonce ‖ gateway nonce)`, and the engine
//! answers with an `AuthProof` frame carrying `HMAC-SHA256(secret, "baton-link engine" ‖ gateway
//! nonce ‖ engine nonce)`. A recorded exchange is worthless: the other side's next nonce differs.
//! The labels keep one side's proof from serving as the other's.
//!
//! HMAC is written here over `sha2` (RFC 2104): a dozen lines, checked against RFC 4231's test
//! vectors, rather than another dependency.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::constants::{LINK_AUTH_NONCE_BYTES, LINK_SECRET_BYTES_MIN};

/// SHA-256's block size, which HMAC pads its key to.
const BLOCK_BYTES: usize = 64;

/// Label of the gateway's proof.
const GATEWAY_LABEL: &[u8] = b"baton-link gateway";

/// Label of the engine's proof.
const ENGINE_LABEL: &[u8] = b"baton-link engine";

/// The link's shared secret. Its `Debug` never shows the bytes, so a config or an error printed
/// in a log cannot leak it.
#[derive(Clone)]
pub struct LinkSecret {
    /// The secret as read from its file, surrounding whitespace removed.
    bytes: Vec<u8>,
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

/// Why the secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the link secret file {}: {source}", path.display())]
    Read {
        /// The file named in the config.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file holds too little to be a secret.
    #[error(
        "the link secret file {} holds {bytes} bytes; a secret needs at least {LINK_SECRET_BYTES_MIN} (e.g. `head -c 32 /dev/urandom | base64`)",
        path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// What it held, whitespace removed.
        bytes: usize,
    },
}

impl LinkSecret {
    /// Reads the secret from `path`; surrounding whitespace (a trailing newline) is not part of
    /// it, so `echo secret > file` and a file written without the newline agree.
    pub fn load(path: &Path) -> Result<LinkSecret, SecretError> {
        let raw = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = raw.trim_ascii().to_vec();
        if bytes.len() < LINK_SECRET_BYTES_MIN {
            return Err(SecretError::TooShort {
                path: path.to_path_buf(),
                bytes: bytes.len(),
            });
        }
        Ok(LinkSecret { bytes })
    }

    /// A secret from bytes already in hand, for tests and embedders.
    pub fn from_bytes(bytes: &[u8]) -> LinkSecret {
        LinkSecret {
            bytes: bytes.to_vec(),
        }
    }

    /// The gateway's proof for this handshake.
    pub(crate) fn gateway_proof(&self, engine_nonce: &[u8], gateway_nonce: &[u8]) -> Vec<u8> {
        self.proof(GATEWAY_LABEL, engine_nonce, gateway_nonce)
    }

    /// The engine's proof for this handshake.
    pub(crate) fn engine_proof(&self, engine_nonce: &[u8], gateway_nonce: &[u8]) -> Vec<u8> {
        self.proof(ENGINE_LABEL, gateway_nonce, engine_nonce)
    }

    /// HMAC over the label and both nonces, each nonce of the fixed length (checked by the
    /// callers through [`nonce_ok`]) so the concatenation is unambiguous.
    fn proof(&self, label: &[u8], first: &[u8], second: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(label.len() + first.len() + second.len());
        message.extend_from_slice(label);
        message.extend_from_slice(first);
        message.extend_from_slice(second);
        hmac_sha256(&self.bytes, &message).to_vec()
    }
}

/// Whether `nonce` has the length every nonce has.
pub(crate) fn nonce_ok(nonce: &[u8]) -> bool {
    nonce.len() == LINK_AUTH_NONCE_BYTES
}

/// A fresh random nonce from the kernel (getrandom(2)).
pub(crate) fn nonce() -> std::io::Result<Vec<u8>> {
    let mut nonce = vec![0u8; LINK_AUTH_NONCE_BYTES];
    let mut filled = 0;
    while filled < nonce.len() {
        // SAFETY: the pointer and length describe the unfilled part of `nonce`, which is valid
        // for writes of that many bytes.
        let got = unsafe {
            libc::getrandom(nonce[filled..].as_mut_ptr().cast(), nonce.len() - filled, 0)
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += got as usize;
    }
    Ok(nonce)
}

/// Compares two proofs in time that does not depend on where they differ.
pub(crate) fn proofs_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK_BYTES];
    if key.len() > BLOCK_BYTES {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // A key longer than a block is hashed first (test case 6).
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn proofs_are_bound_to_side_nonces_and_secret() {
        let secret = LinkSecret::from_bytes(b"0123456789abcdef0123");
        let (engine, gateway) = (nonce().unwrap(), nonce().unwrap());
        assert!(nonce_ok(&engine) && engine != gateway);
        let proof = secret.gateway_proof(&engine, &gateway);
        assert!(proofs_equal(
            &proof,
            &secret.gateway_proof(&engine, &gateway)
        ));
        assert!(!proofs_equal(
            &proof,
            &secret.engine_proof(&engine, &gateway)
        ));
        assert!(!proofs_equal(
            &proof,
            &secret.gateway_proof(&gateway, &engine)
        ));
        let other = LinkSecret::from_bytes(b"0123456789abcdef0124");
        assert!(!proofs_equal(
            &proof,
            &other.gateway_proof(&engine, &gateway)
        ));
        assert_eq!(format!("{secret:?}"), "LinkSecret(..)");
    }
}
