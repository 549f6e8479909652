//! `patchgap policy check` with the real binary: no collector, exit codes,
//! and every problem at its `file:line:column`.

use std::{path::Path, process::Command};

fn check(file: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_patchgap"))
        .args(["policy", "check"])
        .arg(file)
        .args(extra)
        // Nothing here may reach for a collector: point it nowhere.
        .env("PATCHGAP_COLLECTOR", "127.0.0.1:1")
        .output()
        .expect("run patchgap");
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy.example.toml")
}

#[test]
fn the_example_policy_checks_ok() {
    let file = example();
    let (code, out, err) = check(&file, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("{}: ok (3 tiers, 4 rules, 9 actions)\n", file.display())
    );
    assert_eq!(err, "");
}

#[test]
fn json_is_the_normalised_policy() {
    let (code, out, err) = check(&example(), &["-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tiers = v["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 3);
    assert_eq!(tiers[0]["number"], 1);
    assert_eq!(tiers[0]["actions"][1]["kind"], "isolate_affected_workloads");
    assert_eq!(tiers[0]["actions"][1]["approval"], "required");
    assert_eq!(tiers[0]["rules"][1]["min_score"], 9.0);
    assert_eq!(tiers[2]["actions"][0]["approval"], "auto");
    assert_eq!(
        v["guards"]["namespaces"],
        serde_json::json!(["kube-system"])
    );
}

#[test]
fn every_problem_is_printed_at_its_place_and_the_exit_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[tier]]\nnumber = 1\nname = \"one\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"open_incident_sev1\"\nmode = \"shadow\"\napproval = \"required\"\nrevert_after = \"-5m\"\n\n[guards]\nprotect_agent = false\n",
    )
    .unwrap();
    let (code, out, err) = check(&file, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    let f = file.display();
    assert_eq!(
        err,
        format!(
            "{f}:7:8: open_incident_sev1 has no shadow mode (it is a record, not a control): use observe or enforce\n\
             {f}:9:16: open_incident_sev1 cannot have revert_after: it is a record and changes nothing to revert\n\
             {f}:12:17: protect_agent = false: the agent, the collector and PID 1 are always protected, and no policy can lift that\n\
             error: {f}: 3 problem(s); a collector would refuse this policy\n"
        )
    );
}

#[test]
fn syntax_errors_and_unreadable_files_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.toml");
    std::fs::write(&file, "[[tier]]\nnumber = 1\nname = \"cut").unwrap();
    let (code, _, err) = check(&file, &[]);
    assert_eq!(code, Some(1));
    // Cut inside a string: reported where the file ends.
    let f = file.display();
    assert_eq!(
        err,
        format!(
            "{f}:3:12: invalid basic string, expected `\"`\n\
             error: {f}: 1 problem(s); a collector would refuse this policy\n"
        )
    );

    let missing = dir.path().join("missing.toml");
    let (code, _, err) = check(&missing, &[]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: reading the policy "), "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn warnings_go_to_stderr_and_the_check_passes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expired.toml");
    std::fs::write(
        &file,
        "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n\n[[exception]]\nadvisory = \"CVE-2024-3094\"\nticket = \"SEC-9\"\nexpires = 2020-01-01T00:00:00Z\n",
    )
    .unwrap();
    let (code, out, err) = check(&file, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("{}: ok (1 tiers, 1 rules, 0 actions)\n", file.display())
    );
    assert_eq!(
        err,
        format!(
            "{}:9:11: warning: this exception expired at 2020-01-01T00:00:00Z: it never applies\n",
            file.display()
        )
    );
}

/// Verification's `[verify]` table: shown in the JSON as written, and
/// each bad value at its place.
#[test]
fn the_verify_table_is_checked_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(example()).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("{example}\n[verify]\nevery = \"30s\"\nstreak = 5\nevidence = [\"loaded\", \"installed\"]\n"),
    )
    .unwrap();
    let (code, out, err) = check(&good, &["-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["verify"],
        serde_json::json!({"every": "30s", "streak": 5, "evidence": ["loaded", "installed"]})
    );
    let bad = dir.path().join("bad.toml");
    let lines = example.lines().count();
    std::fs::write(
        &bad,
        format!("{example}[verify]\nstreak = 0\nevidence = [\"installed\"]\n"),
    )
    .unwrap();
    let (code, out, err) = check(&bad, &[]);
    assert_eq!(code, Some(1), "{out}");
    let name = bad.display();
    assert!(
        err.contains(&format!(
            "{name}:{}:10: verify streak 0: successful runs in a row before containment is lifted, 1 to 1000\n",
            lines + 2
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:{}:12: verify the evidence levels must include \"loaded\"",
            lines + 3
        )),
        "{err}"
    );
    assert!(err.contains("2 problem(s)"), "{err}");
}
