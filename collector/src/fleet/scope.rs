//! The collector's data-scope mapping file: operator rules that give
//! workloads a data classification and what they write to, overriding what
//! the workloads' own labels say.
//!
//! The format is one rule per line, and the first rule that matches wins:
//!
//! ```text
//! # SELECTOR... => CLASSIFICATION [writes_to=TARGET,TARGET]
//! namespace=payments owner=Deployment/ledger => sensitive writes_to=postgres://ledger
//! cluster=prod label:team=ml => internal
//! unit=nginx.service => public
//! ```
//!
//! Selectors, all of which must match: `cluster=`, `namespace=`,
//! `owner=Kind/name` (or `owner=name`), `label:KEY=VALUE`, `unit=`, `kind=`
//! and `container=`. A value ending in `*` matches by prefix. Parsing takes
//! bytes and does no I/O; [`ScopeMap`] is the reloading holder.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// What a rule can select on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub owner_kind: &'a str,
    pub owner_name: &'a str,
    pub labels: Option<&'a std::collections::HashMap<String, String>>,
    pub unit: &'a str,
    pub kind: &'a str,
    pub container: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Cluster(String),
    Namespace(String),
    Owner { kind: Option<String>, name: String },
    Label { key: String, value: String },
    Unit(String),
    Kind(String),
    Container(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub line: usize,
    selectors: Vec<Selector>,
    pub classification: String,
    pub writes_to: Vec<String>,
}

/// A mapping file that failed to parse: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ScopeError {
    pub line: usize,
    pub reason: String,
}

const SELECTORS: &str = "cluster, namespace, owner, label:KEY, unit, kind, container";

/// Glob-light matching: exact, or a prefix when the pattern ends in `*`.
pub(crate) fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Rule {
    fn matches(&self, s: &Subject) -> bool {
        self.selectors.iter().all(|sel| match sel {
            Selector::Cluster(v) => matches(v, s.cluster),
            Selector::Namespace(v) => matches(v, s.namespace),
            Selector::Owner { kind, name } => {
                kind.as_ref()
                    .is_none_or(|k| k.eq_ignore_ascii_case(s.owner_kind))
                    && matches(name, s.owner_name)
            }
            Selector::Label { key, value } => s
                .labels
                .and_then(|l| l.get(key))
                .is_some_and(|v| matches(value, v)),
            Selector::Unit(v) => matches(v, s.unit),
            Selector::Kind(v) => matches(v, s.kind),
            Selector::Container(v) => matches(v, s.container),
        })
    }
}

/// Parses a whole mapping file. The first bad line fails it all, so a typo
/// never silently drops a rule.
pub fn parse(bytes: &[u8]) -> Result<Vec<Rule>, ScopeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        ScopeError {
            line,
            reason: "not valid UTF-8".into(),
        }
    })?;
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |reason: String| ScopeError { line, reason };
        let content = raw.split_once('#').map_or(raw, |(c, _)| c).trim();
        if content.is_empty() {
            continue;
        }
        let Some((lhs, rhs)) = content.split_once("=>") else {
            return Err(err(
                "missing \"=>\" between the selectors and the classification".into(),
            ));
        };
        let mut selectors = Vec::new();
        for word in lhs.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                return Err(err(format!("selector {word:?} is not KEY=VALUE")));
            };
            if value.is_empty() {
                return Err(err(format!("selector {key:?} has no value")));
            }
            let value = value.to_string();
            selectors.push(match key {
                "cluster" => Selector::Cluster(value),
                "namespace" => Selector::Namespace(value),
                "owner" => match value.split_once('/') {
                    Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Selector::Owner {
                        kind: Some(kind.to_string()),
                        name: name.to_string(),
                    },
                    Some(_) => {
                        return Err(err(format!("owner {value:?} is not Kind/name or name")));
                    }
                    None => Selector::Owner {
                        kind: None,
                        name: value,
                    },
                },
                "unit" => Selector::Unit(value),
                "kind" => Selector::Kind(value),
                "container" => Selector::Container(value),
                k if k.starts_with("label:") && k.len() > "label:".len() => Selector::Label {
                    key: k["label:".len()..].to_string(),
                    value,
                },
                other => {
                    return Err(err(format!(
                        "unknown selector {other:?} (expected {SELECTORS})"
                    )));
                }
            });
        }
        if selectors.is_empty() {
            return Err(err(
                "a rule needs at least one selector before \"=>\"".into()
            ));
        }
        let mut words = rhs.split_whitespace();
        let Some(classification) = words.next() else {
            return Err(err("no classification after \"=>\"".into()));
        };
        if !classification
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(format!(
                "classification {classification:?} must be lower-case letters, digits and '-' (such as sensitive)"
            )));
        }
        let mut writes_to = Vec::new();
        for word in words {
            match word.strip_prefix("writes_to=") {
                Some(list) => writes_to.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                ),
                None => {
                    return Err(err(format!(
                        "unexpected {word:?} after the classification (expected writes_to=A,B)"
                    )));
                }
            }
        }
        rules.push(Rule {
            line,
            selectors,
            classification: classification.to_string(),
            writes_to,
        });
    }
    Ok(rules)
}

