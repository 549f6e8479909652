//! Where actions that reach another system go: `[[endpoint]]` tables of
//! the policy file, each a receiver of signed webhooks (Standard
//! Webhooks) with a URL and a *reference* to its secret, a file path or an
//! environment variable. The secret itself is never in the policy, never
//! in a plan and never in any answer: `response::deliver` reads it when it
//! signs. An action names its endpoint (`endpoint = "tokens"`).
//!
//! Pure, like the rest of the policy: the checks read nothing.

use std::{net::IpAddr, ops::Range, path::PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The longest endpoint name: names go into outbox rows and audit entries.
const MAX_NAME: usize = 64;

/// Where an endpoint's signing secret (`whsec_` + base64) is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// A file holding the secret (its first line).
    File(PathBuf),
    /// An environment variable of the collector holding it.
    Env(String),
}

/// One receiver of signed webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub name: String,
    /// `https://…`, or `http://` to a loopback address only.
    pub url: String,
    pub secret: SecretRef,
    /// PEM CA bundle to verify the receiver with (None: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The receiver confirms what it did (a callback to the collector):
    /// its actions count as done when confirmed, not when acknowledged.
    pub confirms: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    name: Spanned<String>,
    url: Spanned<String>,
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    confirms: bool,
}

/// Whether `url` is a URL the collector may call: https anywhere, http
/// only to loopback (as for the collector's own plaintext), with a host
/// and no user info (a password in a URL ends up in logs).
pub fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    let Some(authority) = uri.authority() else {
        return Err(format!("url {url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "url {url:?} carries credentials: put the secret in secret_file or secret_env"
        ));
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(authority.host()) => Ok(uri),
        Some("http") => Err(format!(
            "url {url:?} is plain http to a host that is not loopback: use https"
        )),
        _ => Err(format!("url {url:?} is neither https nor http")),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks the endpoints; `error` reports a problem at a span.
pub(super) fn check(
    raw: Vec<Spanned<RawEndpoint>>,
    error: &mut dyn FnMut(Range<usize>, String),
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for e in raw {
        let span = e.span();
        let e = e.into_inner();
        let name = e.name.get_ref().trim().to_string();
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            error(
                e.name.span(),
                format!("endpoint name {name:?}: 1 to {MAX_NAME} letters, digits, '-' or '_'"),
            );
            continue;
        }
        if out.iter().any(|o| o.name == name) {
            error(e.name.span(), format!("endpoint {name:?} is defined twice"));
            continue;
        }
        if let Err(why) = check_url(e.url.get_ref()) {
            error(e.url.span(), why);
        }
        let secret = match (e.secret_file, e.secret_env) {
            (Some(f), None) if f.get_ref().starts_with('/') => {
                SecretRef::File(PathBuf::from(f.into_inner()))
            }
            (Some(f), None) => {
                error(
                    f.span(),
                    format!("secret_file {:?} is not an absolute path", f.get_ref()),
                );
                continue;
            }
            (None, Some(v)) if !v.get_ref().is_empty() && !v.get_ref().contains('=') => {
                SecretRef::Env(v.into_inner())
            }
            (None, Some(v)) => {
                error(
                    v.span(),
                    format!("secret_env {:?} is not a variable name", v.get_ref()),
                );
                continue;
            }
            _ => {
                error(
                    span,
                    format!(
                        "endpoint {name:?} needs exactly one of secret_file or secret_env (the whsec_ secret it signs with)"
                    ),
                );
                continue;
            }
        };
        let ca_file = match e.ca_file {
            Some(f) if !f.get_ref().starts_with('/') => {
                error(
                    f.span(),
                    format!("ca_file {:?} is not an absolute path", f.get_ref()),
                );
                None
            }
            Some(f) => Some(PathBuf::from(f.into_inner())),
            None => None,
        };
        out.push(Endpoint {
            name,
            url: e.url.into_inner(),
            secret,
            ca_file,
            confirms: e.confirms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::response::{Policy, policy::SecretRef};

    const NOW: i64 = 1_780_000_000_000;

    fn policy(endpoints: &str, route: &str) -> String {
        format!(
            "{endpoints}\n[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"rotate_scoped_tokens\"\nmode = \"enforce\"\napproval = \"required\"\n{route}"
        )
    }

    /// Every bad file goes through here, with all its expected errors.
    fn check(text: &str, expected: &[&str]) {
        let got: Vec<String> = match Policy::parse_at("p.toml", text.as_bytes(), NOW) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected, "{text}");
    }

    const TOKENS: &str = "[[endpoint]]\nname = \"tokens\"\nurl = \"https://vault.example.org/hooks/rotate\"\nsecret_env = \"PATCHGAP_TOKENS_SECRET\"\nconfirms = true\n";

    #[test]
    fn an_action_routes_to_a_defined_endpoint() {
        let p = Policy::parse_at(
            "p.toml",
            policy(TOKENS, "endpoint = \"tokens\"\n").as_bytes(),
            NOW,
        )
        .unwrap();
        assert_eq!(p.endpoints.len(), 1);
        let e = &p.endpoints[0];
        assert_eq!(e.url, "https://vault.example.org/hooks/rotate");
        assert_eq!(e.secret, SecretRef::Env("PATCHGAP_TOKENS_SECRET".into()));
        assert!(e.confirms);
        assert_eq!(p.tiers[0].actions[0].endpoint.as_deref(), Some("tokens"));
    }

    #[test]
    fn bad_endpoints_and_routes_name_their_place() {
        check(
            &policy(TOKENS, "endpoint = \"vault\"\n"),
            &[
                "p.toml:15:12: endpoint \"vault\" is not defined: add an [[endpoint]] with that name",
            ],
        );
        check(
            &policy(
                "[[endpoint]]\nname = \"a\"\nurl = \"http://198.51.100.7/hook\"\nsecret_file = \"/etc/patchgap/a.secret\"\n",
                "",
            ),
            &[
                "p.toml:3:7: url \"http://198.51.100.7/hook\" is plain http to a host that is not loopback: use https",
            ],
        );
        check(
            &policy(
                "[[endpoint]]\nname = \"a\"\nurl = \"https://u:pw@example.org/\"\nsecret_file = \"a.secret\"\n",
                "",
            ),
            &[
                "p.toml:3:7: url \"https://u:pw@example.org/\" carries credentials: put the secret in secret_file or secret_env",
                "p.toml:4:15: secret_file \"a.secret\" is not an absolute path",
            ],
        );
        check(
            &policy(
                "[[endpoint]]\nname = \"a\"\nurl = \"https://example.org/\"\n",
                "",
            ),
            &[
                "p.toml:1:1: endpoint \"a\" needs exactly one of secret_file or secret_env (the whsec_ secret it signs with)",
            ],
        );
        check(
            &policy(&format!("{TOKENS}{TOKENS}"), ""),
            &["p.toml:7:8: endpoint \"tokens\" is defined twice"],
        );
        // Isolation is the agents' work, never a webhook's.
        check(
            &format!(
                "{TOKENS}\n[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"required\"\nendpoint = \"tokens\"\n"
            ),
            &[
                "p.toml:15:12: isolate_affected_workloads is carried out by the agents, not sent to an endpoint",
            ],
        );
        // A freeze is the deploy gate's, never a webhook's: two executors
        // would say two things about one action.
        check(
            &format!(
                "{TOKENS}\n[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"freeze_deployments\"\nmode = \"enforce\"\napproval = \"required\"\nendpoint = \"tokens\"\n"
            ),
            &[
                "p.toml:15:12: freeze_deployments is carried out by the deploy gate (the admission webhook on the collector's --http-listen), not sent to an endpoint",
            ],
        );
    }

    #[test]
    fn urls_the_collector_may_call() {
        for ok in [
            "https://example.org/x",
            "http://127.0.0.1:9093",
            "http://[::1]:8080/a",
            "http://localhost/",
        ] {
            assert!(super::check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.org/",
            "example.org",
            "http://10.0.0.1/",
            "/relative",
        ] {
            assert!(super::check_url(bad).is_err(), "{bad}");
        }
    }
}
