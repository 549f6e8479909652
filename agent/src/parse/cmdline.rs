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
/// or two adjacent runs spell `api key`,
/// `access key`, `private key` or `session key`. Matching the *end* of a run
/// catches `PGPASSWORD`, `keyStorePassword` and `oauth` while leaving
/// `--tokenizer-path`, `--author` and `--max-tokens` alone.
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
/// 4. `key=value` where `key` looks secret (`--password=x`, `PGPASSWORD=x`,
///    `https://h/?token=x`) becomes `key=<redacted>`.
/// 5. `--flag` (starting with `-`, no `=`) whose name looks secret arms rule
///    1 for the next argument. Names starting with `no-` are not armed.
/// 6. `-p` is a password only for the programs known to take one there
///    (argv\[0\]'s file name): MySQL's and MariaDB's clients, whose `-pVALUE`
///    is the password attached, and sshpass. There `-pVALUE` becomes
///    `-p<redacted>` and `-p VALUE` redacts the next argument (for mysql
///    that may be a database name; a password is likelier meant). Elsewhere
///    `-p` is a port, a path or a flag (`ssh -p 22`, `mkdir -p`).
///
/// Everything else is kept byte-exact (lossy only for invalid UTF-8).
pub fn redact_cmdline(args: &[Vec<u8>]) -> String {
    let mut out = String::new();
    let mut next_is_secret = false;
    let short_p = args.first().is_some_and(|a| takes_password_p(a));
    for (i, raw) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let arg = String::from_utf8_lossy(raw);
        if std::mem::take(&mut next_is_secret) && !arg.starts_with('-') {
            out.push_str(REDACTED);
            continue;
        }
        // Rule 6.
        if short_p && i > 0 && !arg.starts_with("--") {
            if arg == "-p" {
                out.push_str("-p");
                next_is_secret = true;
                continue;
            }
            if arg.len() > 2 && arg.starts_with("-p") {
                out.push_str("-p");
                out.push_str(REDACTED);
                continue;
            }
        }
        next_is_secret = redact_arg(&arg, &mut out);
    }
    out
}

/// Whether a program (argv\[0\], a path or a name) takes its password as
/// `-p`: MySQL's and MariaDB's command-line tools, and sshpass.
fn takes_password_p(argv0: &[u8]) -> bool {
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    name == "sshpass"
        || name.starts_with("mysql")
        || name == "mariadb"
        || name.starts_with("mariadb-")
}

/// Appends the redacted form of one argument to `out`. Returns whether the
/// argument is a secret flag whose value is the next argument.
fn redact_arg(arg: &str, out: &mut String) -> bool {
    let arg = redact_urls(arg);
    let arg = redact_json_pairs(&arg);
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
            return false;
        }
    }

    // Rule 4: "key=value".
    if let Some(e) = eq {
        if looks_secret(&arg[..e]) {
            out.push_str(&arg[..=e]);
            out.push_str(REDACTED);
        } else {
            out.push_str(arg);
        }
        return false;
    }

    out.push_str(arg);

    // Rule 5: "--password" followed by the value as a separate argument.
    let Some(name) = arg.strip_prefix('-') else {
        return false;
    };
    let name = name.trim_start_matches('-');
    let negated = name
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("no-") || p.eq_ignore_ascii_case("no_"));
    !negated && looks_secret(name)
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

/// Two-component spellings of the multi-word secret words: the first
/// component must end with the first word and the next be the second word,
/// so `api-key`, `x_api_key` and `AWS_ACCESS_KEY_ID` match.
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("api", "key"),
    ("access", "key"),
    ("private", "key"),
    ("session", "key"),
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
    let lower = key.to_ascii_lowercase();
    // Every match contains one of these substrings. Checking them first
    // keeps the common case (and huge hostile keys) to a few fast scans.
    if !PREFILTER.iter().any(|w| lower.contains(w)) {
        return false;
    }
    let mut components = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|c| !c.is_empty())
        .peekable();
    while let Some(c) = components.next() {
        if SECRET_WORDS.iter().any(|w| c.ends_with(w)) || SECRET_RUNS.contains(&c) {
            return true;
        }
        if let Some(next) = components.peek()
            && SECRET_PAIRS
                .iter()
                .any(|(a, b)| c.ends_with(a) && next == b)
        {
            return true;
        }
    }
    false
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
