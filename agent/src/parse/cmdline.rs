//! Parser for `/proc/PID/cmdline`, and redaction of secrets in command lines.
//!
//! The kernel returns the process's argument area: normally every argument
//! followed by a NUL byte. Two quirks matter:
//!
//! * A process may overwrite its argument area (`setproctitle()`, nginx,
//!   postgres, sshd, ...). Some then join everything with spaces, which shows
//!   up here as one single argument, and some pad the rest of the original
//!   area with NUL bytes, which would show up as a long tail of empty
//!   arguments. We keep the former as one argument and drop all trailing
//!   NULs, so no trailing empty arguments are produced. Empty arguments in
//!   the middle (`prog "" x`) are real and are kept.
//! * Arguments are arbitrary bytes, not UTF-8.
//!
//! Command lines regularly carry credentials (`mysql --password=...`,
//! `curl -H "Authorization: ..."`, database URLs), and the agent ships them
//! off the host, so [`redact_cmdline`] removes the values that look secret
//! before the command line is turned into a string.

use std::borrow::Cow;

/// The text that replaces a redacted value.
pub const REDACTED: &str = "<redacted>";

/// Splits the contents of `/proc/PID/cmdline` into arguments.
///
/// NUL-separated; trailing NUL bytes do not produce empty arguments (see the
/// module docs for why *all* trailing NULs are dropped); a process that
/// rewrote its cmdline with spaces yields one argument.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<Vec<u8>> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end == 0 {
        return Vec::new();
    }
    bytes[..end]
        .split(|&b| b == 0)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Joins the args with single spaces (lossy UTF-8) after redacting secrets.
///
/// A *key* looks secret when, after lower-casing and splitting it into runs
/// of ASCII letters and digits, some run ends with one of the secret words
/// (`password`, `passwd`, `pwd`, `passphrase`, `secret(s)`, `token`, `apikey`,
/// `accesskey`, `privatekey`, `sessionkey`, `credential(s)`, `auth`,
/// `authorization`, `cookie`), or is one of `pass` and `pw` as a whole,
/// or two adjacent runs spell `api key`, `access key`, `private key`,
/// `session key` (or `encryption`, `signing`, `master`, `license`, `shared`,
/// `client`, `storage`, `account` before `key`), or the whole key is `key`.
/// Matching the *end* of a run catches `PGPASSWORD`, `keyStorePassword` and
/// `oauth` while leaving `--tokenizer-path`, `--author` and `--max-tokens`
/// alone. A key whose last run says where the secret is kept (`file`,
/// `path`, `stdin`, `env`, `fd`, `dir`: `--password-file`,
/// `--password-stdin`) is not secret: its value is evidence, not the
/// secret. A key of the `key` family (`--key`, `--private-key`) keeps a
/// value that is a file path (`/`, `./`, `../`, `~/`): a key file's path.
///
/// Rules, applied to each argument in this order:
///
/// 1. If the previous argument was a secret flag without a value
///    (`--password`) and this one does not start with `-`, it is replaced by
///    [`REDACTED`] as a whole.
/// 2. URL credentials anywhere in the argument, `scheme://user:pass@host`,
///    become `scheme://user:<redacted>@host`.
/// 3. `Key: value` where `Key` is a header-like name that looks secret
///    (`Authorization: Bearer x`) becomes `Key: <redacted>`.
/// 4. In an argument of several words (libpq's `"host=h password=x"`, a
///    shell's `-c "PGPASSWORD=x psql"`), every word `key=value` whose key
///    looks secret has its value (to the next blank, or a `'quoted'` one
///    whole) redacted. Then `key=value` where `key` looks secret
///    (`--password=x`, `PGPASSWORD=x`, `https://h/?token=x`) becomes
///    `key=<redacted>`.
/// 5. `--flag` (starting with `-`, no `=`) whose name looks secret arms rule
///    1 for the next argument. Names starting with `no-` are not armed.
/// 6. Short flags are decided by the program (argv\[0\]'s file name, and for
///    docker its subcommand), because the same letter is a port or a user
///    elsewhere (`ssh -p 22`, `docker run -p 8080:80`, `mkdir -p`):
///    - `-p` is a password for MySQL's and MariaDB's clients (`-pVALUE`
///      attached; `-p VALUE` redacts the next argument, which for mysql
///      may be a database name, but a password is likelier meant), for
///      sshpass, and for `docker|podman|nerdctl login`;
///    - `-a` is a password for redis-cli;
///    - `-u`/`--user`/`-U`/`--proxy-user` of curl and `-a` of httpie
///      (`http`, `https`) take `user:password`: the part after the first
///      `:` is redacted (`-u admin:pw` becomes `-u admin:<redacted>`);
///    - `aws configure set KEY VALUE` redacts VALUE when KEY looks secret.
///
/// Everything else is kept byte-exact (lossy only for invalid UTF-8).
pub fn redact_cmdline(args: &[Vec<u8>]) -> String {
    let mut out = String::new();
    let mut next: Next = Next::Plain;
    let tool = Tool::of(args);
    for (i, raw) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let arg = String::from_utf8_lossy(raw);
        match std::mem::replace(&mut next, Next::Plain) {
            Next::Plain => {}
            _ if arg.starts_with('-') => {}
            Next::Secret(kind) => {
                if kind == Kind::Key && is_path(&arg) {
                    out.push_str(&arg);
                } else {
                    out.push_str(REDACTED);
                }
                continue;
            }
            Next::UserInfo => {
                push_userinfo(&arg, &mut out);
                continue;
            }
        }
        if i > 0
            && let Some(n) = tool.short_flag(&arg, i, args, &mut out)
        {
            next = n;
            continue;
        }
        next = match redact_arg(&arg, &mut out) {
            Some(kind) => Next::Secret(kind),
            None => Next::Plain,
        };
    }
    out
}

