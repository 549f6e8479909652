//! Incidents end to end (issue 15, point 1): a real OSV record (PyPA's
//! PYSEC-2023-228, pip before 23.3, from the shared data set's copy in
//! testdata/osv) against Debian's own python3 running here, whose
//! dist-packages hold pip 23.0.1; a real agent scans it into a real
//! collector that requires tokens, and the real `patchgap` binary opens,
//! lists and shows the incident.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use patchgap_collector::{
    CollectorConfig, SqliteStore,
    auth::{Scope, TokenPolicy, issue_local},
};
use patchgap_tests::{Harness, Proc, spawn_ready};
use serde_json::Value;

mod common;
use common::{patchgap, stderr};

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        )
    })
}

fn token(data_dir: &Path, subject: &str, scopes: &[Scope]) -> String {
    let store = SqliteStore::open(data_dir).unwrap();
    issue_local(
        data_dir,
        &store,
        subject,
        scopes,
        None,
        TokenPolicy::default(),
    )
    .unwrap()
    .0
}

fn osv(rel: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "osv", rel]
        .iter()
        .collect();
    p.display().to_string()
}

/// Debian's python3 (not pyenv's shim: the pid must be the interpreter's).
fn system_python() -> Proc {
    spawn_ready(Command::new("/usr/bin/python3").args([
        "-c",
        "import time; print('ready', flush=True); time.sleep(120)",
    ]))
}

