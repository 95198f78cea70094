//! Signed heads (docs/AUDIT.md): the store's Ed25519 key signs an account's head — its last
//! position and hash — so that an auditor who keeps a signed head can later prove that the
//! account's log was neither altered nor cut short after it.
//!
//! The key is a secret of the store, like the admin token: given as `CTXD_SIGNING_KEY` (base64
//! of its 32-byte seed) or `--signing-key-file`, so that several nodes sign with one key, or else
//! `<data dir>/signing-key`, created (mode 0600) on first start. It is never logged and never
//! exported; only its public half is shown.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};

/// Where the signing key comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    /// `<data dir>/signing-key`, created on first start.
    #[default]
    DataDir,
    /// Base64 of the 32-byte seed (`CTXD_SIGNING_KEY`).
    Given(String),
    /// A file holding that base64 text (`--signing-key-file`).
    File(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::DataDir => f.write_str("DataDir"),
            KeySource::Given(_) => f.write_str("Given(<secret>)"),
            KeySource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// The store's signing key.
pub struct HeadSigner {
    key: SigningKey,
}

impl fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadSigner").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

/// Why the signing key could not be had. Never holds the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the signing key {0} is not base64 of 32 bytes")]
    Malformed(String),
}

impl HeadSigner {
    /// Loads (or, for `KeySource::DataDir`, creates) the store's signing key.
    pub fn load(source: &KeySource, data_dir: &Path) -> Result<HeadSigner, KeyError> {
        let (text, what) = match source {
            KeySource::Given(text) => (text.clone(), "CTXD_SIGNING_KEY".to_string()),
            KeySource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| KeyError::Io(path.clone(), error))?;
                (text, path.display().to_string())
            }
            KeySource::DataDir => {
                let path = data_dir.join("signing-key");
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_key_file(&path)?,
                    Err(error) => return Err(KeyError::Io(path, error)),
                };
                (text, path.display().to_string())
            }
        };
        let seed: [u8; 32] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(KeyError::Malformed(what))?;
        Ok(HeadSigner { key: SigningKey::from_bytes(&seed) })
    }

    /// Base64 of the raw 32-byte public key.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// Base64 of the Ed25519 signature of `text`'s UTF-8 bytes.
    pub fn sign(&self, text: &str) -> String {
        STANDARD.encode(self.key.sign(text.as_bytes()).to_bytes())
    }
}

/// A new random seed in `path`, mode 0600; answers its text.
fn create_key_file(path: &Path) -> Result<String, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    let text = STANDARD.encode(seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |error| KeyError::Io(path.to_path_buf(), error);
    let mut file = options.open(path).map_err(io)?;
    if let Err(error) = file.write_all(text.as_bytes()).and_then(|()| file.sync_all()) {
        // A half-written key (a full disk) would be refused as malformed at every later start.
        let _ = std::fs::remove_file(path);
        return Err(io(error));
    }
    tracing::info!(path = %path.display(), "generated the store's head-signing key; it is in this file");
    Ok(text)
}

/// The exact text a head's signature covers: one `name: value` line each, in this order, ending
/// with a newline. An account id holds no control character, so no value spans two lines.
pub fn head_text(account: &str, seq: u64, hash_hex: &str, recorded_at: &str) -> String {
    format!(
        "ctxd signed head v1\naccount: {account}\nseq: {seq}\nhash: {hash_hex}\nrecorded_at: {recorded_at}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn a_key_is_created_once_with_mode_0600_and_signs_what_its_public_half_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let signer = HeadSigner::load(&KeySource::DataDir, dir.path()).unwrap();
        let again = HeadSigner::load(&KeySource::DataDir, dir.path()).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("signing-key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = head_text("acme", 7, &"ab".repeat(32), "2026-01-01T00:00:00.000000Z");
        let public: [u8; 32] = STANDARD.decode(signer.public_key()).unwrap().try_into().unwrap();
        let signature: [u8; 64] = STANDARD.decode(signer.sign(&text)).unwrap().try_into().unwrap();
        let key = VerifyingKey::from_bytes(&public).unwrap();
        key.verify(text.as_bytes(), &Signature::from_bytes(&signature)).unwrap();
        assert!(
            key.verify(text.replace("seq: 7", "seq: 6").as_bytes(), &Signature::from_bytes(&signature))
                .is_err()
        );
    }

    #[test]
    fn a_given_key_is_used_and_a_malformed_one_is_refused_without_being_shown() {
        let dir = tempfile::tempdir().unwrap();
        let seed = STANDARD.encode([7u8; 32]);
        let given = HeadSigner::load(&KeySource::Given(seed.clone()), dir.path()).unwrap();
        let file = dir.path().join("shared-key");
        std::fs::write(&file, format!("{seed}\n")).unwrap();
        assert_eq!(
            HeadSigner::load(&KeySource::File(file), dir.path()).unwrap().public_key(),
            given.public_key()
        );
        assert!(!dir.path().join("signing-key").exists(), "a given key creates no file");
        let error =
            HeadSigner::load(&KeySource::Given("c2VjcmV0".into()), dir.path()).unwrap_err().to_string();
        assert!(error.contains("CTXD_SIGNING_KEY") && !error.contains("c2VjcmV0"), "{error}");
        assert!(!format!("{:?}", KeySource::Given(seed.clone())).contains(&seed));
    }
}
