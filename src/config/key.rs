//! Where the API key comes from: a file, the environment, or systemd's
//! credential. Never from argv, where `ps` would show it.

use std::path::Path;

use super::{ApiKey, CREDENTIAL_NAME};
use crate::error::{Error, Result};

/// Finds the API key: `--api-key-file`, then `SONIOX_API_KEY`, then the
/// systemd credential.
pub(crate) fn load_api_key(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiKey> {
    if let Some(path) = file {
        return read_key_file(path);
    }
    if let Some(key) = env("SONIOX_API_KEY").filter(|k| !k.trim().is_empty()) {
        return Ok(ApiKey::new(&key));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.exists() {
            // Blank is no key: the shipped units give a blank default
            // (SetCredential=) for when the key file is absent, so that a
            // keyless local-engine unit can start.
            return match read_key_file(&path) {
                Err(Error::Config(_)) if is_blank(&path) => Err(Error::Config(format!(
                    "no API key: the systemd credential {CREDENTIAL_NAME} is blank \
                     (the shipped units load it from /etc/sttpipe/{CREDENTIAL_NAME})"
                ))),
                read => read,
            };
        }
    }
    Err(Error::Config(
        "no API key: set SONIOX_API_KEY or use --api-key-file PATH".into(),
    ))
}

/// Whether the file holds nothing but white space.
fn is_blank(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.iter().all(u8::is_ascii_whitespace))
}

fn read_key_file(path: &Path) -> Result<ApiKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read API key file {}: {e}", path.display())))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(Error::Config(format!(
            "API key file {} is empty",
            path.display()
        )));
    }
    Ok(ApiKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "cred-key\n").unwrap();
        let dir_str = dir.path().to_str().unwrap().to_owned();
        let creds_only = |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir_str.clone());
        assert_eq!(
            load_api_key(None, &creds_only).unwrap().expose(),
            "cred-key"
        );
        let env_key = |name: &str| match name {
            "SONIOX_API_KEY" => Some("env-key".to_owned()),
            _ => creds_only(name),
        };
        assert_eq!(load_api_key(None, &env_key).unwrap().expose(), "env-key");
        let file = dir.path().join("k");
        std::fs::write(&file, "file-key\nignored").unwrap();
        assert_eq!(
            load_api_key(Some(&file), &env_key).unwrap().expose(),
            "file-key"
        );
        assert!(matches!(
            load_api_key(None, &|_| None),
            Err(Error::Config(_))
        ));
        // The units' blank default credential: no key, said as such.
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "\n").unwrap();
        match load_api_key(None, &creds_only) {
            Err(Error::Config(message)) => {
                assert!(message.starts_with("no API key: "), "{message}");
                assert!(message.contains("/etc/sttpipe/soniox-api-key"), "{message}");
            }
            other => panic!("a blank credential gave {other:?}"),
        }
        assert_eq!(format!("{:?}", ApiKey::new("secret")), "ApiKey(<redacted>)");
    }
}
