//! The daemons' config file: TOML whose keys are the command's long flags.
//!
//! `patchgap-agent run --config /etc/patchgap/agent.toml` and
//! `patchgap-collector --config /etc/patchgap/collector.toml` read one. There
//! is no second vocabulary to learn or to drift: the key `max-cpu-percent`
//! is the flag `--max-cpu-percent`, with the same parser, the same checks and
//! the same `--help` text. A flag given on the command line, or its
//! environment variable, wins over the key; the key wins over the built-in
//! default. A key that is not a flag of the command, or a value of the wrong
//! shape, stops the start with the file and the key named, so a typo in
//! /etc never silently leaves a default in force.
//!
//! How: the command line is parsed once as given, to learn which arguments
//! it (or the environment) already set. Every key whose argument is still at
//! its default becomes `--key=value` at the end of the argument list, and the
//! caller parses that list for real. Clap then checks the file's values
//! exactly as it checks flags.
//!
//! **Invariant:** [`parse`] does no I/O and knows no daemon; only [`expand`]
//! reads the one file named by `--config`.

use std::{ffi::OsString, path::PathBuf};

use clap::{ArgAction, Command, parser::ValueSource};

/// The id of the config-file argument that a command declares
/// (`#[arg(long, value_name = "FILE")] config: Option<PathBuf>`).
pub const CONFIG_ARG: &str = "config";

/// The largest config file read (it holds a few dozen keys).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is {len} bytes; at most {MAX_FILE_BYTES} are read")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One key of the file, turned into the flags it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The argument's id in the command (`max_cpu_percent`).
    pub id: String,
    /// The flags to add when the command line left the argument at its
    /// default: `["--max-cpu-percent=5"]`, one per value for a repeatable
    /// flag, none for a switch set to false.
    pub flags: Vec<String>,
}

/// Parses a config file's text against `cmd` (the command or subcommand
/// that declares the flags). Pure: no I/O. Errors name the key and say what
/// was expected; TOML syntax errors carry their line and column.
pub fn parse(text: &str, cmd: &Command) -> Result<Vec<Setting>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && a.get_id() != CONFIG_ARG)
            .ok_or_else(|| {
                format!(
                    "`{key}` is not a setting of `{}` (keys are its long flags: {})",
                    cmd.get_name(),
                    known_keys(cmd).join(", ")
                )
            })?;
        let flag = format!("--{key}");
        let flags = match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => vec![flag],
                toml::Value::Boolean(false) => vec![],
                other => {
                    return Err(format!(
                        "`{key}` is a switch: true or false, not {}",
                        other.type_str()
                    ));
                }
            },
            ArgAction::Set => vec![format!("{flag}={}", scalar(key, value)?)],
            ArgAction::Append => match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| scalar(key, v).map(|s| format!("{flag}={s}")))
                    .collect::<Result<_, _>>()?,
                // `[label]` with `cluster = "prod"` stands for --label cluster=prod.
                toml::Value::Table(t) => t
                    .iter()
                    .map(|(k, v)| scalar(key, v).map(|s| format!("{flag}={k}={s}")))
                    .collect::<Result<_, _>>()?,
                other => vec![format!("{flag}={}", scalar(key, other)?)],
            },
            _ => return Err(format!("`{key}` cannot be set from a file")),
        };
        out.push(Setting {
            id: arg.get_id().to_string(),
            flags,
        });
    }
    Ok(out)
}

/// A key's value as the text of a flag's value. Tables and arrays are
/// refused here: only repeatable flags take several values.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "`{key}` takes one value (a string, number or boolean), not {}",
            other.type_str()
        )),
    }
}

/// The keys a file may hold for `cmd`: its long flags but `--config`.
pub fn known_keys(cmd: &Command) -> Vec<&str> {
    cmd.get_arguments()
        .filter(|a| a.get_id() != CONFIG_ARG)
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "help" && *l != "version")
        .collect()
}