/// What rule 1 does with the next argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Plain,
    /// Redact it whole (a `Key` keeps a path).
    Secret(Kind),
    /// `user:password`: redact after the first `:`.
    UserInfo,
}

/// How a secret-looking key names its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A password, token, secret...: its value is always the secret.
    Secret,
    /// A key: its value is the key, or the path of a key file.
    Key,
}

/// The programs whose short flags rule 6 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// `-p` is the password (mysql, mariadb, sshpass, docker login).
    PasswordP,
    /// `-a` is the password (redis-cli).
    PasswordA,
    /// `-u user:password` (curl).
    Curl,
    /// `-a user:password` (httpie).
    Httpie,
    /// `aws configure set KEY VALUE`.
    Aws,
    Other,
}

impl Tool {
    fn of(args: &[Vec<u8>]) -> Tool {
        let Some(argv0) = args.first() else {
            return Tool::Other;
        };
        let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        match name.as_str() {
            "sshpass" | "mariadb" => Tool::PasswordP,
            n if n.starts_with("mysql") || n.starts_with("mariadb-") => Tool::PasswordP,
            "redis-cli" | "valkey-cli" | "keydb-cli" => Tool::PasswordA,
            "curl" => Tool::Curl,
            "http" | "https" => Tool::Httpie,
            "aws" => Tool::Aws,
            // `-p` is a password only for `login` (`docker run -p 80:80`
            // publishes a port): the first argument not a flag.
            "docker" | "podman" | "nerdctl"
                if args[1..]
                    .iter()
                    .find(|a| !a.starts_with(b"-"))
                    .is_some_and(|a| a == b"login") =>
            {
                Tool::PasswordP
            }
            _ => Tool::Other,
        }
    }

    /// Rule 6 for argument `i`: writes it to `out` and says what the next
    /// argument is, or `None` when the generic rules decide.
    fn short_flag(self, arg: &str, i: usize, args: &[Vec<u8>], out: &mut String) -> Option<Next> {
        let attached = |flag: &str| {
            arg.strip_prefix(flag)
                .filter(|v| !v.is_empty() && !arg.starts_with("--"))
        };
        match self {
            Tool::PasswordP | Tool::PasswordA => {
                let flag = if self == Tool::PasswordP { "-p" } else { "-a" };
                if arg == flag {
                    out.push_str(flag);
                    return Some(Next::Secret(Kind::Secret));
                }
                attached(flag)?;
                out.push_str(flag);
                out.push_str(REDACTED);
                Some(Next::Plain)
            }
            Tool::Curl | Tool::Httpie => {
                let (short, long): (&[&str], &[&str]) = if self == Tool::Curl {
                    (&["-u", "-U"], &["--user", "--proxy-user"])
                } else {
                    (&["-a"], &[])
                };
                if short.contains(&arg) || long.contains(&arg) {
                    out.push_str(arg);
                    return Some(Next::UserInfo);
                }
                for flag in long {
                    if let Some(v) = arg.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
                        out.push_str(flag);
                        out.push('=');
                        push_userinfo(v, out);
                        return Some(Next::Plain);
                    }
                }
                for flag in short {
                    if let Some(v) = attached(flag) {
                        out.push_str(flag);
                        push_userinfo(v, out);
                        return Some(Next::Plain);
                    }
                }
                None
            }
            Tool::Aws => {
                let is = |k: usize, w: &[u8]| args.get(k).is_some_and(|a| a == w);
                (i == 4 && is(1, b"configure") && is(2, b"set")).then_some(())?;
                let key = String::from_utf8_lossy(&args[3]);
                let kind = secret_kind(&key)?;
                if kind == Kind::Key && is_path(arg) {
                    out.push_str(arg);
                } else {
                    out.push_str(REDACTED);
                }
                Some(Next::Plain)
            }
            Tool::Other => None,
        }
    }
}

/// `user:password` with the password redacted; a lone user is kept.
fn push_userinfo(v: &str, out: &mut String) {
    match v.split_once(':') {
        Some((user, _)) => {
            out.push_str(user);
            out.push(':');
            out.push_str(REDACTED);
        }
        None => out.push_str(v),
    }
}

/// Whether a value is a file path (a key file's, kept as evidence).
fn is_path(v: &str) -> bool {
    ["/", "./", "../", "~/"].iter().any(|p| v.starts_with(p))
}

/// Appends the redacted form of one argument to `out`. Returns how the
/// argument is a secret flag whose value is the next argument, if it is.
fn redact_arg(arg: &str, out: &mut String) -> Option<Kind> {
    let arg = redact_urls(arg);
    let arg = redact_json_pairs(&arg);
    let arg = redact_kv_words(&arg);
    let arg = arg.as_ref();
    let eq = arg.find('=');
    let colon = arg.find(':');

    // Rule 3: a header such as "Authorization: Bearer x" or "X-Api-Key: k".
    if let Some(c) = colon
        && eq.is_none_or(|e| c < e)
    {
        let (key, value) = (&arg[..c], &arg[c + 1..]);
        if is_header_name(key) && looks_secret(key) {
            let value_start = value.len() - value.trim_start_matches([' ', '\t']).len();
            out.push_str(&arg[..c + 1 + value_start]);
            out.push_str(REDACTED);
            return None;
        }
    }

    // Rule 4: "key=value", and "flag=key=value" (kubectl's
    // `--from-literal=password=x`, helm's `--set=db.password=x`).
    if let Some(e) = eq {
        let secret_at = |e: usize| {
            secret_kind(&arg[..e])
                .is_some_and(|kind| !(kind == Kind::Key && is_path(&arg[e + 1..])))
        };
        // Words of several-word arguments were redacted above.
        let nested = arg[e + 1..]
            .find('=')
            .map(|n| e + 1 + n)
            .filter(|_| !arg.contains([' ', '\t']));
        if secret_at(e) {
            out.push_str(&arg[..=e]);
            out.push_str(REDACTED);
        } else if let Some(n) = nested
            && secret_kind(&arg[e + 1..n])
                .is_some_and(|kind| !(kind == Kind::Key && is_path(&arg[n + 1..])))
        {
            out.push_str(&arg[..=n]);
            out.push_str(REDACTED);
        } else {
            out.push_str(arg);
        }
        return None;
    }

    out.push_str(arg);

    // Rule 5: "--password" followed by the value as a separate argument.
    let name = arg.strip_prefix('-')?;
    let name = name.trim_start_matches('-');
    let negated = name
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("no-") || p.eq_ignore_ascii_case("no_"));
    if negated {
        return None;
    }
    secret_kind(name)
}

