//! The workflow file: upstream iguana-workflow's schema, parsed and validated.
//!
//! `parse` is pure: text in, a validated `Workflow` or an error out. YAML
//! syntax errors and unknown keys carry serde_yaml's line and column; errors
//! found after parsing name the key path (`jobs.install.needs`). Every key of
//! upstream's schema is kept; our additions are `jobs.<id>.timeout` and the
//! top-level `expires:` (RFC 3339, see `expires.rs`).

use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::expires::Expires;
use super::name;
use super::volumes::{self, Volume};

/// A parsed, validated workflow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Ours: after this time (RFC 3339) the workflow is refused.
    pub expires: Option<Expires>,
    #[serde(default)]
    pub env: Env,
    pub jobs: Unique<Job>,
    /// Ours: where status events go (`rd.iguana.report_url=` wins).
    pub report: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub container: Container,
    #[serde(default)]
    pub services: Unique<Container>,
    #[serde(default)]
    pub needs: Needs,
    #[serde(default)]
    pub continue_on_error: bool,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Ours: `30s`, `10m`, `1h` or plain seconds.
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub image: String,
    #[serde(default)]
    pub env: Env,
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// Upstream's steps: accepted and validated, not executed (see README).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: Option<String>,
    pub run: Option<String>,
    pub uses: Option<String>,
    pub with: Option<serde_yaml::Value>,
    #[serde(default)]
    pub env: Env,
}

/// `needs: a` or `needs: [a, b]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct Needs(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Needs {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => Needs(vec![s]),
            OneOrMany::Many(v) => Needs(v),
        }
    }
}

/// Environment: YAML scalars (strings, numbers, booleans) as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(pub IndexMap<String, String>);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        let map: Option<Unique<Scalar>> = Option::deserialize(d)?;
        let map = map.map(|m| m.0).unwrap_or_default();
        Ok(Env(map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Scalar::S(s) => s,
                    Scalar::I(i) => i.to_string(),
                    Scalar::F(f) => f.to_string(),
                    Scalar::B(b) => b.to_string(),
                };
                (k, v)
            })
            .collect()))
    }
}

