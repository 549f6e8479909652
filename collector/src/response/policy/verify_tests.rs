//! The policy file's `[verify]` table: read, checked with `file:line:column`
//! errors, and shown in the policy's JSON.

use std::time::Duration;

use super::*;

const ONE_TIER: &str = "[[tier]]\nnumber = 1\nname = \"all\"\n\n[[tier.rule]]\n\n";

fn parse(verify: &str) -> Result<Policy, Vec<String>> {
    let text = format!("{ONE_TIER}[verify]\n{verify}");
    Policy::parse("p.toml", text.as_bytes())
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

/// Every bad table goes through here, with its expected errors.
fn check(verify: &str, expected: &[&str]) {
    match parse(verify) {
        Ok(p) => panic!("accepted {verify:?}: {:?}", p.verify),
        Err(e) => assert_eq!(e, expected, "{verify}"),
    }
}

#[test]
fn a_verify_table_sets_k_the_interval_and_the_evidence_levels() {
    let p = parse("every = \"30s\"\nstreak = 5\nevidence = [\"loaded\", \"installed\"]\n").unwrap();
    assert_eq!(p.verify.every, Some(Duration::from_secs(30)));
    assert_eq!(p.verify.streak, Some(5));
    assert_eq!(
        p.verify.evidence,
        Some(vec!["loaded".to_string(), "installed".to_string()])
    );
    // Shown as written in the policy's JSON (`policy check -o json`).
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["verify"],
        serde_json::json!({"every": "30s", "streak": 5, "evidence": ["loaded", "installed"]})
    );
    // A table of one key leaves the others to the flags or the built-in.
    let p = parse("streak = 1\n").unwrap();
    assert_eq!(
        (p.verify.every, p.verify.streak, p.verify.evidence),
        (None, Some(1), None)
    );
    // No table: nothing set, and nothing in the JSON.
    let p = Policy::parse("p.toml", ONE_TIER.as_bytes()).unwrap();
    assert!(p.verify.is_empty());
    assert!(serde_json::to_value(&p).unwrap().get("verify").is_none());
}

#[test]
fn bad_verify_values_name_file_line_and_column() {
    check(
        "streak = 0\n",
        &[
            "p.toml:8:10: verify streak 0: successful runs in a row before containment is lifted, 1 to 1000",
        ],
    );
    check(
        "streak = -3\n",
        &[
            "p.toml:8:10: verify streak -3: successful runs in a row before containment is lifted, 1 to 1000",
        ],
    );
    check(
        "every = \"500ms\"\n",
        &["p.toml:8:9: verify every 500ms: at least 1s (each run reads the store)"],
    );
    check(
        "every = \"30\"\n",
        &[
            "p.toml:8:9: verify duration \"30\" has no unit or an unknown one (use ms, s, m, h or d)",
        ],
    );
    check(
        "every = \"2d\"\n",
        &["p.toml:8:9: verify every 2880m: at most 24h (a silent host must show the same day)"],
    );
    check(
        "evidence = [\"installed\"]\n",
        &[
            "p.toml:8:12: verify the evidence levels must include \"loaded\": a process that runs an affected version is never converged (add \"installed\" or \"declared\" to count more)",
        ],
    );
    // Each bad entry at its own place, all reported (key by key: every,
    // streak, evidence).
    check(
        "evidence = [\"loaded\", \"mapped\", \"loaded\"]\nstreak = 0\n",
        &[
            "p.toml:9:10: verify streak 0: successful runs in a row before containment is lifted, 1 to 1000",
            "p.toml:8:23: verify evidence level \"mapped\" is not one of loaded, installed, declared",
            "p.toml:8:33: verify evidence level \"loaded\" is listed twice",
        ],
    );
}

#[test]
fn unknown_keys_and_wrong_types_in_verify_are_refused_where_they_are() {
    let e = parse("k = 3\n").unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "p.toml:8:1: unknown field `k`, expected one of `every`, `streak`, `evidence`"
        ),
        "{e:?}"
    );
    let e = parse("streak = \"3\"\n").unwrap_err();
    assert!(
        e[0].starts_with("p.toml:8:10: invalid type: string"),
        "{e:?}"
    );
}
