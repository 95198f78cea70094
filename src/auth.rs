//! Secrets: API keys and the admin token. Only their sha256 is ever compared or stored.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// sha256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS random source is available");
    hex::encode(buffer)
}

/// A new API key and its public id (the id is recorded as the actor of its writes).
pub struct NewKey {
    pub key: String,
    pub key_id: String,
    pub key_hash: String,
}

pub fn generate_api_key() -> NewKey {
    let key_id = random_hex(6);
    let key = format!("ctxd_{key_id}_{}", random_hex(24));
    NewKey { key_hash: hash_secret(&key), key, key_id }
}

/// The admin token: `CTXD_ADMIN_TOKEN` if given, else `<data dir>/admin-token`, created (mode 0600)
/// with a random token on first start. Returns the token's hash. An empty token, given or in the
/// file, is refused (an admin API that nobody can use would start silently), and every error
/// names the file.
pub fn admin_token_hash(configured: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    if let Some(token) = configured {
        if token.trim().is_empty() {
            return Err(invalid("the admin token given (CTXD_ADMIN_TOKEN / --admin-token) is empty".into()));
        }
        return Ok(hash_secret(token));
    }
    let path = data_dir.join("admin-token");
    let named =
        |error: std::io::Error| std::io::Error::new(error.kind(), format!("{}: {error}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().is_empty() => Err(invalid(format!(
            "the admin token file {} is empty (a start on a full disk may have left it so): \
             write a token into it, or delete it to have one generated",
            path.display()
        ))),
        Ok(token) => Ok(hash_secret(token.trim())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let token = random_hex(32);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let written = options.open(&path).and_then(|mut file| {
                file.write_all(token.as_bytes())?;
                file.sync_all()
            });
            if let Err(error) = written {
                // No half-written token for the next start to accept.
                let _ = std::fs::remove_file(&path);
                return Err(named(error));
            }
            tracing::info!(path = %path.display(), "generated an admin token; it is in this file");
            Ok(hash_secret(&token))
        }
        Err(error) => Err(named(error)),
    }
}
