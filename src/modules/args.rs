//! What the kernel command line asks of module loading: modules never to
//! autoload (`rd.driver.blacklist=`, `modprobe.blacklist=`) and parameters
//! for modules we load (`<module>.<param>=<value>`).
//!
//! The kernel applies `<module>.<param>=` itself only to built-in modules;
//! for loadable ones it is modprobe's job (kmod reads `/proc/cmdline`), so it
//! is ours here. Parsing is pure; names with `-` and `_` are the same module.

use std::collections::{BTreeMap, BTreeSet};

use super::index::normalize;
use crate::cmdline::split;

const BLACKLIST_KEYS: &[&str] = &["rd.driver.blacklist", "modprobe.blacklist"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{key}: {item:?} is not a module name")]
    BlacklistName { key: String, item: String },
}

/// Blacklist and parameters, with module names in canonical (`_`) form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Policy {
    pub blacklist: BTreeSet<String>,
    /// Parameters per module, in command-line order, as `finit_module`
    /// takes them (`name=value`, or a bare `name` for a boolean).
    pub params: BTreeMap<String, Vec<String>>,
}

impl Policy {
    pub fn is_blacklisted(&self, module: &str) -> bool {
        self.blacklist.contains(&normalize(module))
    }

    /// The parameter string for `finit_module`, empty when none were given.
    pub fn params_for(&self, module: &str) -> String {
        self.params
            .get(&normalize(module))
            .map(|params| params.join(" "))
            .unwrap_or_default()
    }
}

/// Parses a whole kernel command line. Both blacklist keys are repeatable
/// and take comma-separated lists, as in dracut; empty items are skipped.
pub fn parse(line: &str) -> Result<Policy, Error> {
    let mut policy = Policy::default();
    for (key, value) in split(line) {
        if BLACKLIST_KEYS.contains(&key.as_str()) {
            for item in value.as_deref().unwrap_or("").split(',') {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                if !is_module_name(item) {
                    return Err(Error::BlacklistName { key, item: item.to_owned() });
                }
                policy.blacklist.insert(normalize(item));
            }
        } else if let Some((module, param)) = module_param(&key) {
            policy.params.entry(module).or_default().push(param_text(param, value.as_deref()));
        }
    }
    Ok(policy)
}

/// `virtio-net.napi_tx` → `("virtio_net", "napi_tx")`. dracut's own `rd.*`
/// keys are skipped, as are keys whose first part cannot be a module.
fn module_param(key: &str) -> Option<(String, &str)> {
    let (module, param) = key.split_once('.')?;
    if module == "rd" || !is_module_name(module) || param.is_empty() {
        return None;
    }
    if param.chars().any(|c| c.is_whitespace() || c == '"' || c.is_control()) {
        return None;
    }
    Some((normalize(module), param))
}

/// A value with spaces goes back in quotes: the kernel's `parse_args`
/// splits the parameter string the same way it splits the command line.
fn param_text(param: &str, value: Option<&str>) -> String {
    match value {
        None => param.to_owned(),
        Some(v) if v.chars().any(char::is_whitespace) => format!("{param}=\"{v}\""),
        Some(v) => format!("{param}={v}"),
    }
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 55 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(blacklist, [(module, parameter string)])`, or the error text.
    type Expected<'a> = Result<(&'a [&'a str], &'a [(&'a str, &'a str)]), &'a str>;

    fn check(line: &str, expected: Expected) {
        let policy = parse(line);
        let got = match &policy {
            Ok(p) => Ok((
                p.blacklist.iter().map(String::as_str).collect::<Vec<_>>(),
                p.params.keys().map(|m| (m.clone(), p.params_for(m))).collect::<Vec<_>>(),
            )),
            Err(e) => Err(e.to_string()),
        };
        let expected = expected.map(|(b, p)| {
            (b.to_vec(), p.iter().map(|(m, s)| ((*m).to_owned(), (*s).to_owned())).collect::<Vec<_>>())
        });
        assert_eq!(got, expected.map_err(str::to_owned), "parse({line:?})");
    }

    #[test]
    fn blacklists_and_params() {
        check("", Ok((&[], &[])));
        check(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 rd.iguana.debug rd.driver.blacklist=virtio-blk,nouveau",
            Ok((&["nouveau", "virtio_blk"], &[])),
        );
        // Repeatable, both keys, empty items and values skipped.
        check(
            "rd.driver.blacklist=a rd.driver.blacklist=b,,c, modprobe.blacklist=d rd.driver.blacklist=",
            Ok((&["a", "b", "c", "d"], &[])),
        );
        check(
            "virtio-net.napi_tx=0 loop.max_loop=4 virtio_net.csum=1 e1000e.debug",
            Ok((&[], &[("e1000e", "debug"), ("loop", "max_loop=4"), ("virtio_net", "napi_tx=0 csum=1")])),
        );
        // The kernel's splitter removed the quotes; they come back for spaces.
        check(r#"dummy.names="a b" x.y="z""#, Ok((&[], &[("dummy", "names=\"a b\""), ("x", "y=z")])));
        // Not module parameters: dracut keys, no module part, no parameter.
        check("rd.iguana.net_timeout=5 .x=1 mod.=1 a/b.c=1 ip=dhcp", Ok((&[], &[])));
        check(
            "rd.driver.blacklist=virtio_blk,../evil",
            Err(r#"rd.driver.blacklist: "../evil" is not a module name"#),
        );
        check("modprobe.blacklist=a\"b", Err(r#"modprobe.blacklist: "a\"b" is not a module name"#));
    }

    #[test]
    fn lookups_normalize_names() {
        let policy = parse("rd.driver.blacklist=virtio-blk virtio-net.napi_tx=0").unwrap();
        assert!(policy.is_blacklisted("virtio_blk"));
        assert!(policy.is_blacklisted("virtio-blk"));
        assert!(!policy.is_blacklisted("virtio_net"));
        assert_eq!(policy.params_for("virtio-net"), "napi_tx=0");
        assert_eq!(policy.params_for("virtio_blk"), "");
    }
}