/// Rule 4's first half: in an argument with blanks, the value of every
/// word `key=value` whose key looks secret. A value opening with `'` runs
/// to the closing `'` (libpq's quoting, `\'` escaped).
fn redact_kv_words(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b' ' || b == b'\t') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // A word starts after a blank (or at the start).
        let start = i;
        let end = start
            + bytes[start..]
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(bytes.len() - start);
        let word = &s[start..end];
        let mut next = end + 1;
        if let Some(e) = word.find('=')
            && e > 0
            && looks_secret(&word[..e])
        {
            let value_start = start + e + 1;
            let value_end = if bytes.get(value_start) == Some(&b'\'') {
                let mut k = value_start + 1;
                loop {
                    match bytes.get(k) {
                        None => break bytes.len(),
                        Some(b'\\') => k += 2,
                        Some(b'\'') => break k + 1,
                        Some(_) => k += 1,
                    }
                }
                .min(bytes.len())
            } else {
                end
            };
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..value_start]);
            o.push_str(REDACTED);
            copied = value_end;
            next = value_end + 1;
        }
        i = next;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            if copied < s.len() {
                o.push_str(&s[copied..]);
            }
            Cow::Owned(o)
        }
    }
}

/// Words that make a key look secret when a component ends with them.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "sessionkey",
    "credential",
    "credentials",
    // "auth" as a suffix matches "auth" and "oauth" but not "author".
    "auth",
    "authorization",
    "cookie",
];

/// Words that make a key look secret only as a whole component: as a suffix
/// they would catch `--bypass` and `--compass`. So `--pass`, `--db-pass=`
/// and `DB_PASS=` are secret.
const SECRET_RUNS: &[&str] = &["pass", "pw"];

/// Last components that say where a secret is kept, not what it is
/// (`--password-file`, `--password-stdin`, `AWS_SHARED_CREDENTIALS_FILE`).
const SECRET_SOURCES: &[&str] = &["file", "path", "stdin", "env", "fd", "dir"];

/// Two-component spellings of the multi-word secret words: the first
/// component must end with the first word and the next be the second word,
/// so `api-key`, `x_api_key` and `AWS_ACCESS_KEY_ID` match.
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("session", "key"),
    ("encryption", "key"),
    ("signing", "key"),
    ("master", "key"),
    ("license", "key"),
    ("shared", "key"),
    ("client", "key"),
    ("storage", "key"),
    ("account", "key"),
];

/// Substrings that every secret-looking key contains: each secret word and
/// each pair's second word contains one of them.
const PREFILTER: &[&str] = &[
    "pass",
    "pw",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "cookie",
];

/// Whether a key (flag name, variable name, header name) looks like it names
/// a secret. See [`redact_cmdline`] for the rules.
fn looks_secret(key: &str) -> bool {
    secret_kind(key).is_some()
}

/// How a key names a secret, if it does.
fn secret_kind(key: &str) -> Option<Kind> {
    let lower = key.to_ascii_lowercase();
    // Every match contains one of these substrings. Checking them first
    // keeps the common case (and huge hostile keys) to a few fast scans.
    if !PREFILTER.iter().any(|w| lower.contains(w)) {
        return None;
    }
    let mut components = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|c| !c.is_empty())
        .peekable();
    let mut found = None;
    let mut count = 0;
    let mut last = "";
    while let Some(c) = components.next() {
        count += 1;
        last = c;
        if found.is_some() {
            continue;
        }
        if SECRET_WORDS.iter().any(|w| c.ends_with(w)) || SECRET_RUNS.contains(&c) {
            found = Some(Kind::Secret);
        } else if let Some(next) = components.peek()
            && let Some((_, b)) = SECRET_PAIRS
                .iter()
                .find(|(a, b)| c.ends_with(a) && next == b)
        {
            found = Some(if *b == "key" { Kind::Key } else { Kind::Secret });
        }
    }
    if count == 1 && last == "key" {
        return Some(Kind::Key);
    }
    if count > 1 && SECRET_SOURCES.contains(&last) {
        return None;
    }
    found
}

/// Whether `key` could be an HTTP header name: non-empty, made of ASCII
/// letters, digits, `-` and `_` only. This keeps rule 3 away from free text
/// such as `note: the password is ...` and from URLs.
fn is_header_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Replaces the value of every JSON-style `"KEY": "value"` pair whose key
/// looks secret. Supervisors pass whole environments this way (this very
/// machine runs `binary_backend --env {"HOME": "/root", ...}`), so a token in
/// that map would otherwise leak into every inventory.
fn redact_json_pairs(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    // Each iteration consumes at least one quoted string, so this is linear.
    while let Some(rel) = bytes[i..].iter().position(|&b| b == b'"') {
        let key_start = i + rel + 1;
        let Some(key_end) = json_string_end(bytes, key_start) else {
            break;
        };
        i = key_end + 1;
        let mut j = i;
        while bytes.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if bytes.get(j) != Some(&b':') {
            continue;
        }
        j += 1;
        while bytes.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if bytes.get(j) != Some(&b'"') {
            continue;
        }
        let value_start = j + 1;
        let Some(value_end) = json_string_end(bytes, value_start) else {
            break;
        };
        if looks_secret(&s[key_start..key_end]) {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..value_start]);
            o.push_str(REDACTED);
            copied = value_end;
        }
        i = value_end + 1;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The index of the closing quote of a JSON string whose content starts at
