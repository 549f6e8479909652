//! What a workload may reach by policy: name patterns, CIDRs and ports,
//! and the mode that says what the baseline adds. Pure matching; the
//! policy file's reader (`response::policy::file`) builds these.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::response::Cidr;

/// How a workload's egress is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    /// Policy only: whatever the policy does not allow alerts; the
    /// baseline is still learned (it is shown) but decides nothing.
    #[serde(rename = "enforce")]
    Enforce,
    /// Policy first, then the baseline: what the policy allows never
    /// alerts, and what it does not is judged by the learned baseline.
    #[default]
    #[serde(rename = "policy+learn")]
    PolicyLearn,
    /// As `policy+learn`, but alerts are listed and never delivered.
    #[serde(rename = "audit")]
    Audit,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "policy+learn" => Some(Mode::PolicyLearn),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::PolicyLearn => "policy+learn",
            Mode::Audit => "audit",
        }
    }
}

/// The DNS name as compared: lower case, without the root's dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` matches `pattern`: equal, or `*.suffix` and `name` is a
/// subdomain of `suffix` at any depth (the apex itself is not: write it
/// too). Case and a trailing dot do not count.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let p = normalize_name(pattern);
    let n = normalize_name(name);
    match p.strip_prefix("*.") {
        Some(suffix) => n.len() > suffix.len() + 1 && n.ends_with(&format!(".{suffix}")),
        None => p == n,
    }
}

/// `value` matches `pattern`, where `*` stands for any run of
/// characters (none included). Linear in practice: the classic greedy
/// walk with one backtrack point.
pub fn glob(pattern: &str, value: &str) -> bool {
    let (p, v) = (pattern.as_bytes(), value.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < v.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == v[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// One allow rule: destinations (by name pattern or CIDR) on ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Allow {
    /// Name patterns (`api.example.com`, `*.example.com`).
    pub names: Vec<String>,
    pub cidrs: Vec<Cidr>,
    /// Empty means any port.
    pub ports: Vec<u16>,
}

impl Allow {
    /// The destination's address is in a CIDR, or a name its process was
    /// told matches a pattern; and the port is allowed.
    pub fn allows(&self, ip: IpAddr, names: &[String], port: u16) -> bool {
        // An IPv4-mapped IPv6 address (a dual-stack socket's view) is
        // the IPv4 address it carries.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let port_ok = self.ports.is_empty() || self.ports.contains(&port);
        let dest_ok = self.cidrs.iter().any(|c| c.contains(ip))
            || names
                .iter()
                .any(|n| self.names.iter().any(|p| name_matches(p, n)));
        port_ok && dest_ok
    }
}

/// One workload's egress policy. Private addresses get no exemption:
/// they are allowed only as any other address is, by a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct EgressPolicy {
    pub mode: Mode,
    pub allow: Vec<Allow>,
    /// The policy's `[[endpoint]]` (by name) that receives this
    /// workload's alerts as signed webhooks, beside Alertmanager. Looked
    /// up at delivery, so a reload applies; never in `audit` mode.
    pub endpoint: Option<String>,
}

impl EgressPolicy {
    pub fn allows(&self, ip: IpAddr, names: &[String], port: u16) -> bool {
        self.allow.iter().any(|a| a.allows(ip, names, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(
            "k8s:*/ml/Deployment/trainer/*",
            "k8s:/ml/Deployment/trainer/trainer"
        ));
        assert!(glob("*", ""));
        assert!(glob("*trainer*", "k8s:/ml/Deployment/trainer/c"));
        assert!(!glob("k8s:*/ml/*", "k8s:/prod/Deployment/x/y"));
        assert!(glob("unit:cron", "unit:cron"));
        assert!(!glob("unit:cron", "unit:cron2"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("api.example.com", "API.example.com."));
        assert!(name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "badexample.com"));
        assert!(!name_matches("api.example.com", "api.example.com.evil"));
    }

    /// Private addresses are not exempt: 10.0.0.5 alerts unless a CIDR
    /// allows it.
    #[test]
    fn private_addresses_are_not_exempt() {
        let mut p = EgressPolicy {
            allow: vec![Allow {
                names: vec!["*.example.com".into()],
                ports: vec![443],
                ..Allow::default()
            }],
            ..EgressPolicy::default()
        };
        assert!(!p.allows("10.0.0.5".parse().unwrap(), &[], 443));
        assert!(p.allows(
            "192.0.2.1".parse().unwrap(),
            &["cdn.example.com".into()],
            443
        ));
        assert!(!p.allows(
            "192.0.2.1".parse().unwrap(),
            &["cdn.example.com".into()],
            80
        ));
        p.allow.push(Allow {
            cidrs: vec![Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
            }],
            ..Allow::default()
        });
        assert!(p.allows("10.0.0.5".parse().unwrap(), &[], 443));
        assert!(p.allows("::ffff:10.0.0.5".parse().unwrap(), &[], 22));
        assert!(!p.allows("11.0.0.5".parse().unwrap(), &[], 22));
        assert_eq!(Mode::parse("policy+learn"), Some(Mode::PolicyLearn));
        assert_eq!(Mode::parse("learn"), None);
    }
}