impl Env {
    /// `KEY=value` entries in file order.
    pub fn entries(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// An ordered map that rejects a repeated key, where YAML itself would
/// silently keep the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct Unique<T>(pub IndexMap<String, T>);

impl<T> Default for Unique<T> {
    fn default() -> Self {
        Unique(IndexMap::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Unique<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Unique<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Unique::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = IndexMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(Unique(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("not UTF-8 text (bad byte at offset {0})")]
    NotText(usize),
    #[error("{0}")]
    Yaml(String),
    #[error("jobs: no jobs")]
    NoJobs,
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Parses and validates a workflow file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Workflow, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::NotText(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(Error::Yaml("empty file: a workflow needs at least `jobs`".into()));
    }
    // Aliases replay their anchor: measure what the document expands to
    // before anything is allocated for it.
    let budget = std::cell::Cell::new(MAX_EXPANDED);
    // Any other error is left to the typed parse below, which says it
    // better (`expected a map`).
    if let Err(e) = de::DeserializeSeed::deserialize(Budget(&budget), serde_yaml::Deserializer::from_str(text)) {
        if budget.get() == 0 {
            return Err(Error::Yaml(e.to_string()));
        }
    }
    let workflow: Workflow = serde_yaml::from_str(text).map_err(|e| Error::Yaml(e.to_string()))?;
    validate(&workflow)?;
    Ok(workflow)
}

/// What a workflow may expand to once YAML aliases are replayed: scalar
/// bytes plus one per node. A file is at most 1 MiB; an anchor named many
/// times (YAML's "billion laughs") must not make PID 1 allocate gigabytes.
const MAX_EXPANDED: usize = 4 << 20;

/// A visitor that walks any YAML document, aliases replayed as serde_yaml
/// does, spending `budget` on every node and scalar byte and allocating
/// nothing; it fails as soon as the budget is gone.
struct Budget<'a>(&'a std::cell::Cell<usize>);

impl Budget<'_> {
    fn spend<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.0.get().checked_sub(bytes.saturating_add(1)) {
            Some(left) => Ok(self.0.set(left.max(1))),
            None => Err({
                // 0 marks "out of budget" for the caller.
                self.0.set(0);
                E::custom(format_args!(
                "expands to more than {} MiB once YAML aliases are replayed",
                MAX_EXPANDED >> 20
                ))
            }),
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.spend(8)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.spend(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.spend(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.spend(0)?;
        de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.spend(0)?;
        de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while seq.next_element_seed(Budget(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend(0)?;
        while map.next_key_seed(Budget(self.0))?.is_some() {
            map.next_value_seed(Budget(self.0))?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        self.spend(0)?;
        let ((), variant) = data.variant_seed(Budget(self.0))?;
        variant.newtype_variant_seed(Budget(self.0))
    }
}

fn invalid(path: String, message: impl Into<String>) -> Error {
    Error::Invalid { path, message: message.into() }
}

fn validate(w: &Workflow) -> Result<(), Error> {
    if w.jobs.0.is_empty() {
        return Err(Error::NoJobs);
    }
    if let Some(url) = &w.report {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(char::is_whitespace) {
            return Err(invalid("report".into(), format!("{:?} is not an http:// or https:// URL", crate::redact::redact_url(url))));
        }
    }
    for (i, (id, job)) in w.jobs.0.iter().enumerate() {
        let path = format!("jobs.{id}");
        if !name::valid(id) {
            return Err(invalid(path, format!("job id {id:?} {}", name::RULE)));
        }
        container(&format!("{path}.container"), &job.container)?;
        for (sid, svc) in &job.services.0 {
            let path = format!("{path}.services.{sid}");
            if !name::valid(sid) {
                return Err(invalid(path, format!("service id {sid:?} {}", name::RULE)));
            }
            service_name(w, &path, id, sid)?;
            container(&path, svc)?;
        }
        for need in &job.needs.0 {
            match w.jobs.0.get_index_of(need) {
                None => return Err(invalid(format!("{path}.needs"), format!("unknown job {need:?}"))),
                Some(j) if j >= i => {
                    return Err(invalid(format!("{path}.needs"), format!("job {need:?} does not run before {id:?}")))
                }
                Some(_) => {}
            }
        }
        for (n, step) in job.steps.iter().enumerate() {
            if step.run.is_none() && step.uses.is_none() {
                return Err(invalid(format!("{path}.steps[{n}]"), "a step needs `run` or `uses`"));
            }
        }
        if let Some(t) = &job.timeout {
            duration(t).map_err(|m| invalid(format!("{path}.timeout"), m))?;
        }
    }
    Ok(())
}

/// A service runs as the container `<job>-<service>`, which names its image
/// directory, its log and its cgroup: it must follow the rule too, and be
/// no other container's name.
fn service_name(w: &Workflow, path: &str, id: &str, sid: &str) -> Result<(), Error> {
    let composed = format!("{id}-{sid}");
    if !name::valid(&composed) {
        return Err(invalid(path.to_string(), format!("container name {composed:?} is longer than {} characters", name::MAX_LEN)));
    }
    if w.jobs.0.contains_key(&composed) {
        return Err(invalid(path.to_string(), format!("container name {composed:?} is also job {composed:?}")));
    }
    for (j, job) in &w.jobs.0 {
        for s in job.services.0.keys() {
            if (j.as_str(), s.as_str()) != (id, sid) && format!("{j}-{s}") == composed {
                return Err(invalid(path.to_string(), format!("container name {composed:?} is also service {s:?} of job {j:?}")));
            }
        }
    }
    Ok(())
}

fn container(path: &str, c: &Container) -> Result<(), Error> {
    if c.image.trim().is_empty() {
        return Err(invalid(format!("{path}.image"), "empty image"));
    }
    if !crate::cmdline::valid_image(c.image.trim()) {
        return Err(invalid(format!("{path}.image"), format!("{:?} is not a valid image reference", c.image)));
    }
    for (n, spec) in c.volumes.iter().enumerate() {
        volumes::parse(spec).map_err(|e| invalid(format!("{path}.volumes[{n}]"), e.to_string()))?;
    }
    Ok(())
}

/// `90`, `90s`, `10m`, `2h`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{text:?} is not a duration like 90s, 10m or 1h")),
    };
    if secs == 0 || secs > 7 * 24 * 3600 {
        return Err(format!("{text:?} is out of range (1s..7d)"));
    }
    Ok(Duration::from_secs(secs))
}

impl Job {
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(|t| duration(t).ok())
    }
}

impl Container {
    /// Volumes, already validated by `parse`.
    pub fn volumes(&self) -> Vec<Volume> {
        self.volumes.iter().filter_map(|v| volumes::parse(v).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(yaml: &str, message: &str) {
        match parse(yaml.as_bytes()) {
            Err(e) => assert!(e.to_string().contains(message), "{yaml:?}\n got: {e}\nwant: {message}"),
            Ok(w) => panic!("accepted {yaml:?}: {w:?}"),
        }
    }

    #[test]
    fn report_url() {
        let ok = parse(b"report: http://10.0.2.2:8080/events\njobs:\n  a:\n    container: {image: r/a}\n").unwrap();
        assert_eq!(ok.report.as_deref(), Some("http://10.0.2.2:8080/events"));
        check_err("report: ftp://h/e?t=x\njobs:\n  a:\n    container: {image: r/a}\n", "report: \"ftp://h/e?***\" is not an http:// or https:// URL");
    }

    /// Upstream's own example files parse unchanged.
    /// YAML aliases replay their anchor: a file under the size limit must
    /// not expand into gigabytes in PID 1 (the "billion laughs" of YAML).
    #[test]
    fn alias_expansion_is_bounded() {
        let anchor = "A".repeat(64 << 10);
        let aliases = vec!["*x"; 100].join(", ");
        let bomb = format!("jobs:\n  a:\n    container:\n      image: r/a\n      volumes: [&x \"{anchor}\", {aliases}]\n");
        let err = parse(bomb.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("expands to more than 4 MiB once YAML aliases are replayed"), "{err}");
        // Aliases that stay small are fine.
        let small = "jobs:\n  a:\n    container: &c {image: r/a}\n  b:\n    container: *c\n";
        assert_eq!(parse(small.as_bytes()).unwrap().jobs.0.len(), 2);
    }

    #[test]
    fn upstream_examples_parse() {
        for file in ["examples/agama.yaml", "examples/partitioner.yaml", "examples/control.yaml"] {
            let text = std::fs::read(file).unwrap();
            parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let w = parse(&std::fs::read("examples/control.yaml").unwrap()).unwrap();
        let ids: Vec<&String> = w.jobs.0.keys().collect();
        assert_eq!(ids, ["dinstaller", "busybox"]);
        assert_eq!(w.jobs.0["busybox"].needs, Needs(vec!["dinstaller".into()]));
        assert_eq!(w.env.entries(), ["GLOBAL=test_global_env"]);
    }

    #[test]
    fn accepts_upstream_shapes() {
        let w = parse(
            b"jobs:\n  a:\n    container: {image: r/a, env: {N: 1, B: true}}\n  b:\n    container: {image: r/b}\n    needs: a\n    continue_on_error: true\n    timeout: 10m\n    steps:\n      - run: /bin/sh\n      - uses: x\n        with: {k: v}\n",
        )
        .unwrap();
        assert_eq!(w.jobs.0["a"].container.env.entries(), ["N=1", "B=true"]);
        assert_eq!(w.jobs.0["b"].needs, Needs(vec!["a".into()]));
        assert_eq!(w.jobs.0["b"].timeout(), Some(Duration::from_secs(600)));
        assert_eq!(w.expires, None);
        // Quoted or not, YAML gives `expires` to us as text.
        for yaml in ["expires: 2027-01-31T12:00:00Z\n", "expires: \"2027-01-31T13:00:00+01:00\"\n"] {
            let w = parse(format!("{yaml}jobs:\n  a:\n    container: {{image: r/a}}\n").as_bytes()).unwrap();
            assert_eq!(w.expires.map(|e| e.at), Some(1_801_396_800), "{yaml}");
        }
    }

    #[test]
    fn rejects_with_located_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty file"),
            ("name: x\n", "missing field `jobs`"),
            ("jobs: {}\n", "jobs: no jobs"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    contaner: {}\n", "unknown field `contaner`, expected one of `container`, `services`, `needs`, `continue_on_error`, `steps`, `timeout` at line 4 column 5"),
            ("name: x\njobz: {}\n", "unknown field `jobz`, expected one of `name`, `description`, `expires`, `env`, `jobs`, `report` at line 2 column 1"),
            ("expires: tomorrow\njobs:\n  a:\n    container: {image: r/a}\n", "expires: \"tomorrow\" is not an RFC 3339 time (too short), e.g. 2027-01-31T12:00:00Z"),
            ("expires: 2027-01-31\njobs:\n  a:\n    container: {image: r/a}\n", "is not an RFC 3339 time"),
            ("jobs:\n  a:\n    container: {image: \"\"}\n", "jobs.a.container.image: empty image"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    needs: [zz]\n", "jobs.a.needs: unknown job \"zz\""),
            ("jobs:\n  a:\n    container: {image: r/a}\n    needs: b\n  b:\n    container: {image: r/b}\n", "jobs.a.needs: job \"b\" does not run before \"a\""),
            ("jobs:\n  a:\n    container: {image: r/a}\n    needs: a\n", "jobs.a.needs: job \"a\" does not run before \"a\""),
            ("jobs:\n  a:\n    container: {image: r/a}\n  a:\n    container: {image: r/b}\n", "duplicate key \"a\""),
            ("jobs:\n  a:\n    container: {image: r/a, volumes: [\"x:y\"]}\n", "jobs.a.container.volumes[0]"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    timeout: soon\n", "jobs.a.timeout: \"soon\" is not a duration"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    steps: [{name: x}]\n", "jobs.a.steps[0]: a step needs `run` or `uses`"),
            ("jobs:\n  a:\n    container: {image: r/a}\n    services: {s: {image: \"r/$\"}}\n", "jobs.a.services.s.image"),
            ("jobs:\n  a: {container: {image: r/a}\n  b: [\n", "did not find expected"),
            ("jobs: [\n", "jobs: invalid type: sequence, expected a map at line 1 column 7"),
            ("jobs:\n  a b:\n    container: {image: r/a}\n", "jobs.a b: job id \"a b\" must be"),
        ];
        for (yaml, message) in cases {
            check_err(yaml, message);
        }
    }

    /// `.`, `..`, hidden names and `/` would become paths under /run/iguana
    /// and cgroups: every name follows docker's rule, located by its key.
    #[test]
    fn names_follow_docker_rule() {
        let job = |id: &str| format!("jobs:\n  {id:?}:\n    container: {{image: r/a}}\n");
        let service = |sid: &str| format!("jobs:\n  a:\n    container: {{image: r/a}}\n    services: {{{sid:?}: {{image: r/s}}}}\n");
        let volume = |spec: &str| format!("jobs:\n  a:\n    container: {{image: r/a, volumes: [{spec:?}]}}\n");
        let long = "j".repeat(100);
        let cases: Vec<(String, String)> = vec![
            (job(".."), "jobs...: job id \"..\" must be 1-128 characters".into()),
            (job("."), "jobs..: job id \".\" must be".into()),
            (job(".hidden"), "jobs..hidden: job id \".hidden\" must be".into()),
            (job("-x"), "jobs.-x: job id \"-x\" must be".into()),
            (job("a/b"), "jobs.a/b: job id \"a/b\" must be".into()),
            (job(""), "jobs.: job id \"\" must be".into()),
            (job(&"a".repeat(129)), "must be 1-128 characters".into()),
            (service(".."), "jobs.a.services...: service id \"..\" must be".into()),
            (service(".s"), "jobs.a.services..s: service id \".s\" must be".into()),
            (volume("..:/x"), "jobs.a.container.volumes[0]: \"..:/x\": volume name \"..\" must be".into()),
            (volume(".:/x"), "jobs.a.container.volumes[0]: \".:/x\": volume name \".\" must be".into()),
            (volume(".anon-a-0:/x"), "volume name \".anon-a-0\" must be".into()),
            (
                format!("jobs:\n  {long}:\n    container: {{image: r/a}}\n    services: {{{long}: {{image: r/s}}}}\n"),
                format!("jobs.{long}.services.{long}: container name \"{long}-{long}\" is longer than 128 characters"),
            ),
            (
                "jobs:\n  a:\n    container: {image: r/a}\n    services: {b: {image: r/s}}\n  a-b:\n    container: {image: r/c}\n".into(),
                "jobs.a.services.b: container name \"a-b\" is also job \"a-b\"".into(),
            ),
            (
                "jobs:\n  a:\n    container: {image: r/a}\n    services: {b-c: {image: r/s}}\n  a-b:\n    container: {image: r/c}\n    services: {c: {image: r/s}}\n".into(),
                "jobs.a.services.b-c: container name \"a-b-c\" is also service \"c\" of job \"a-b\"".into(),
            ),
        ];
        for (yaml, message) in &cases {
            check_err(yaml, message);
        }
        // Docker's rule allows these.
        for ok in [job("_x"), job("0.a-b_c"), service("db.1"), volume("data_1.x-y:/d")] {
            parse(ok.as_bytes()).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(parse(b"\xff\xfe\x00jobs").unwrap_err(), Error::NotText(0));
        let deep = "a: ".repeat(200) + "b";
        assert!(parse(deep.as_bytes()).is_err());
        let nested = "[".repeat(10_000);
        assert!(parse(nested.as_bytes()).is_err());
        let laughs = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
        assert!(parse(laughs.as_bytes()).is_err());
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Result<u64, ()>)] =
            &[("90", Ok(90)), ("90s", Ok(90)), ("10m", Ok(600)), ("2h", Ok(7200)), ("0s", Err(())), ("1d", Err(())), ("m", Err(())), ("", Err(()))];
        for (text, want) in cases {
            assert_eq!(duration(text).map(|d| d.as_secs()).map_err(|_| ()), *want, "{text:?}");
        }
    }
}