/// `start`, honouring backslash escapes.
fn json_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut k = start;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

/// Replaces the password of every `scheme://user:password@host` in `s`.
///
/// The user-info part runs from `://` to the last `@` before the next `/`
/// or whitespace (so passwords containing `@`, `?` or `#` are still caught,
/// while URLs without credentials are left alone). A user without a password
/// (`ssh://git@host`) is kept. Runs in linear time: each user-info scan stops
/// at the next `/`, and every later `://` starts at or after that `/`.
fn redact_urls(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(rel) = bytes[i..].iter().position(|&b| b == b':') {
        let colon_at = i + rel;
        i = colon_at + 1;
        if bytes.get(i..i + 2) != Some(b"//") {
            continue;
        }
        let info_start = i + 2;
        i = info_start;
        // Only ASCII bytes are compared, so every index below is on a char
        // boundary of `s`.
        let region = &bytes[info_start..];
        let region_end = region
            .iter()
            .position(|&b| b == b'/' || b.is_ascii_whitespace())
            .unwrap_or(region.len());
        let Some(at) = region[..region_end].iter().rposition(|&b| b == b'@') else {
            continue;
        };
        if let Some(colon) = region[..at].iter().position(|&b| b == b':') {
            let pass_start = info_start + colon + 1;
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[copied..pass_start]);
            o.push_str(REDACTED);
            copied = info_start + at;
        }
        i = info_start + at + 1;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[copied..]);
            Cow::Owned(o)
        }
    }
}

