//! HMAC keys for signing and verifying decisions, from the environment or
//! files only (never from the pipeline config, which is not a secret).
//!
//! | variable | meaning |
//! | --- | --- |
//! | `SAVE_HMAC_SECRET` | the signing secret (at least 16 bytes) |
//! | `SAVE_HMAC_SECRET_FILE` | a file holding it instead (one trailing newline is ignored) |
//! | `SAVE_HMAC_KEY_ID` | its key id; default `k-` + 12 hex digits derived from the secret |
//! | `TOLLGATE_VERIFY_KEYS_FILE` | JSON object `{"<key id>": "<secret>", ...}`: retired keys still accepted when verifying |

use std::path::Path;

use tollgate_decision::{Key, KeyError, KeyRing};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("no signing secret: set SAVE_HMAC_SECRET (at least {} bytes) or SAVE_HMAC_SECRET_FILE. Decisions are HMAC-signed; tollgate does not run unsigned", tollgate_decision::MIN_SECRET_BYTES)]
    Missing,
    #[error("SAVE_HMAC_SECRET and SAVE_HMAC_SECRET_FILE are both set; set one")]
    Ambiguous,
    #[error("cannot read {var} file {path}: {source}")]
    Read {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var}: {source}")]
    Key { var: &'static str, source: KeyError },
}

fn read_secret_file(var: &'static str, path: &str) -> Result<Vec<u8>, KeysError> {
    let mut bytes = std::fs::read(Path::new(path)).map_err(|source| KeysError::Read {
        var,
        path: path.to_owned(),
        source,
    })?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

/// The signing key, if one is configured.
pub fn signing_key(env: &impl Fn(&str) -> Option<String>) -> Result<Option<Key>, KeysError> {
    let inline = env("SAVE_HMAC_SECRET").filter(|s| !s.is_empty());
    let file = env("SAVE_HMAC_SECRET_FILE").filter(|s| !s.is_empty());
    let secret = match (inline, file) {
        (Some(_), Some(_)) => return Err(KeysError::Ambiguous),
        (Some(s), None) => s.into_bytes(),
        (None, Some(path)) => read_secret_file("SAVE_HMAC_SECRET_FILE", &path)?,
        (None, None) => return Ok(None),
    };
    let var = "SAVE_HMAC_SECRET";
    let key = match env("SAVE_HMAC_KEY_ID").filter(|s| !s.is_empty()) {
        Some(id) => Key::new(id, secret),
        None => Key::with_derived_id(secret),
    };
    key.map(Some)
        .map_err(|source| KeysError::Key { var, source })
}

/// Keys accepted for verification besides the signing key.
pub fn verification_keys(env: &impl Fn(&str) -> Option<String>) -> Result<Vec<Key>, KeysError> {
    let var = "TOLLGATE_VERIFY_KEYS_FILE";
    let Some(path) = env(var).filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    let text = read_secret_file(var, &path)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| KeysError::Invalid {
            var,
            message: format!("expected a JSON object {{\"<key id>\": \"<secret>\"}}: {e}"),
        })?;
    map.into_iter()
        .map(|(id, secret)| {
            let secret = secret.as_str().ok_or_else(|| KeysError::Invalid {
                var,
                message: format!("the secret of key {id:?} is not a string"),
            })?;
            Key::new(id, secret).map_err(|source| KeysError::Key { var, source })
        })
        .collect()
}

/// Everything configured. With `require_signing`, a missing signing secret
/// is an error: the service fails closed.
pub fn key_ring(
    env: &impl Fn(&str) -> Option<String>,
    require_signing: bool,
) -> Result<KeyRing, KeysError> {
    let signing = signing_key(env)?;
    if require_signing && signing.is_none() {
        return Err(KeysError::Missing);
    }
    let verify = verification_keys(env)?;
    KeyRing::new(signing, verify).map_err(|source| KeysError::Key {
        var: "TOLLGATE_VERIFY_KEYS_FILE",
        source,
    })
}

/// [`key_ring`] from the process environment.
pub fn from_process_env(require_signing: bool) -> Result<KeyRing, KeysError> {
    key_ring(&|k| std::env::var(k).ok(), require_signing)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn signing_is_required_when_asked_and_the_message_says_how() {
        let e = key_ring(&env(&[]), true).unwrap_err().to_string();
        assert!(e.contains("SAVE_HMAC_SECRET"), "{e}");
        assert!(key_ring(&env(&[]), false).unwrap().signing().is_none());
        let e = key_ring(&env(&[("SAVE_HMAC_SECRET", "short")]), true).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
    }

    #[test]
    fn secrets_from_env_or_files_with_ids_and_retired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "file-secret-0123456789\n").unwrap();
        let keys = dir.path().join("keys.json");
        std::fs::write(&keys, r#"{"k-2025": "an-old-secret-0123456789"}"#).unwrap();
        let ring = key_ring(
            &env(&[
                ("SAVE_HMAC_SECRET_FILE", secret.to_str().unwrap()),
                ("SAVE_HMAC_KEY_ID", "k-2026"),
                ("TOLLGATE_VERIFY_KEYS_FILE", keys.to_str().unwrap()),
            ]),
            true,
        )
        .unwrap();
        let signing = ring.signing().unwrap();
        assert_eq!(signing.id(), "k-2026");
        let same = Key::new("k-2026", "file-secret-0123456789").unwrap();
        assert_eq!(
            signing.sign(b"x"),
            same.sign(b"x"),
            "trailing newline dropped"
        );
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k-2025", "k-2026"]);

        let e = key_ring(
            &env(&[
                ("SAVE_HMAC_SECRET", "a-secret-long-enough"),
                ("SAVE_HMAC_SECRET_FILE", "x"),
            ]),
            true,
        )
        .unwrap_err();
        assert!(matches!(e, KeysError::Ambiguous));
    }
}
