//! The image config blob: the runtime fields iguana passes to the container
//! and the layers' uncompressed digests (`rootfs.diff_ids`).
//!
//! Parsed leniently with our own types rather than oci-spec's: Docker
//! writes `null` for empty lists and omits fields freely, and only a few
//! fields matter here.

use serde::{Deserialize, Serialize};

/// What the container runtime needs from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A parsed config blob.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub config: ImageConfig,
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    config: Option<RawRuntime>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntime {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses a config blob.
pub fn parse(blob: &[u8]) -> Result<Parsed, serde_json::Error> {
    let raw: Raw = serde_json::from_slice(blob)?;
    let runtime = raw.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(Parsed {
        config: ImageConfig {
            entrypoint: runtime.entrypoint.unwrap_or_default(),
            cmd: runtime.cmd.unwrap_or_default(),
            env: runtime.env.unwrap_or_default(),
            working_dir: non_empty(runtime.working_dir),
            user: non_empty(runtime.user),
        },
        diff_ids: raw.rootfs.diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(blob: &str, expected: Option<(ImageConfig, &[&str])>) {
        let got = parse(blob.as_bytes()).ok();
        let expected = expected.map(|(config, ids)| Parsed {
            config,
            diff_ids: ids.iter().map(|s| s.to_string()).collect(),
        });
        assert_eq!(got, expected, "blob {blob}");
    }

    #[test]
    fn configs() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        check(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","/run.sh"],
                "Cmd":["x"],"Env":["PATH=/bin"],"WorkingDir":"/srv","User":"1000:1000"},
                "rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}"#,
            Some((
                ImageConfig {
                    entrypoint: v(&["/bin/sh", "/run.sh"]),
                    cmd: v(&["x"]),
                    env: v(&["PATH=/bin"]),
                    working_dir: Some("/srv".into()),
                    user: Some("1000:1000".into()),
                },
                &["sha256:aa", "sha256:bb"],
            )),
        );
        // Docker style: nulls and empty strings mean "unset".
        check(
            r#"{"config":{"Entrypoint":null,"Cmd":null,"Env":null,"WorkingDir":"","User":""},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
            Some((ImageConfig::default(), &[])),
        );
        check(
            r#"{"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
            Some((ImageConfig::default(), &["sha256:aa"])),
        );
        check(r#"{"config":{}}"#, None);
        check("not json", None);
        check(
            r#"{"config":{"Entrypoint":"/bin/sh"},"rootfs":{"diff_ids":[]}}"#,
            None,
        );
    }
}