/// A real-looking `/proc/PID/cmdline` with a secret in it.
#[cfg(test)]
pub(crate) const SAMPLE: &[u8] =
    b"/usr/bin/python3\0-m\0myapp\0--db=postgres://app:hunter2@db:5432/app\0--api-key\0k-123\0";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    /// The shape this machine's supervisor really uses: a JSON environment
    /// map as one argument.
    #[test]
    fn json_env_maps_have_secret_values_redacted() {
        let cases = [
            (
                r#"{"HOME": "/root", "GITHUB_TOKEN": "ghp_abc", "DB_PASSWORD":"p\"w"}"#,
                r#"{"HOME": "/root", "GITHUB_TOKEN": "<redacted>", "DB_PASSWORD":"<redacted>"}"#,
            ),
            (
                r#"{"TOKENIZER_PATH": "/models/t"}"#,
                r#"{"TOKENIZER_PATH": "/models/t"}"#,
            ),
            (r#"{"unterminated": "x"#, r#"{"unterminated": "x"#),
            (
                r#""api_key" : "k", "n": 1"#,
                r#""api_key" : "<redacted>", "n": 1"#,
            ),
        ];
        for (input, want) in cases {
            let got = redact_cmdline(&args(&["/bin/backend", "--env", input]));
            assert_eq!(got, format!("/bin/backend --env {want}"), "{input}");
        }
    }

    #[test]
    fn parse_splits_on_nul() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b"\0", &[]),
            (b"\0\0\0\0", &[]),
            (b"ls\0", &[b"ls"]),
            (b"ls", &[b"ls"]),
            (b"ls\0-l\0/tmp\0", &[b"ls", b"-l", b"/tmp"]),
            // Empty arguments in the middle and at the start are real.
            (b"prog\0\0x\0", &[b"prog", b"", b"x"]),
            (b"\0x\0", &[b"", b"x"]),
            // nginx-style: rewritten with spaces and padded with NULs.
            (
                b"nginx: master process /usr/sbin/nginx\0\0\0\0\0\0",
                &[b"nginx: master process /usr/sbin/nginx"],
            ),
            // Newlines and invalid UTF-8 are ordinary bytes.
            (b"a\nb\0\xff\xfe\0", &[b"a\nb", b"\xff\xfe"]),
        ];
        for &(input, want) in cases {
            let got = parse_cmdline(input);
            let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
            assert_eq!(got, want, "{}", input.escape_ascii());
        }
    }

    #[test]
    fn redaction_table() {
        let r = REDACTED;
        let cases: &[(&[&str], String)] = &[
            // The cases from the spec.
            (
                &["mysql", "--password=hunter2"],
                format!("mysql --password={r}"),
            ),
            (&["app", "token=abc"], format!("app token={r}")),
            (
                &["env", "PGPASSWORD=x", "psql"],
                format!("env PGPASSWORD={r} psql"),
            ),
            (
                &["mysql", "--password", "hunter2", "db"],
                format!("mysql --password {r} db"),
            ),
            // Issue 11 (and 14): `-p` takes the password for these
            // programs, attached or not; elsewhere it is left alone.
            (
                &["sshpass", "-p", "hunter2", "ssh", "h"],
                format!("sshpass -p {r} ssh h"),
            ),
            (
                &["/usr/bin/mysql", "-uroot", "-phunter2", "db"],
                format!("/usr/bin/mysql -uroot -p{r} db"),
            ),
            (
                &["mariadb-dump", "-h", "h", "-p", "hunter2"],
                format!("mariadb-dump -h h -p {r}"),
            ),
            (
                &["mysqldump", "-P", "3306", "--port=3306", "-p"],
                "mysqldump -P 3306 --port=3306 -p".into(),
            ),
            (&["ssh", "-p", "22", "h"], "ssh -p 22 h".into()),
            (&["ssh", "-p2222", "h"], "ssh -p2222 h".into()),
            (&["mkdir", "-p", "/x"], "mkdir -p /x".into()),
            (
                &[
                    "app",
                    "--pass",
                    "X",
                    "--db-pass=Y",
                    "DB_PASS=Z",
                    "--pw",
                    "W",
                ],
                format!("app --pass {r} --db-pass={r} DB_PASS={r} --pw {r}"),
            ),
            (
                &["app", "--bypass", "x", "--compass=n", "--passes=3"],
                "app --bypass x --compass=n --passes=3".into(),
            ),
            (
                &["psql", "postgres://bob:s3cret@db.example:5432/app"],
                format!("psql postgres://bob:{r}@db.example:5432/app"),
            ),
            (
                &[
                    "curl",
                    "-H",
                    "Authorization: Bearer xyz",
                    "https://api.example/v1",
                ],
                format!("curl -H Authorization: {r} https://api.example/v1"),
            ),
            // Negatives: a secret word must end a component.
            (
                &["git", "commit", "--author=bob"],
                "git commit --author=bob".into(),
            ),
            (
                &["git", "log", "--author", "bob"],
                "git log --author bob".into(),
            ),
            (
                &["serve", "--tokenizer-path=x"],
                "serve --tokenizer-path=x".into(),
            ),
            (
                &["serve", "--tokenizer-path", "x"],
                "serve --tokenizer-path x".into(),
            ),
            (
                &["serve", "--max-tokens=100"],
                "serve --max-tokens=100".into(),
            ),
            (&["x", "--authority=ca"], "x --authority=ca".into()),
            (
                &["x", "--keyfile=/k", "--key", "/k"],
                "x --keyfile=/k --key /k".into(),
            ),
            (&["cd", "--cwd=/tmp"], "cd --cwd=/tmp".into()),
            // Positives: whole or trailing components.
            (
                &["srv", "--auth-token", "abc"],
                format!("srv --auth-token {r}"),
            ),
            (
                &["srv", "--db_password=abc"],
                format!("srv --db_password={r}"),
            ),
            (&["srv", "--auth=basic"], format!("srv --auth={r}")),
            (&["srv", "OAUTH=z"], format!("srv OAUTH={r}")),
            (
                &["srv", "--passwd=p", "--pwd", "p"],
                format!("srv --passwd={r} --pwd {r}"),
            ),
            (
                &["srv", "--passphrase", "p"],
                format!("srv --passphrase {r}"),
            ),
            (&["srv", "--secret=s"], format!("srv --secret={r}")),
            (
                &["srv", "--client-secret=s"],
                format!("srv --client-secret={r}"),
            ),
            (
                &["srv", "--client_secret", "s"],
                format!("srv --client_secret {r}"),
            ),
            (&["srv", "--api-key=k"], format!("srv --api-key={r}")),
            (&["srv", "--api_key=k"], format!("srv --api_key={r}")),
            (&["srv", "--apikey=k"], format!("srv --apikey={r}")),
            (&["srv", "--apiKey=k"], format!("srv --apiKey={r}")),
            (&["srv", "--x-api-key", "k"], format!("srv --x-api-key {r}")),
            (&["srv", "--access-key=k"], format!("srv --access-key={r}")),
            (
                &["srv", "--access_key", "k"],
                format!("srv --access_key {r}"),
            ),
            (
                &["srv", "--private-key=k"],
                format!("srv --private-key={r}"),
            ),
            (
                &["srv", "--private_key", "k"],
                format!("srv --private_key {r}"),
            ),
            (
                &["srv", "--session-key=k"],
                format!("srv --session-key={r}"),
            ),
            (&["srv", "--credential=c"], format!("srv --credential={r}")),
            (
                &["srv", "--credentials", "c"],
                format!("srv --credentials {r}"),
            ),
            (
                &["aws", "AWS_SECRET_ACCESS_KEY=s"],
                format!("aws AWS_SECRET_ACCESS_KEY={r}"),
            ),
            (
                &["aws", "AWS_ACCESS_KEY_ID=AKIA"],
                format!("aws AWS_ACCESS_KEY_ID={r}"),
            ),
            (&["x", "GITHUB_TOKEN=ghp_x"], format!("x GITHUB_TOKEN={r}")),
            (&["x", "--Password=X"], format!("x --Password={r}")),
            (&["x", "-password", "X"], format!("x -password {r}")),
            (
                &[
                    "java",
                    "-Djavax.net.ssl.keyStorePassword=changeit",
                    "-jar",
                    "a.jar",
                ],
                format!("java -Djavax.net.ssl.keyStorePassword={r} -jar a.jar"),
            ),
            (
                &["java", "-Dspring.datasource.password=pw"],
                format!("java -Dspring.datasource.password={r}"),
            ),
            // The value is taken whole, whatever it contains.
            (&["x", "--token", "a=b c"], format!("x --token {r}")),
            (&["x", "--password", ""], format!("x --password {r}")),
            (&["x", "--password="], format!("x --password={r}")),
            (&["x", "--password=a=b"], format!("x --password={r}")),
            // A flag followed by another flag, or by nothing, redacts nothing.
            (
                &["x", "--password", "--verbose", "v"],
                "x --password --verbose v".into(),
            ),
            (&["x", "--password", "-"], "x --password -".into()),
            (&["x", "--password"], "x --password".into()),
            (
                &["x", "--no-password", "file"],
                "x --no-password file".into(),
            ),
            (&["x", "--no_auth", "file"], "x --no_auth file".into()),
            (&["x", "-", "a", "--", "b"], "x - a -- b".into()),
            // Only the argument right after the flag is redacted.
            (&["x", "--token", "t", "y"], format!("x --token {r} y")),
            // Positional words are not flags.
            (&["vault", "token", "create"], "vault token create".into()),
            (&["passwd", "bob"], "passwd bob".into()),
            // Headers.
            (
                &["curl", "-H", "X-Api-Key: k"],
                format!("curl -H X-Api-Key: {r}"),
            ),
            (
                &["curl", "-H", "X-Auth-Token:k"],
                format!("curl -H X-Auth-Token:{r}"),
            ),
            (
                &["curl", "-H", "Proxy-Authorization:  Basic Zm9v"],
                format!("curl -H Proxy-Authorization:  {r}"),
            ),
            (
                &["curl", "-HAuthorization: x"],
                format!("curl -HAuthorization: {r}"),
            ),
            (
                &["curl", "-H", "Cookie: sid=1"],
                format!("curl -H Cookie: {r}"),
            ),
            (
                &["curl", "-H", "Accept: text/html"],
                "curl -H Accept: text/html".into(),
            ),
            (&["curl", "-H", "Author: me"], "curl -H Author: me".into()),
            (&["echo", "my password: x"], "echo my password: x".into()),
            // URLs.
            (
                &["x", "--dsn=mysql://root:pw@localhost/db"],
                format!("x --dsn=mysql://root:{r}@localhost/db"),
            ),
            (
                &["git", "clone", "ssh://git@github.com/x.git"],
                "git clone ssh://git@github.com/x.git".into(),
            ),
            (
                &["curl", "https://example.com/a@b"],
                "curl https://example.com/a@b".into(),
            ),
            (
                &["x", "https://x-access-token:ghs_1@github.com/o/r"],
                format!("x https://x-access-token:{r}@github.com/o/r"),
            ),
            (
                &["x", "redis://:pw@cache:6379"],
                format!("x redis://:{r}@cache:6379"),
            ),
            (
                &["x", "amqp://u:p@ss#w?rd@mq/vh"],
                format!("x amqp://u:{r}@mq/vh"),
            ),
            (
                &["x", "mongodb://u:p@h1:27017,h2:27017/db?replicaSet=rs"],
                format!("x mongodb://u:{r}@h1:27017,h2:27017/db?replicaSet=rs"),
            ),
            (
                &["x", "--peers=http://a:1@h1,http://b:2@h2"],
                format!("x --peers=http://a:{r}@h1,http://b:{r}@h2"),
            ),
            (
                &["x", "see http://u:p@h and ftp://v:q@i/"],
                format!("x see http://u:{r}@h and ftp://v:{r}@i/"),
            ),
            (
                &["curl", "https://h/api?token=abc&x=1"],
                format!("curl https://h/api?token={r}"),
            ),
            (
                &["curl", "https://u:p@h/api?access_token=abc"],
                format!("curl https://u:{r}@h/api?access_token={r}"),
            ),
            (
                &["x", "://", ":///", "a://@", "a://:@"],
                format!("x :// :/// a://@ a://:{r}@"),
            ),
            (&["x", "http://h/?q=a:b@c"], "x http://h/?q=a:b@c".into()),
            // Invalid UTF-8 is replaced, everything else is exact.
            (&["a  b", "\t", "é"], "a  b \t é".into()),
        ];
        for (input, want) in cases {
            assert_eq!(&redact_cmdline(&args(input)), want, "input {input:?}");
        }
    }

    /// Real command lines of common tools (issue 14): each tool's own
    /// spelling of its credentials, and beside them the same letters where
    /// the tool means a port, a user or a file, which must stay as evidence.
    #[test]
    fn real_tool_command_lines() {
        let r = REDACTED;
        let cases: &[(&str, &[&str], String)] = &[
            // mysql / mariadb: -pPASS attached, -p PASS, --password[=].
            (
                "mysql -p attached",
                &["mysql", "-h", "db", "-u", "root", "-phunter2", "shop"],
                format!("mysql -h db -u root -p{r} shop"),
            ),
            (
                "mysql -p separate",
                &["mysql", "-u", "root", "-p", "hunter2"],
                format!("mysql -u root -p {r}"),
            ),
            (
                "mysqladmin --password",
                &[
                    "/usr/bin/mysqladmin",
                    "--user=root",
                    "--password",
                    "hunter2",
                    "status",
                ],
                format!("/usr/bin/mysqladmin --user=root --password {r} status"),
            ),
            (
                "mysql port is -P",
                &["mysql", "-P", "3306", "-h", "db"],
                "mysql -P 3306 -h db".into(),
            ),
            (
                "mariadb-dump",
                &["mariadb-dump", "-uroot", "-phunter2", "--all-databases"],
                format!("mariadb-dump -uroot -p{r} --all-databases"),
            ),
            // psql: connection URIs and conninfo strings; -p is the port.
            (
                "psql URI",
                &[
                    "psql",
                    "postgresql://app:hunter2@db.internal:5432/shop?sslmode=require",
                ],
                format!("psql postgresql://app:{r}@db.internal:5432/shop?sslmode=require"),
            ),
            (
                "psql conninfo",
                &[
                    "psql",
                    "host=db port=5432 user=app password=hunter2 dbname=shop",
                ],
                format!("psql host=db port=5432 user=app password={r} dbname=shop"),
            ),
            (
                "psql conninfo quoted",
                &["psql", "host=db password='hunter 2' dbname=shop"],
                format!("psql host=db password={r} dbname=shop"),
            ),
            (
                "psql -p port",
                &["psql", "-h", "db", "-p", "5432", "-U", "app", "shop"],
                "psql -h db -p 5432 -U app shop".into(),
            ),
            (
                "pg_dump --dbname URI",
                &["pg_dump", "--dbname=postgres://app:hunter2@db/shop"],
                format!("pg_dump --dbname=postgres://app:{r}@db/shop"),
            ),
            // curl: -u user:pw (attached or not, --user), headers.
            (
                "curl -u",
                &["curl", "-u", "admin:pw", "https://api.example/v1"],
                format!("curl -u admin:{r} https://api.example/v1"),
            ),
            (
                "curl -u attached",
                &["curl", "-uadmin:pw", "https://h"],
                format!("curl -uadmin:{r} https://h"),
            ),
            (
                "curl --user=",
                &["curl", "--user=admin:p:w", "https://h"],
                format!("curl --user=admin:{r} https://h"),
            ),
            (
                "curl --proxy-user",
                &[
                    "curl",
                    "--proxy-user",
                    "me:pw",
                    "-x",
                    "http://proxy:3128",
                    "https://h",
                ],
                format!("curl --proxy-user me:{r} -x http://proxy:3128 https://h"),
            ),
            (
                "curl -u user only",
                &["curl", "-u", "admin", "https://h"],
                "curl -u admin https://h".into(),
            ),
            (
                "curl bearer",
                &[
                    "curl",
                    "-sS",
                    "-H",
                    "Authorization: Bearer eyJhbGciOi",
                    "https://h",
                ],
                format!("curl -sS -H Authorization: {r} https://h"),
            ),
            (
                "curl private-token header",
                &[
                    "curl",
                    "--header",
                    "PRIVATE-TOKEN: glpat-x",
                    "https://gitlab/api",
                ],
                format!("curl --header PRIVATE-TOKEN: {r} https://gitlab/api"),
            ),
            (
                "curl --key is a key file",
                &[
                    "curl",
                    "--cert",
                    "c.pem",
                    "--key",
                    "/etc/ssl/private/c.key",
                    "https://h",
                ],
                "curl --cert c.pem --key /etc/ssl/private/c.key https://h".into(),
            ),
            (
                "httpie -a",
                &["http", "-a", "admin:pw", "GET", "https://h"],
                format!("http -a admin:{r} GET https://h"),
            ),
            // redis-cli: -a PASS, --pass PASS, --user; -p is the port.
            (
                "redis-cli -a",
                &[
                    "redis-cli",
                    "-h",
                    "cache",
                    "-p",
                    "6379",
                    "-a",
                    "hunter2",
                    "PING",
                ],
                format!("redis-cli -h cache -p 6379 -a {r} PING"),
            ),
            (
                "redis-cli --pass",
                &["redis-cli", "--user", "app", "--pass", "hunter2"],
                format!("redis-cli --user app --pass {r}"),
            ),
            (
                "redis-cli -u URI",
                &["redis-cli", "-u", "redis://app:hunter2@cache:6379/0"],
                format!("redis-cli -u redis://app:{r}@cache:6379/0"),
            ),
            // aws: flags, and `configure set`.
            (
                "aws --secret-access-key",
                &[
                    "aws",
                    "--access-key-id",
                    "AKIA1",
                    "--secret-access-key",
                    "wJalr",
                    "s3",
                    "ls",
                ],
                format!("aws --access-key-id {r} --secret-access-key {r} s3 ls"),
            ),
            (
                "aws configure set",
                &[
                    "aws",
                    "configure",
                    "set",
                    "aws_secret_access_key",
                    "wJalr",
                    "--profile",
                    "p",
                ],
                format!("aws configure set aws_secret_access_key {r} --profile p"),
            ),
            (
                "aws configure set region",
                &["aws", "configure", "set", "region", "eu-west-1"],
                "aws configure set region eu-west-1".into(),
            ),
            (
                "aws credentials file",
                &[
                    "env",
                    "AWS_SHARED_CREDENTIALS_FILE=/etc/aws/creds",
                    "aws",
                    "s3",
                    "ls",
                ],
                "env AWS_SHARED_CREDENTIALS_FILE=/etc/aws/creds aws s3 ls".into(),
            ),
            // kubectl: --token, --password (--username is not secret).
            (
                "kubectl --token",
                &[
                    "kubectl",
                    "--server=https://k8s:6443",
                    "--token=eyJhbGci",
                    "get",
                    "pods",
                ],
                format!("kubectl --server=https://k8s:6443 --token={r} get pods"),
            ),
            (
                "kubectl --token separate",
                &[
                    "kubectl",
                    "--token",
                    "eyJhbGci",
                    "-n",
                    "kube-system",
                    "get",
                    "pods",
                ],
                format!("kubectl --token {r} -n kube-system get pods"),
            ),
            (
                "kubectl basic auth",
                &[
                    "kubectl",
                    "--username",
                    "admin",
                    "--password",
                    "hunter2",
                    "get",
                    "nodes",
                ],
                format!("kubectl --username admin --password {r} get nodes"),
            ),
            (
                "kubectl client key file",
                &["kubectl", "--client-key=/etc/k8s/admin.key", "get", "nodes"],
                "kubectl --client-key=/etc/k8s/admin.key get nodes".into(),
            ),
            (
                "kubectl create secret",
                &[
                    "kubectl",
                    "create",
                    "secret",
                    "generic",
                    "db",
                    "--from-literal=password=hunter2",
                ],
                format!("kubectl create secret generic db --from-literal=password={r}"),
            ),
            // java -D system properties.
            (
                "java keystore",
                &[
                    "java",
                    "-Djavax.net.ssl.keyStore=/etc/app/ks.jks",
                    "-Djavax.net.ssl.keyStorePassword=changeit",
                    "-Djavax.net.ssl.trustStorePassword=changeit",
                    "-jar",
                    "app.jar",
                ],
                format!(
                    "java -Djavax.net.ssl.keyStore=/etc/app/ks.jks -Djavax.net.ssl.keyStorePassword={r} -Djavax.net.ssl.trustStorePassword={r} -jar app.jar"
                ),
            ),
            (
                "java jmx password file",
                &[
                    "java",
                    "-Dcom.sun.management.jmxremote.password.file=/etc/jmx.pw",
                    "-jar",
                    "a.jar",
                ],
                "java -Dcom.sun.management.jmxremote.password.file=/etc/jmx.pw -jar a.jar".into(),
            ),
            (
                "java datasource",
                &[
                    "java",
                    "-Dspring.datasource.password=pw",
                    "-Dserver.port=8080",
                    "-jar",
                    "a.jar",
                ],
                format!("java -Dspring.datasource.password={r} -Dserver.port=8080 -jar a.jar"),
            ),
            // docker login: -p/--password; elsewhere -p publishes a port.
            (
                "docker login -p",
                &[
                    "docker",
                    "login",
                    "-u",
                    "bob",
                    "-p",
                    "hunter2",
                    "registry.example",
                ],
                format!("docker login -u bob -p {r} registry.example"),
            ),
            (
                "docker login --password",
                &[
                    "/usr/bin/docker",
                    "login",
                    "--username=bob",
                    "--password=hunter2",
                    "r.example",
                ],
                format!("/usr/bin/docker login --username=bob --password={r} r.example"),
            ),
            (
                "docker login --password-stdin",
                &["docker", "login", "--password-stdin", "registry.example"],
                "docker login --password-stdin registry.example".into(),
            ),
            (
                "docker run -p",
                &["docker", "run", "-p", "8080:80", "-u", "1000:1000", "nginx"],
                "docker run -p 8080:80 -u 1000:1000 nginx".into(),
            ),
            (
                "podman login",
                &[
                    "podman",
                    "--log-level=info",
                    "login",
                    "-p",
                    "hunter2",
                    "quay.io",
                ],
                format!("podman --log-level=info login -p {r} quay.io"),
            ),
            // Generic forms the issue names.
            (
                "--pass, --db-pass=, --key=",
                &["app", "--pass", "X", "--db-pass=Y", "--key=Z", "KEY=K"],
                format!("app --pass {r} --db-pass={r} --key={r} KEY={r}"),
            ),
            (
                "-p elsewhere",
                &["ssh", "-p", "2222", "-i", "/root/.ssh/id_ed25519", "h"],
                "ssh -p 2222 -i /root/.ssh/id_ed25519 h".into(),
            ),
            (
                "sh -c",
                &["sh", "-c", "PGPASSWORD=hunter2 pg_dump shop"],
                format!("sh -c PGPASSWORD={r}"),
            ),
            (
                "helm --set",
                &[
                    "helm",
                    "upgrade",
                    "app",
                    "./chart",
                    "--set",
                    "db.password=hunter2,db.user=app",
                ],
                format!("helm upgrade app ./chart --set db.password={r}"),
            ),
            // `--key` is a secret's name in too many tools to keep: sort's
            // field spec goes too (a known loss, not a leak).
            (
                "sort key",
                &["sort", "--key=2", "-u", "f"],
                format!("sort --key={r} -u f"),
            ),
        ];
        for (what, input, want) in cases {
            assert_eq!(&redact_cmdline(&args(input)), want, "{what}: {input:?}");
        }
    }

    #[test]
    fn lossy_and_sample() {
        let got = redact_cmdline(&[b"\xffpass".to_vec(), b"--pass\xffword=x".to_vec()]);
        // "pass" is a whole run of the key, so its value goes (issue 11).
        assert_eq!(got, format!("\u{fffd}pass --pass\u{fffd}word={REDACTED}"));
        let got = redact_cmdline(&[b"--db\xff_password=\xff".to_vec()]);
        assert_eq!(got, format!("--db\u{fffd}_password={REDACTED}"));
        assert_eq!(
            redact_cmdline(&parse_cmdline(SAMPLE)),
            format!(
                "/usr/bin/python3 -m myapp --db=postgres://app:{REDACTED}@db:5432/app --api-key {REDACTED}"
            )
        );
        assert_eq!(redact_cmdline(&[]), "");
        assert_eq!(redact_cmdline(&[vec![], vec![]]), " ");
    }

    #[test]
    fn hostile_inputs() {
        // Embedded newlines and NULs (NULs cannot come from parse_cmdline but
        // the redactor takes arbitrary args).
        let got = redact_cmdline(&[b"a\nb".to_vec(), b"--token=\0\n".to_vec()]);
        assert_eq!(got, format!("a\nb --token={REDACTED}"));
        // 4 MiB arguments of various shapes finish quickly and do not panic.
        let big = 4 << 20;
        let shapes: Vec<Vec<u8>> = vec![
            vec![b'a'; big],
            vec![b'\0'; big],
            vec![b'='; big],
            vec![b':'; big],
            vec![b'@'; big],
            vec![0xff; big],
            b"://".repeat(big / 3),
            b"a://u:p@".repeat(big / 8),
            b"-a".repeat(big / 2),
            b"x:".repeat(big / 2),
        ];
        for s in &shapes {
            let args = parse_cmdline(s);
            let _ = redact_cmdline(&args);
            let _ = redact_cmdline(std::slice::from_ref(s));
        }
        let many = b"--token\0".repeat(1 << 16);
        let args = parse_cmdline(&many);
        assert_eq!(args.len(), 1 << 16);
        assert!(!redact_cmdline(&args).contains(REDACTED));
        // A secret 4 MiB value is fully replaced.
        let mut arg = b"--password=".to_vec();
        arg.extend(std::iter::repeat_n(b'x', big));
        assert_eq!(redact_cmdline(&[arg]), format!("--password={REDACTED}"));
    }
}
