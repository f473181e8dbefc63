//! Image references (`[registry/]name[:tag][@digest]`), parsed and validated
//! before anything touches the network.
//!
//! The rules are Docker's: the first path component is a registry when it
//! contains a `.` or a `:` or is `localhost`; otherwise the registry is
//! `docker.io` and a one-component name gets the `library/` prefix. The tag
//! defaults to `latest` unless a digest pins the image. Only `sha256`
//! digests are accepted, because those are the ones we can verify.

use std::fmt;

const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why an image reference was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid registry {0:?}")]
    Registry(String),
    #[error("invalid repository name {0:?} (lowercase letters, digits and . _ - separators)")]
    Name(String),
    #[error("repository name longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("invalid tag {0:?}")]
    Tag(String),
    #[error("invalid digest {0:?} (expected sha256:<64 hex digits>)")]
    Digest(String),
}

/// A validated image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `[registry/]name[:tag][@digest]`.
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        if input.trim().is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(parse_tag(&tag[1..])?))
            }
            None => (rest, None),
        };
        let (registry, repository) = split_registry(name)?;
        validate_repository(&repository)?;
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The reference in oci-client's terms.
    pub fn to_oci(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                digest.clone(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.clone())
            }
            (tag, None) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits off the registry if the first component is one (see module doc).
fn split_registry(name: &str) -> Result<(String, String), ReferenceError> {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            validate_registry(first)?;
            Ok((first.to_string(), rest.to_string()))
        }
        Some(_) => Ok((DEFAULT_REGISTRY.to_string(), name.to_string())),
        None => Ok((DEFAULT_REGISTRY.to_string(), format!("library/{name}"))),
    }
}

/// `host[:port]` where host is a DNS name or IPv4 address, or `[IPv6]`.
fn validate_registry(registry: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Registry(registry.to_string());
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(bad());
        }
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
        (host, port)
    };
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit());
    if host.is_empty() || !port.is_none_or(port_ok) {
        return Err(bad());
    }
    Ok(())
}

/// Components `[a-z0-9]+` joined by `.`, `_`, `__` or any number of `-`.
fn validate_repository(repository: &str) -> Result<(), ReferenceError> {
    if repository.len() > MAX_NAME_LEN {
        return Err(ReferenceError::NameTooLong);
    }
    let component_ok = |c: &str| {
        let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
        let bytes = c.as_bytes();
        if c.is_empty() || !c.starts_with(alnum) || !c.ends_with(alnum) {
            return false;
        }
        // Separators: a single '.', one or two '_', or a run of '-'.
        let mut i = 0;
        while i < bytes.len() {
            let ch = char::from(bytes[i]);
            if alnum(ch) {
                i += 1;
                continue;
            }
            let run = bytes[i..].iter().take_while(|&&b| b == bytes[i]).count();
            let ok = match ch {
                '.' => run == 1,
                '_' => run <= 2,
                '-' => true,
                _ => false,
            };
            if !ok {
                return false;
            }
            i += run;
        }
        true
    };
    if !repository.split('/').all(component_ok) {
        return Err(ReferenceError::Name(repository.to_string()));
    }
    Ok(())
}

fn parse_tag(tag: &str) -> Result<String, ReferenceError> {
    let ok = tag.len() <= MAX_TAG_LEN
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(ReferenceError::Tag(tag.to_string()));
    }
    Ok(tag.to_string())
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn parse_digest(digest: &str) -> Result<String, ReferenceError> {
    match sha256_hex(digest) {
        Some(_) => Ok(digest.to_string()),
        None => Err(ReferenceError::Digest(digest.to_string())),
    }
}

/// The hex part of a well-formed `sha256:HEX` digest. Registry-supplied
/// digests become file names in the blob store, so nothing else may pass.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    let ok = hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (registry, repository, tag, digest)
    type Parts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

    fn check(input: &str, expected: Result<Parts<'_>, ReferenceError>) {
        let got = ImageRef::parse(input);
        let expected = expected.map(|(registry, repository, tag, digest)| ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        });
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn valid_references() {
        let digested = format!("127.0.0.1:5000/app@{D}");
        let tagged_digested = format!("127.0.0.1:5000/app:v1@{D}");
        let cases: &[(&str, Parts<'_>)] = &[
            (
                "busybox",
                ("docker.io", "library/busybox", Some("latest"), None),
            ),
            (
                "busybox:1.36",
                ("docker.io", "library/busybox", Some("1.36"), None),
            ),
            ("user/app", ("docker.io", "user/app", Some("latest"), None)),
            (
                "127.0.0.1:5000/app",
                ("127.0.0.1:5000", "app", Some("latest"), None),
            ),
            (
                "127.0.0.1:5000/a/b:v1",
                ("127.0.0.1:5000", "a/b", Some("v1"), None),
            ),
            ("localhost/app:x", ("localhost", "app", Some("x"), None)),
            (
                "ghcr.io/o/r_x.y-z__w:V_1.0-rc",
                ("ghcr.io", "o/r_x.y-z__w", Some("V_1.0-rc"), None),
            ),
            (
                "[::1]:5000/app",
                ("[::1]:5000", "app", Some("latest"), None),
            ),
            (
                "10.0.2.2:5000/app",
                ("10.0.2.2:5000", "app", Some("latest"), None),
            ),
            (&digested, ("127.0.0.1:5000", "app", None, Some(D))),
            (
                &tagged_digested,
                ("127.0.0.1:5000", "app", Some("v1"), Some(D)),
            ),
        ];
        for (input, expected) in cases {
            check(input, Ok(*expected));
        }
    }

    #[test]
    fn invalid_references() {
        use ReferenceError::*;
        let long = format!("a/{}", "b".repeat(300));
        let cases: &[(&str, ReferenceError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("Busybox", Name("library/Busybox".into())),
            ("127.0.0.1:5000/", Name("".into())),
            ("127.0.0.1:5000/app:", Tag("".into())),
            ("app:bad/tag", Registry("app:bad".into())),
            ("app:-x", Tag("-x".into())),
            ("app@sha256:abc", Digest("sha256:abc".into())),
            ("app@md5:0123", Digest("md5:0123".into())),
            ("a..b/app", Registry("a..b".into())),
            ("host:port/app", Registry("host:port".into())),
            ("host:123456/app", Registry("host:123456".into())),
            ("a//b", Name("a//b".into())),
            ("a/b c", Name("a/b c".into())),
            ("a/b.", Name("a/b.".into())),
            ("a/b___c", Name("a/b___c".into())),
            ("a/../b", Name("a/../b".into())),
            (&long, NameTooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ImageRef::parse(input),
                Err(expected.clone()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["127.0.0.1:5000/a/b:v1", "docker.io/library/busybox:latest"] {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), input);
        }
    }

    #[test]
    fn sha256_hex_rejects_paths() {
        for (input, ok) in [
            (D, true),
            ("sha256:../../../../etc/passwd", false),
            (
                "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                false,
            ),
            ("sha512:00", false),
        ] {
            assert_eq!(sha256_hex(input).is_some(), ok, "{input}");
        }
    }
}