/// The first rule that matches the subject.
pub fn lookup<'r>(rules: &'r [Rule], subject: &Subject) -> Option<&'r Rule> {
    rules.iter().find(|r| r.matches(subject))
}

/// The mapping in force, reloaded when the file changes. A file that fails
/// to load leaves the previous rules in force and keeps the error to report.
#[derive(Debug, Default)]
pub struct ScopeMap {
    path: Option<PathBuf>,
    stamp: Option<(SystemTime, u64)>,
    rules: Vec<Rule>,
    error: Option<String>,
}

impl ScopeMap {
    /// Loads the file now; an error here is fatal to the caller (a collector
    /// should not start with a broken mapping).
    pub fn load(path: &Path) -> Result<ScopeMap, String> {
        let mut map = ScopeMap {
            path: Some(path.to_path_buf()),
            ..Default::default()
        };
        map.refresh();
        match map.error.take() {
            Some(e) => Err(e),
            None => Ok(map),
        }
    }

    /// Reloads the file if its mtime or size changed.
    pub fn refresh(&mut self) {
        let Some(path) = &self.path else { return };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        let result = std::fs::read(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|bytes| parse(&bytes).map_err(|e| format!("{}: {e}", path.display())));
        match result {
            Ok(rules) => {
                self.rules = rules;
                self.error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scope mapping not loaded; the previous mapping stays in force");
                self.error = Some(e);
            }
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// Labels as a map, for subjects.
pub fn labels(map: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# data scopes\n\
        namespace=payments owner=Deployment/ledger => sensitive writes_to=postgres://ledger,s3://archive\n\
        \n\
        cluster=prod label:team=ml => internal   # trailing comment\n\
        unit=nginx.service => public\n\
        namespace=ml-* => sensitive\n";

    fn subject<'a>(labels: &'a std::collections::HashMap<String, String>) -> Subject<'a> {
        Subject {
            cluster: "prod",
            namespace: "payments",
            owner_kind: "Deployment",
            owner_name: "ledger",
            labels: Some(labels),
            ..Default::default()
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(rules.len(), 4);
        let labels = [("team".to_string(), "ml".to_string())]
            .into_iter()
            .collect();
        let r = lookup(&rules, &subject(&labels)).unwrap();
        assert_eq!((r.line, r.classification.as_str()), (2, "sensitive"));
        assert_eq!(r.writes_to, ["postgres://ledger", "s3://archive"]);
        let mut s = subject(&labels);
        s.namespace = "web";
        assert_eq!(lookup(&rules, &s).unwrap().classification, "internal");
        s.labels = None;
        assert!(lookup(&rules, &s).is_none());
        s.namespace = "ml-training";
        assert_eq!(lookup(&rules, &s).unwrap().line, 6, "prefix match");
        let unit = Subject {
            unit: "nginx.service",
            ..Default::default()
        };
        assert_eq!(lookup(&rules, &unit).unwrap().classification, "public");
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("namespace=a sensitive\n", 1, "missing \"=>\""),
            (
                "\n\nnmespace=a => sensitive\n",
                3,
                "unknown selector \"nmespace\"",
            ),
            ("=> sensitive\n", 1, "at least one selector"),
            ("namespace=a =>\n", 1, "no classification"),
            ("namespace=a => Sensitive\n", 1, "lower-case"),
            ("namespace= => x\n", 1, "has no value"),
            ("owner=/x => x\n", 1, "Kind/name"),
            ("namespace=a => x extra\n", 1, "unexpected \"extra\""),
            ("ok=1\n", 1, "missing"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
        let e = parse(b"namespace=a => x\n\xff\n").unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (2, "not valid UTF-8"));
    }

    #[test]
    fn a_bad_reload_keeps_the_previous_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scope.map");
        std::fs::write(&path, GOOD).unwrap();
        let mut map = ScopeMap::load(&path).unwrap();
        assert_eq!(map.rules().len(), 4);
        std::fs::write(&path, "namespace=x => sensitive\nbroken line here\n").unwrap();
        map.refresh();
        assert_eq!(map.rules().len(), 4, "previous rules stay");
        assert!(map.error().unwrap().contains("line 2"), "{:?}", map.error());
        std::fs::write(&path, "namespace=x => sensitive\n").unwrap();
        map.refresh();
        assert_eq!(map.rules().len(), 1);
        assert!(map.error().is_none());
        assert!(ScopeMap::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn no_panic_on_random_bytes() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"=> a:b/c*#\n =x-"[(x % 15) as usize]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
