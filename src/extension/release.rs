//! os-release and extension-release files, and whether an extension fits
//! this initrd (pure).
//!
//! The rules are systemd-sysext's (os-release(5), systemd-sysext(8)): the
//! extension's `ID=` must be the initrd's or `_any`; when it is not `_any`,
//! `IGUANA_LEVEL=` (our `SYSEXT_LEVEL=`) must equal the initrd's when the
//! extension gives one, else `VERSION_ID=` must.

use std::collections::BTreeMap;

/// `KEY=VALUE` fields of an os-release style file.
pub type Fields = BTreeMap<String, String>;

/// The file an extension named NAME carries, relative to its root.
pub fn release_path(name: &str) -> String {
    format!("usr/lib/extension-release.d/extension-release.{name}")
}

/// The confext form, for an extension that only carries `etc/`.
pub fn confext_release_path(name: &str) -> String {
    format!("etc/extension-release.d/extension-release.{name}")
}

/// Parses `KEY=VALUE` lines; `#` comments and blank lines are skipped,
/// one level of single or double quotes is removed (shell-like, without
/// expansion). Lines that are not assignments are ignored, as systemd does.
pub fn parse(text: &str) -> Fields {
    let mut fields = Fields::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        fields.insert(key.to_string(), unquoted.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    fields
}

/// Why an extension does not fit this initrd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("its release file has no ID=")]
    NoId,
    #[error("ID={ext} does not match this initrd's ID={host}")]
    Id { ext: String, host: String },
    #[error("IGUANA_LEVEL={ext} does not match this initrd's IGUANA_LEVEL={host}")]
    Level { ext: String, host: String },
    #[error("VERSION_ID={ext} does not match this initrd's VERSION_ID={host}")]
    Version { ext: String, host: String },
    #[error("its release file has neither IGUANA_LEVEL= nor VERSION_ID= (or ID=_any)")]
    NoLevel,
}

/// Whether an extension with release fields `ext` may be merged into an
/// initrd whose `/usr/lib/os-release` has `host`.
pub fn check(host: &Fields, ext: &Fields) -> Result<(), Mismatch> {
    let get = |f: &Fields, k: &str| f.get(k).cloned().unwrap_or_default();
    let id = ext.get("ID").ok_or(Mismatch::NoId)?;
    if id == "_any" {
        return Ok(());
    }
    if *id != get(host, "ID") {
        return Err(Mismatch::Id { ext: id.clone(), host: get(host, "ID") });
    }
    if let Some(level) = ext.get("IGUANA_LEVEL").or_else(|| ext.get("SYSEXT_LEVEL")) {
        let host_level = host.get("IGUANA_LEVEL").or_else(|| host.get("SYSEXT_LEVEL")).cloned().unwrap_or_default();
        return if *level == host_level { Ok(()) } else { Err(Mismatch::Level { ext: level.clone(), host: host_level }) };
    }
    if let Some(version) = ext.get("VERSION_ID") {
        return if *version == get(host, "VERSION_ID") {
            Ok(())
        } else {
            Err(Mismatch::Version { ext: version.clone(), host: get(host, "VERSION_ID") })
        };
    }
    Err(Mismatch::NoLevel)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "NAME=iguana\nID=iguana\nVERSION_ID=0.1.0\nIGUANA_LEVEL=1\n";

    fn check_parse(text: &str, want: &[(&str, &str)]) {
        let got = parse(text);
        let want: Fields = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want, "{text:?}");
    }

    #[test]
    fn parses_os_release() {
        check_parse(HOST, &[("NAME", "iguana"), ("ID", "iguana"), ("VERSION_ID", "0.1.0"), ("IGUANA_LEVEL", "1")]);
        check_parse("# comment\n\nID=\"iguana\"\nPRETTY_NAME='a b'\n", &[("ID", "iguana"), ("PRETTY_NAME", "a b")]);
        check_parse("  ID = iguana  \nnot an assignment\n=x\nA-B=c\n", &[("ID", "iguana")]);
        check_parse("NAME=\"say \\\"hi\\\"\"\n", &[("NAME", "say \"hi\"")]);
        check_parse("ID=a\nID=b\n", &[("ID", "b")]);
    }

    #[test]
    fn fits_this_initrd() {
        let cases: &[(&str, Result<(), Mismatch>)] = &[
            ("ID=iguana\nIGUANA_LEVEL=1\n", Ok(())),
            ("ID=_any\n", Ok(())),
            ("ID=iguana\nVERSION_ID=0.1.0\n", Ok(())),
            ("ID=iguana\nSYSEXT_LEVEL=1\n", Ok(())),
            // The level decides when both are given.
            ("ID=iguana\nIGUANA_LEVEL=1\nVERSION_ID=9\n", Ok(())),
            ("ID=fedora\nIGUANA_LEVEL=1\n", Err(Mismatch::Id { ext: "fedora".into(), host: "iguana".into() })),
            ("ID=iguana\nIGUANA_LEVEL=2\n", Err(Mismatch::Level { ext: "2".into(), host: "1".into() })),
            ("ID=iguana\nVERSION_ID=0.2.0\n", Err(Mismatch::Version { ext: "0.2.0".into(), host: "0.1.0".into() })),
            ("ID=iguana\n", Err(Mismatch::NoLevel)),
            ("IGUANA_LEVEL=1\n", Err(Mismatch::NoId)),
            ("", Err(Mismatch::NoId)),
        ];
        let host = parse(HOST);
        for (ext, want) in cases {
            assert_eq!(check(&host, &parse(ext)), *want, "{ext:?}");
        }
    }

    #[test]
    fn mismatch_lines() {
        let e = check(&parse(HOST), &parse("ID=fedora\nVERSION_ID=40\n")).unwrap_err();
        assert_eq!(e.to_string(), "ID=fedora does not match this initrd's ID=iguana");
    }
}
