//! Registry credentials from a docker-style `auth.json`:
//! `{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}`, or with
//! `username`/`password` fields instead of `auth`.
//!
//! Keys may be written as docker writes them (`https://index.docker.io/v1/`):
//! the scheme and any path are dropped before matching the registry of the
//! image reference. Passwords never reach a log line or an error message:
//! [`Credentials`] redacts itself in `Debug`, and errors name only the file
//! and the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The default auth file in the initrd.
pub const DEFAULT_AUTH_FILE: &str = "/etc/iguana/auth.json";

/// A user and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("read auth file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// serde_json's message names line and column, never the content.
    #[error("auth file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// The credentials of an auth file, by registry (`HOST[:PORT]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFile {
    by_registry: BTreeMap<String, Credentials>,
}

#[derive(serde::Deserialize)]
struct Raw {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl AuthFile {
    /// Reads `path`. A missing file is no credentials when it is the
    /// default one (`required` false), an error when it was asked for.
    pub fn load(path: &Path, required: bool) -> Result<AuthFile, AuthError> {
        match std::fs::read(path) {
            Ok(text) => AuthFile::parse(&text).map_err(|reason| AuthError::Parse {
                path: path.to_path_buf(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(AuthFile::default())
            }
            Err(source) => Err(AuthError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses the JSON text of an auth file.
    pub fn parse(text: &[u8]) -> Result<AuthFile, String> {
        let raw: Raw = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let mut by_registry = BTreeMap::new();
        for (key, entry) in raw.auths {
            let registry = normalize(&key);
            let creds = match (entry.auth, entry.username, entry.password) {
                (_, Some(username), Some(password)) => Credentials { username, password },
                (Some(auth), _, _) => decode_auth(&auth)
                    .ok_or_else(|| format!("registry {registry}: \"auth\" is not base64 of user:password"))?,
                _ => return Err(format!("registry {registry}: no \"auth\" and no username/password")),
            };
            by_registry.insert(registry, creds);
        }
        Ok(AuthFile { by_registry })
    }

    /// The credentials for `registry` (as in image references), if any.
    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        let registry = normalize(registry);
        self.by_registry.get(&registry).or_else(|| {
            // Docker Hub goes by several names.
            const HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];
            if HUB.contains(&registry.as_str()) {
                HUB.iter().find_map(|h| self.by_registry.get(*h))
            } else {
                None
            }
        })
    }
}

/// `https://Host:5000/v1/` -> `host:5000`.
fn normalize(key: &str) -> String {
    let key = key.trim();
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let key = key.split('/').next().unwrap_or(key);
    key.to_ascii_lowercase()
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let text = String::from_utf8(base64_decode(auth.trim())?).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Standard base64 with optional padding; `None` on any other character.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    fn check(text: &str, registry: &str, expected: Result<Option<Credentials>, &str>) {
        let got = AuthFile::parse(text.as_bytes()).map(|a| a.get(registry).cloned());
        match (&got, &expected) {
            (Err(g), Err(e)) => assert!(g.starts_with(e), "{text}: {g}"),
            _ => assert_eq!(got, expected.map_err(String::from), "{text}"),
        }
    }

    #[test]
    fn auth_files() {
        // base64("user:pa:ss") — a password may hold ':'.
        let a = r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="}}}"#;
        check(a, "127.0.0.1:5000", Ok(Some(creds("user", "pa:ss"))));
        check(a, "127.0.0.1:5001", Ok(None));
        check(
            r#"{"auths":{"https://Reg.example:443/v2/":{"username":"u","password":"p"}}}"#,
            "reg.example:443",
            Ok(Some(creds("u", "p"))),
        );
        check(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#,
            "docker.io",
            Ok(Some(creds("u", "p"))),
        );
        check(r#"{}"#, "x", Ok(None));
        check(r#"{"auths":{"x":{"auth":"!!"}}}"#, "x", Err("registry x: \"auth\" is not base64"));
        check(r#"{"auths":{"x":{"auth":"eA=="}}}"#, "x", Err("registry x: \"auth\" is not base64"));
        check(r#"{"auths":{"x":{}}}"#, "x", Err("registry x: no \"auth\""));
        check("not json", "x", Err("expected ident"));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let c = creds("alice", "s3cret");
        assert_eq!(format!("{c:?}"), "Credentials(\"alice\", <redacted>)");
        let err = AuthFile::parse(br#"{"auths":{"x":{"auth":"s3cret!"}}}"#).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn missing_default_file_is_anonymous() {
        let missing = Path::new("/nonexistent/auth.json");
        assert_eq!(AuthFile::load(missing, false).unwrap(), AuthFile::default());
        let err = AuthFile::load(missing, true).unwrap_err();
        assert_eq!(err.to_string(), "read auth file /nonexistent/auth.json");
    }
}