/// The host whose pid list in `scope.pids` holds `pid`.
fn host_of(incident: &Value, pid: u32) -> Option<String> {
    incident["scope"]["pids"]
        .as_object()?
        .iter()
        .find(|(_, pids)| {
            pids.as_array()
                .is_some_and(|p| p.iter().any(|x| x.as_u64() == Some(u64::from(pid))))
        })
        .map(|(host, _)| host.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_opens_once_scopes_the_real_process_and_keeps_its_log() {
    let h = Harness::start_with(CollectorConfig {
        require_tokens: true,
        incident_refresh: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let dir = h.data_dir.path();
    let feeds = token(dir, "feeds", &[Scope::Advisories, Scope::Read]);
    let reader = token(dir, "reader", &[Scope::Read]);
    let alice = token(dir, "alice", &[Scope::Respond, Scope::Read]);

    let python = system_python();
    h.sync().await;
    let imported = ok_json(&patchgap(
        &h,
        &feeds,
        &[
            "advisories",
            "import",
            &osv("pypa/vulns/pip/PYSEC-2023-228.yaml"),
            "-o",
            "json",
        ],
    ));
    assert_eq!(imported["added"], 1, "{imported}");

    // Opening needs `respond`: a read token is refused, naming it.
    let refused = patchgap(
        &h,
        &reader,
        &["incident", "open", "--advisory", "CVE-2023-5752"],
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("respond"), "{}", stderr(&refused));

    // By the CVE alias: the incident is keyed by the stored id.
    let started = Instant::now();
    let opened = ok_json(&patchgap(
        &h,
        &alice,
        &[
            "incident",
            "open",
            "--advisory",
            "CVE-2023-5752",
            "-o",
            "json",
        ],
    ));
    let open_ms = started.elapsed().as_millis();
    assert_eq!(opened["created"], true, "{opened}");
    let id = opened["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("INC-"), "{id}");
    assert_eq!(opened["dedup_key"], "advisory:PYSEC-2023-228");
    assert_eq!(opened["state"], "scoped");
    assert_eq!(opened["tier"], Value::Null);
    assert_eq!(opened["opened_by"], "alice");
    assert_eq!(opened["source"]["kind"], "advisory");
    assert_eq!(opened["source"]["advisory"], "PYSEC-2023-228");
    assert_eq!(opened["source"]["asked_as"], "CVE-2023-5752");
    let host = host_of(&opened, python.pid())
        .unwrap_or_else(|| panic!("pid {} is not in the scope: {opened}", python.pid()));
    let scope = &opened["scope"];
    assert!(
        scope["hosts"]
            .as_array()
            .unwrap()
            .contains(&Value::from(host.clone()))
    );
    // Our process has pip installed, not loaded; another python3 on this
    // host that imported pip would make the strongest evidence `opened`.
    assert!(
        ["installed", "opened", "mapped"].contains(&scope["evidence"].as_str().unwrap()),
        "{scope}"
    );
    assert!(
        scope["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("pkg:pypi/pip@23.0.1")),
        "{scope}"
    );
    assert!(
        !scope["workloads"].as_array().unwrap().is_empty(),
        "{scope}"
    );
    assert!(scope["processes"].as_u64().unwrap() >= 1);
    eprintln!(
        "opened {id} in {open_ms} ms (the CLI's start included): {} process(es)",
        scope["processes"]
    );

    // Again, by the id itself: the same incident, nothing new.
    let again = patchgap(
        &h,
        &alice,
        &["incident", "open", "--advisory", "PYSEC-2023-228"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.starts_with(&format!("already open: {id}\n")), "{text}");
    let again = ok_json(&patchgap(
        &h,
        &alice,
        &[
            "incident",
            "open",
            "--advisory",
            "CVE-2023-5752",
            "-o",
            "json",
        ],
    ));
    assert_eq!(
        (again["id"].as_str(), &again["created"]),
        (Some(id.as_str()), &Value::from(false))
    );
    // A host filter is another incident.
    let on_host = ok_json(&patchgap(
        &h,
        &alice,
        &[
            "incident",
            "open",
            "--advisory",
            "CVE-2023-5752",
            "--host",
            &host,
            "-o",
            "json",
        ],
    ));
    assert_eq!(on_host["created"], true);
    assert_eq!(
        on_host["dedup_key"],
        format!("advisory:PYSEC-2023-228 host={host}")
    );
    assert_ne!(on_host["id"], opened["id"]);
    assert!(host_of(&on_host, python.pid()).is_some());

    // A new exposed process: the collector's refresher appends one
    // scope_changed that adds it.
    let second = system_python();
    h.sync().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let shown = ok_json(&patchgap(
            &h,
            &reader,
            &["incident", "show", &id, "-o", "json"],
        ));
        if host_of(&shown, second.pid()).is_some() {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "the scope never gained pid {}: {shown}",
            second.pid()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events = shown["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..3],
        ["opened", "scope_changed", "state_changed"],
        "{shown}"
    );
    // Then the collector's own: the new scope, and the policy's plan
    // (PYSEC-2023-228 is low: tier 3, a patch window, nothing to approve).
    assert!(kinds[3..].contains(&"scope_changed"), "{kinds:?}");
    assert!(
        kinds[3..]
            .iter()
            .all(|k| ["scope_changed", "tier_routed", "planned", "state_changed"].contains(k)),
        "{kinds:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0]["actor"], "alice");
    assert_eq!(events[0]["dedup_key"], "advisory:PYSEC-2023-228");
    assert_eq!(events[2]["from"], "detected");
    assert_eq!(events[2]["to"], "scoped");
    let gained = events
        .iter()
        .find(|e| {
            e["kind"] == "scope_changed"
                && e["added"]["pids"][&host]
                    .as_array()
                    .is_some_and(|p| p.contains(&Value::from(second.pid())))
        })
        .unwrap_or_else(|| panic!("no event added pid {}: {shown}", second.pid()));
    assert_eq!(gained["actor"], "collector");
    assert_eq!(shown["more_events"], false);

    // The list, newest first, for a read token.
    let list = ok_json(&patchgap(&h, &reader, &["incidents", "-o", "json"]));
    let ids: Vec<&str> = list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [on_host["id"].as_str().unwrap(), id.as_str()]);
    assert!(list["incidents"][0].get("events").is_none());
    // The tiers listed are the policy's routing: which policy, said.
    assert_eq!(list["policy"]["source"], "built-in", "{list}");
    assert!(list["policy"]["reload_error"].is_null(), "{list}");
    let page = ok_json(&patchgap(
        &h,
        &reader,
        &["incidents", "--limit", "1", "-o", "json"],
    ));
    assert_eq!(page["incidents"].as_array().unwrap().len(), 1);
    let next = page["next_before"].as_str().unwrap().to_string();
    let rest = ok_json(&patchgap(
        &h,
        &reader,
        &["incidents", "--before", &next, "-o", "json"],
    ));
    assert_eq!(rest["incidents"][0]["id"], id.as_str());

    // For people: a table, and the log under the incident.
    let table = patchgap(&h, &reader, &["incidents"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains("planned"), "{table}");
    let detail = patchgap(&h, &reader, &["incident", "show", &id]);
    let detail = String::from_utf8_lossy(&detail.stdout);
    assert!(detail.contains("events:"), "{detail}");
    assert!(detail.contains("detected -> scoped"), "{detail}");
    assert!(detail.contains(&python.pid().to_string()), "{detail}");

    // Errors a responder can act on.
    let unknown = patchgap(
        &h,
        &alice,
        &["incident", "open", "--advisory", "CVE-1999-0001"],
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no advisory is known as CVE-1999-0001"),
        "{}",
        stderr(&unknown)
    );
    let missing = patchgap(&h, &reader, &["incident", "show", "INC-999"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no incident is known as INC-999"),
        "{}",
        stderr(&missing)
    );
    h.stop().await;
}

/// One tier that takes everything, with one action that needs an
/// approval. `observe`: the approval is recorded and nothing is carried
/// out. The action touches no workload, so its plan (and hash) does not
/// move when other python3 processes on this shared host come and go
/// between `plan` and `approve`.
const APPROVAL_POLICY: &str = "[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier.action]]\nkind = \"open_incident_sev1\"\nmode = \"observe\"\napproval = \"required\"\n";

/// The first action of `incident show -o json` (the only one here).
fn first_action(h: &Harness, token: &str, id: &str) -> Value {
    let shown = ok_json(&patchgap(h, token, &["incident", "show", id, "-o", "json"]));
    shown["actions"][0].clone()
}

/// Issue 15, point 3: a tier 1 approval needs the `approve` scope, held
/// by someone other than the requester. Bob is not the requester but
/// holds only `respond`: the collector refuses him before the incident
/// is touched (PermissionDenied, audited). Alice holds `approve` too but
/// asked for the plan: refused. Carol, with `approve`, approves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_tier_1_plan_needs_the_approve_scope_and_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, APPROVAL_POLICY).unwrap();
    let h = Harness::start_with(CollectorConfig {
        require_tokens: true,
        policy: Some(policy.clone()),
        ..Default::default()
    })
    .await;
    let data = h.data_dir.path();
    let feeds = token(data, "feeds", &[Scope::Advisories, Scope::Read]);
    let alice = token(data, "alice", &[Scope::Respond, Scope::Read]);
    let alice_approver = token(data, "alice", &[Scope::Approve, Scope::Read]);
    let bob = token(data, "bob", &[Scope::Respond, Scope::Read]);
    let carol = token(data, "carol", &[Scope::Approve, Scope::Read]);
    let admin = token(data, "admin", &[Scope::Admin]);

    let _python = system_python();
    h.sync().await;
    ok_json(&patchgap(
        &h,
        &feeds,
        &[
            "advisories",
            "import",
            &osv("pypa/vulns/pip/PYSEC-2023-228.yaml"),
            "-o",
            "json",
        ],
    ));
    let opened = ok_json(&patchgap(
        &h,
        &alice,
        &[
            "incident",
            "open",
            "--advisory",
            "PYSEC-2023-228",
            "-o",
            "json",
        ],
    ));
    let id = opened["id"].as_str().unwrap().to_string();
    let plan = ok_json(&patchgap(
        &h,
        &alice,
        &["incident", "plan", &id, "-o", "json"],
    ));
    assert_eq!(plan["tier"], 1, "{plan}");
    assert_eq!(plan["actions"][0]["approval"], "required", "{plan}");
    assert_eq!(
        plan["policy"]["source"],
        policy.display().to_string(),
        "{plan}"
    );
    let hash = plan["hash"].as_str().unwrap().to_string();

    // Bob, `respond` only, not the requester: refused for the scope.
    let refused = patchgap(&h, &bob, &["incident", "approve", &id, "--plan", &hash]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("needs the `approve` scope"),
        "{}",
        stderr(&refused)
    );
    let tail = ok_json(&patchgap(
        &h,
        &admin,
        &["audit", "tail", "--limit", "1000", "-o", "json"],
    ));
    assert!(
        tail["entries"].as_array().unwrap().iter().any(|e| {
            e["method"] == "Query/ApproveIncident"
                && e["subject"] == "bob"
                && e["result"]
                    .as_str()
                    .unwrap()
                    .starts_with("refused: PermissionDenied")
        }),
        "{tail}"
    );
    assert_eq!(first_action(&h, &alice, &id)["approved_by"], Value::Null);

    // Alice holds `approve` under another token, but asked for the plan.
    let own = patchgap(
        &h,
        &alice_approver,
        &["incident", "approve", &id, "--plan", &hash],
    );
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("alice asked for this plan"),
        "{}",
        stderr(&own)
    );
    assert_eq!(first_action(&h, &alice, &id)["approved_by"], Value::Null);

    // Carol holds `approve` and did not ask: approved.
    let approved = ok_json(&patchgap(
        &h,
        &carol,
        &["incident", "approve", &id, "--plan", &hash, "-o", "json"],
    ));
    assert_eq!(approved["actions"][0]["approved_by"], "carol", "{approved}");
    // Observed only: approved, and nothing requested of the agents.
    assert_eq!(approved["requested"], serde_json::json!([]), "{approved}");
    h.stop().await;
}
