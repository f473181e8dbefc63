//! A tiny bearer-token server for the registry's `auth: token:` mode, on
//! 127.0.0.1: `GET /token?service=S&scope=repository:NAME:ACTIONS` with HTTP
//! basic credentials answers `{"token": JWT}`; without them, or with wrong
//! ones, 401.
//!
//! The JWT is what distribution 2.8 (`registry/auth/token`) verifies: RS256
//! over `HEADER.CLAIMS`, the signing certificate in the header's `x5c`
//! chained to the registry's `rootcertbundle`, `iss` = the configured
//! issuer, `aud` = the service, `exp`/`nbf` around now, and an `access`
//! list naming the repository and the granted actions. Key, certificate
//! and signature are made by the `openssl` CLI.

use crate::http::base64;
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SERVICE: &str = "iguana-test-registry";
pub const ISSUER: &str = "iguana-test-token-server";

/// A running token server; its thread ends with the test process.
pub struct TokenServer {
    port: u16,
    cert: PathBuf,
    issued: Arc<AtomicUsize>,
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    password: String,
    issued: Arc<AtomicUsize>,
}

impl TokenServer {
    /// Makes an RSA key and certificate in `dir` and starts serving tokens
    /// to `user` with `password`.
    pub fn start(dir: &Path, user: &str, password: &str) -> anyhow::Result<TokenServer> {
        let (key, cert) = (dir.join("token-key.pem"), dir.join("token-cert.pem"));
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
                .args(["-subj", "/CN=iguana-test-token-server", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            None,
        )?;
        let der = openssl(
            Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert),
            None,
        )?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let issued = Arc::new(AtomicUsize::new(0));
        let signer = Signer {
            key,
            cert_der_b64: base64(&der),
            user: user.into(),
            password: password.into(),
            issued: issued.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(err) = signer.serve(stream) {
                    eprintln!("token server: {err:#}");
                }
            }
        });
        Ok(TokenServer { port, cert, issued })
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate the registry trusts (`rootcertbundle`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// How many tokens were issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Signer {
    fn serve(&self, mut stream: TcpStream) -> anyhow::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.trim().to_string());
                }
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let expected = format!("Basic {}", base64(format!("{}:{}", self.user, self.password).as_bytes()));
        let (status, body) = if authorization.as_deref() != Some(expected.as_str()) {
            ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string())
        } else {
            let token = self.token(query)?;
            self.issued.fetch_add(1, Ordering::SeqCst);
            ("200 OK", format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#))
        };
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(())
    }

    /// A JWT granting every scope asked for.
    fn token(&self, query: &str) -> anyhow::Result<String> {
        let mut access = Vec::new();
        for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            if key != "scope" {
                continue;
            }
            let scope = percent_decode(value);
            // repository:NAME:pull,push (NAME may hold no ':' here).
            let mut parts = scope.splitn(3, ':');
            let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
                bail!("bad scope {scope:?}");
            };
            let actions: Vec<&str> = actions.split(',').collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("iguana-{now}-{}", self.issued.load(Ordering::SeqCst)),
            "access": access,
        });
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = openssl(
            Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(&self.key),
            Some(input.as_bytes()),
        )?;
        Ok(format!("{input}.{}", b64url(&signature)))
    }
}

fn b64url(data: &[u8]) -> String {
    base64(data).trim_end_matches('=').replace('+', "-").replace('/', "_")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let v = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(v.unwrap_or(b'%'));
                i += if v.is_some() { 3 } else { 1 };
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs openssl with `input` on stdin; returns its stdout.
fn openssl(cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run openssl (apt-get install openssl)")?;
    let mut stdin = child.stdin.take().context("openssl stdin")?;
    stdin.write_all(input.unwrap_or_default())?;
    drop(stdin);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        for (input, expected) in [
            ("repository%3Ateam%2Fapp%3Apull%2Cpush", "repository:team/app:pull,push"),
            ("a+b", "a b"),
            ("bad%zz", "bad%zz"),
            ("cut%4", "cut%4"),
        ] {
            assert_eq!(percent_decode(input), expected, "{input}");
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url(b"{}"), "e30");
    }
}
