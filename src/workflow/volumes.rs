//! Volume specs of a workflow container, as upstream writes them.
//!
//! `name:/path` is a named volume (a directory under /run shared by every
//! container that names it, removed after the workflow), `/path` an anonymous
//! one (fresh for this container), `/host:/path` a bind mount of a host path.
//! Each may end in `:ro` or `:rw` (the default).

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Named(String),
    Anonymous,
    Host(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: Source,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0:?}: empty volume")]
    Empty(String),
    #[error("{spec:?}: container path {path:?} must be absolute")]
    Relative { spec: String, path: String },
    #[error("{spec:?}: volume name {name:?} must be 1-128 characters of a-z A-Z 0-9 _ . - starting with a letter, digit or _")]
    Name { spec: String, name: String },
    #[error("{spec:?}: {path:?} contains `..`")]
    DotDot { spec: String, path: String },
    #[error("{0:?}: expected name:/path, /path or /host:/path with an optional :ro or :rw")]
    Shape(String),
}

pub fn parse(spec: &str) -> Result<Volume, Error> {
    if spec.trim().is_empty() {
        return Err(Error::Empty(spec.to_string()));
    }
    let mut parts: Vec<&str> = spec.split(':').collect();
    let mut read_only = false;
    if parts.len() > 1 {
        match parts.last() {
            Some(&"ro") => {
                read_only = true;
                parts.pop();
            }
            Some(&"rw") => {
                parts.pop();
            }
            _ => {}
        }
    }
    let (source, target) = match parts.as_slice() {
        [target] => (Source::Anonymous, *target),
        [source, target] if source.starts_with('/') => (Source::Host(source.to_string()), *target),
        [name, target] => {
            if !super::name::valid(name) {
                return Err(Error::Name { spec: spec.to_string(), name: name.to_string() });
            }
            (Source::Named(name.to_string()), *target)
        }
        _ => return Err(Error::Shape(spec.to_string())),
    };
    if !target.starts_with('/') {
        return Err(Error::Relative { spec: spec.to_string(), path: target.to_string() });
    }
    for path in [Some(target), if let Source::Host(h) = &source { Some(h.as_str()) } else { None }].into_iter().flatten() {
        if path.split('/').any(|c| c == "..") {
            return Err(Error::DotDot { spec: spec.to_string(), path: path.to_string() });
        }
    }
    Ok(Volume { source, target: target.to_string(), read_only })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(source: Source, target: &str, read_only: bool) -> Result<Volume, Error> {
        Ok(Volume { source, target: target.into(), read_only })
    }

    #[test]
    fn parses_upstream_forms() {
        let named = |n: &str| Source::Named(n.into());
        let host = |h: &str| Source::Host(h.into());
        let cases: Vec<(&str, Result<Volume, Error>)> = vec![
            ("dbus_run:/run/agama", vol(named("dbus_run"), "/run/agama", false)),
            ("/mnt/volume", vol(Source::Anonymous, "/mnt/volume", false)),
            ("/srv/volume:/data", vol(host("/srv/volume"), "/data", false)),
            ("/etc/NetworkManager:/etc/NetworkManager:ro", vol(host("/etc/NetworkManager"), "/etc/NetworkManager", true)),
            ("cache:/var/cache:rw", vol(named("cache"), "/var/cache", false)),
            ("", Err(Error::Empty("".into()))),
            ("x:y", Err(Error::Relative { spec: "x:y".into(), path: "y".into() })),
            ("relative", Err(Error::Relative { spec: "relative".into(), path: "relative".into() })),
            ("a b:/x", Err(Error::Name { spec: "a b:/x".into(), name: "a b".into() })),
            ("..:/x", Err(Error::Name { spec: "..:/x".into(), name: "..".into() })),
            (".:/x:ro", Err(Error::Name { spec: ".:/x:ro".into(), name: ".".into() })),
            (".hidden:/x", Err(Error::Name { spec: ".hidden:/x".into(), name: ".hidden".into() })),
            ("-v:/x", Err(Error::Name { spec: "-v:/x".into(), name: "-v".into() })),
            ("_v.1-a:/x", vol(named("_v.1-a"), "/x", false)),
            ("/a:/b:/c", Err(Error::Shape("/a:/b:/c".into()))),
            ("/a:/b:rx", Err(Error::Shape("/a:/b:rx".into()))),
            ("/a/../etc:/b", Err(Error::DotDot { spec: "/a/../etc:/b".into(), path: "/a/../etc".into() })),
            ("n:/x/../..", Err(Error::DotDot { spec: "n:/x/../..".into(), path: "/x/../..".into() })),
        ];
        for (spec, want) in cases {
            assert_eq!(parse(spec), want, "{spec:?}");
        }
    }
}