/// Returns `args` with the settings of the `--config FILE` it names added for
/// every argument that the command line and the environment left at its
/// default. Without `--config`, or when `args` does not parse (clap then
/// reports the error on the caller's parse), returns `args` unchanged.
///
/// `cmd` is the whole command (`Cli::command()`); the file applies to the
/// subcommand that was run, when that declares [`CONFIG_ARG`]. A parent's
/// `--config` is not read for a subcommand it runs (`patchgap-collector
/// --config F check`): the file's keys are the parent's flags, not the
/// subcommand's.
pub fn expand(cmd: Command, args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let Ok(matches) = cmd.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    // Walk down to the subcommand that was run, keeping its definition.
    let (mut sub_cmd, mut sub_matches) = (&cmd, &matches);
    let target = loop {
        match sub_matches.subcommand() {
            Some((name, m)) => {
                sub_cmd = sub_cmd
                    .find_subcommand(name)
                    .expect("clap matched a subcommand it defines");
                sub_matches = m;
            }
            None => match sub_matches.try_get_one::<PathBuf>(CONFIG_ARG) {
                Ok(Some(path)) => break Some((sub_cmd, sub_matches, path.clone())),
                _ => break None,
            },
        }
    };
    let Some((target_cmd, target_matches, path)) = target else {
        return Ok(args);
    };
    let text = read_bounded(&path)?;
    let settings = parse(&text, target_cmd).map_err(|message| ConfigError::Invalid {
        path: path.clone(),
        message,
    })?;
    let mut args = args;
    for setting in settings {
        let given = matches!(
            target_matches.value_source(&setting.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !given {
            args.extend(setting.flags.into_iter().map(OsString::from));
        }
    }
    Ok(args)
}

fn read_bounded(path: &std::path::Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            len: text.len() as u64,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    /// A command shaped like the daemons': a value with a default, one read
    /// from the environment, a switch, a repeatable flag, and the file.
    fn cmd() -> Command {
        Command::new("d").subcommand(
            Command::new("run")
                .arg(
                    Arg::new(CONFIG_ARG)
                        .long("config")
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(
                    Arg::new("interval")
                        .long("interval")
                        .default_value("30")
                        .value_parser(clap::value_parser!(u64)),
                )
                .arg(
                    Arg::new("collector")
                        .long("collector")
                        .env("PATCHGAP_CONFIG_TEST_COLLECTOR")
                        .default_value("127.0.0.1:7373"),
                )
                .arg(
                    Arg::new("no_ebpf")
                        .long("no-ebpf")
                        .action(ArgAction::SetTrue),
                )
                .arg(Arg::new("label").long("label").action(ArgAction::Append)),
        )
    }

    fn run(file: &str, extra: &[&str]) -> Result<clap::ArgMatches, String> {
        let dir = tempfile_dir();
        let path = dir.join("d.toml");
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = ["d", "run", "--config"].map(OsString::from).to_vec();
        args.push(path.clone().into());
        args.extend(extra.iter().map(OsString::from));
        let args =
            expand(cmd(), args).map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)));
        let _ = std::fs::remove_dir_all(&dir);
        let m = cmd()
            .try_get_matches_from(args?)
            .map_err(|e| e.to_string())?;
        Ok(m.subcommand_matches("run").unwrap().clone())
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "patchgap-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_key_replaces_the_default_and_a_flag_replaces_the_key() {
        let m = run("interval = 5\n", &[]).unwrap();
        assert_eq!(m.get_one::<u64>("interval"), Some(&5));
        let m = run("interval = 5\n", &["--interval", "7"]).unwrap();
        assert_eq!(m.get_one::<u64>("interval"), Some(&7));
        let m = run("", &[]).unwrap();
        assert_eq!(m.get_one::<u64>("interval"), Some(&30));
    }

    #[test]
    fn the_environment_replaces_the_key() {
        // The only test that sets this variable, so tests running in
        // parallel do not see it.
        // SAFETY: no other thread reads or writes this variable.
        unsafe { std::env::set_var("PATCHGAP_CONFIG_TEST_COLLECTOR", "10.0.0.9:7373") };
        let m = run("collector = \"10.0.0.5:7373\"\n", &[]);
        // SAFETY: as above.
        unsafe { std::env::remove_var("PATCHGAP_CONFIG_TEST_COLLECTOR") };
        assert_eq!(
            m.unwrap()
                .get_one::<String>("collector")
                .map(String::as_str),
            Some("10.0.0.9:7373")
        );
    }

    #[test]
    fn switches_and_repeatable_flags() {
        let m = run(
            "no-ebpf = true\nlabel = { cluster = \"prod\", region = \"eu\" }\n",
            &[],
        )
        .unwrap();
        assert!(m.get_flag("no_ebpf"));
        let labels: Vec<_> = m.get_many::<String>("label").unwrap().collect();
        assert_eq!(labels, ["cluster=prod", "region=eu"]);
        let m = run("no-ebpf = false\nlabel = [\"a=1\"]\n", &[]).unwrap();
        assert!(!m.get_flag("no_ebpf"));
        assert_eq!(
            m.get_many::<String>("label").unwrap().collect::<Vec<_>>(),
            ["a=1"]
        );
        // Labels on the command line replace the file's, all of them.
        let m = run("label = [\"a=1\"]\n", &["--label", "b=2"]).unwrap();
        assert_eq!(
            m.get_many::<String>("label").unwrap().collect::<Vec<_>>(),
            ["b=2"]
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_key() {
        let e = run("intervall = 5\n", &[]).unwrap_err();
        assert!(e.contains("`intervall` is not a setting of `run`"), "{e}");
        assert!(e.contains("interval, collector, no-ebpf, label"), "{e}");
        let e = run("no-ebpf = \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains("`no-ebpf` is a switch"), "{e}");
        let e = run("interval = [1, 2]\n", &[]).unwrap_err();
        assert!(e.contains("`interval` takes one value"), "{e}");
        let e = run("config = \"/etc/x\"\n", &[]).unwrap_err();
        assert!(e.contains("`config` is not a setting"), "{e}");
        let e = run("interval = \n", &[]).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        // A value of the right shape but the wrong type is clap's to refuse,
        // as for the flag.
        let e = run("interval = \"soon\"\n", &[]).unwrap_err();
        assert!(e.contains("--interval"), "{e}");
    }

    #[test]
    fn a_missing_or_oversized_file_is_an_error() {
        let args = ["d", "run", "--config", "/nonexistent/patchgap.toml"].map(OsString::from);
        let e = expand(cmd(), args.to_vec()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        let big = format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize));
        let e = run(&big, &[]).unwrap_err();
        assert!(e.contains("at most 65536"), "{e}");
    }

    #[test]
    fn without_config_the_arguments_are_unchanged() {
        let args: Vec<OsString> = ["d", "run", "--interval", "3"].map(OsString::from).to_vec();
        assert_eq!(expand(cmd(), args.clone()).unwrap(), args);
        // Arguments clap refuses are left for clap to report.
        let args: Vec<OsString> = ["d", "run", "--bogus"].map(OsString::from).to_vec();
        assert_eq!(expand(cmd(), args.clone()).unwrap(), args);
    }
}
