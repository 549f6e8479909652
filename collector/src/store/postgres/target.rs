//! Where the PostgreSQL store connects: a connection string that never
//! prints its password. `Display` and `Debug` both redact it, so the
//! string can go into logs, errors and `--help` output as it is.

use crate::store::{Result, StoreError};

/// A PostgreSQL connection string (`postgres://USER[:PASSWORD]@HOST:PORT/DB`,
/// `postgresql://…`, or libpq's `key=value` form), with the password
/// redacted wherever it is shown.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget(String);

impl PgTarget {
    /// Takes a connection string; `Invalid` (with the string redacted)
    /// when it does not parse.
    pub fn new(s: &str) -> Result<PgTarget> {
        let target = PgTarget(s.to_string());
        target.config()?;
        Ok(target)
    }

    /// Whether `s` names a PostgreSQL store rather than a directory.
    pub fn is_url(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// The parsed client configuration. Without a password in the string,
    /// libpq's `PGPASSWORD` supplies it (the client library reads no
    /// environment of its own), so the password stays out of command
    /// lines and config files.
    pub(super) fn config(&self) -> Result<postgres::Config> {
        let mut config = self.0.parse::<postgres::Config>().map_err(|e| {
            // The parser's message quotes no part of the string, but the
            // string itself is only ever shown redacted.
            StoreError::Invalid(format!("cannot parse the store URL {self}: {e}"))
        })?;
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            use std::os::unix::ffi::OsStrExt;
            config.password(password.as_bytes());
        }
        Ok(config)
    }

    /// The string itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({})", redact(&self.0))
    }
}

const HIDDEN: &str = "***";

/// The connection string with every password replaced by `***`: the
/// URL's user info (`user:secret@`), a `password=` query parameter, and
/// libpq's `password=secret` or `password='s e c r e t'`.
pub fn redact(s: &str) -> String {
    let scheme_end = ["postgres://", "postgresql://"]
        .iter()
        .find(|p| s.starts_with(**p))
        .map(|p| p.len());
    let Some(start) = scheme_end else {
        return redact_key_values(s);
    };
    let rest = &s[start..];
    // The authority ends at the path or the query. Its user info ends at
    // the last '@' (a password may hold '@' when percent-encoding was
    // forgotten).
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    let mut out = s[..start].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}={HIDDEN}")
                    }
                    _ => kv.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// libpq's `key = value` pairs, a value quoted with '…' (and \' inside)
/// or bare up to whitespace.
fn redact_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim_end();
        let key_name = key.rsplit(|c: char| c.is_whitespace()).next().unwrap_or("");
        out.push_str(&rest[..=eq]);
        let after = &rest[eq + 1..];
        let value_start = after.len() - after.trim_start().len();
        out.push_str(&after[..value_start]);
        let value = &after[value_start..];
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        if key_name.eq_ignore_ascii_case("password") {
            out.push_str(HIDDEN);
        } else {
            out.push_str(&value[..value_len]);
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "{input}");
        assert!(!redact(input).contains("s3cret"), "{input}");
    }

    #[test]
    fn passwords_never_show() {
        check(
            "postgres://patchgap:s3cret@db.example:5432/fleet",
            "postgres://patchgap:***@db.example:5432/fleet",
        );
        check(
            "postgresql://patchgap:s3cret@with@at@db:5432/fleet?sslmode=disable",
            "postgresql://patchgap:***@db:5432/fleet?sslmode=disable",
        );
        check(
            "postgres://patchgap@db:5432/fleet?password=s3cret&application_name=c1",
            "postgres://patchgap@db:5432/fleet?password=***&application_name=c1",
        );
        check(
            "host=db user=patchgap password=s3cret dbname=fleet",
            "host=db user=patchgap password=*** dbname=fleet",
        );
        check(
            "host=db password = 'my s3cret \\' x' dbname=fleet",
            "host=db password = *** dbname=fleet",
        );
        // Nothing to hide: unchanged.
        check(
            "postgres://patchgap@127.0.0.1:5432/fleet",
            "postgres://patchgap@127.0.0.1:5432/fleet",
        );
    }

    #[test]
    fn display_debug_and_parse_errors_redact() {
        let t = PgTarget::new("postgres://u:s3cret@127.0.0.1:5/db").unwrap();
        assert_eq!(t.to_string(), "postgres://u:***@127.0.0.1:5/db");
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(t.expose(), "postgres://u:s3cret@127.0.0.1:5/db");
        let err = PgTarget::new("postgres://u:s3cret@127.0.0.1:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("postgres://u:***@"), "{err}");
    }
}
