use super::*;

/// 2026-12-06T00:00:00Z.
const NOW: i64 = 1_796_515_200_000;

/// A policy's errors as `policy check` prints them.
fn errors(text: &str) -> Vec<String> {
    match Policy::parse_at("p.toml", text.as_bytes(), NOW) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Every bad file goes through here, so none can be written without its
/// expected errors.
fn check(text: &str, expected: &[&str]) {
    assert_eq!(errors(text), expected, "{text}");
}

const ONE_TIER: &str = "[[tier]]\nnumber = 1\nname = \"all\"\n\n[[tier.rule]]\n\n";

fn with_action(action: &str) -> String {
    format!("{ONE_TIER}[[tier.action]]\n{action}")
}

#[test]
fn the_example_file_is_the_builtin_policy() {
    let text = include_str!("../../../../packaging/policy.example.toml");
    let parsed = Policy::parse_at("policy.example.toml", text.as_bytes(), NOW).unwrap();
    assert_eq!(parsed, Policy::builtin());
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(
        (
            parsed.tiers.len(),
            parsed.rule_count(),
            parsed.action_count()
        ),
        (3, 4, 9)
    );
}

#[test]
fn the_builtin_policy_is_the_seeds() {
    let p = Policy::builtin();
    let kinds =
        |n: usize| -> Vec<&str> { p.tiers[n].actions.iter().map(|a| a.kind.as_str()).collect() };
    assert_eq!(
        kinds(0),
        [
            "freeze_deployments",
            "isolate_affected_workloads",
            "rotate_scoped_tokens",
            "open_incident_sev1"
        ]
    );
    assert_eq!(
        kinds(1),
        [
            "block_new_artifacts_with_package",
            "start_patched_canary",
            "open_incident_sev2"
        ]
    );
    assert_eq!(kinds(2), ["queue_for_patch_window", "open_ticket_sev3"]);
    for t in &p.tiers[..2] {
        assert!(
            t.actions
                .iter()
                .all(|a| a.mode == Mode::Enforce && a.approval == Approval::Required)
        );
    }
    assert!(
        p.tiers[2]
            .actions
            .iter()
            .all(|a| a.approval == Approval::Auto)
    );
    assert_eq!(p.guards.namespaces, ["kube-system"]);
}

#[test]
fn bad_files_name_the_line_and_column() {
    // Truncated in the middle of a string.
    check(
        "[[tier]]\nnumber = 1\nname = \"x\"\n[[tier.action]]\nkind = \"isolate_aff",
        &["p.toml:5:20: invalid basic string, expected `\"`"],
    );
    // Truncated after a table header's opening brackets.
    check(
        "[[tier]]\nnumber = 1\n[[tie",
        &["p.toml:3:6: unclosed array table, expected `]]`"],
    );
    check(
        &with_action("kind = \"freeze_everything\"\nmode = \"enforce\"\napproval = \"auto\"\n"),
        &[
            "p.toml:8:8: unknown variant `freeze_everything`, expected one of `freeze_deployments`, `isolate_affected_workloads`, `rotate_scoped_tokens`, `open_incident_sev1`, `block_new_artifacts_with_package`, `start_patched_canary`, `open_incident_sev2`, `queue_for_patch_window`, `open_ticket_sev3`, `freeze_cgroup`, `kill_processes`",
        ],
    );
    check(
        "[[tier]]\nnumber = 1\nname = \"x\"\nseverity = [\"high\"]\n",
        &[
            "p.toml:4:1: unknown field `severity`, expected one of `number`, `name`, `rule`, `action`",
        ],
    );
    check(
        &with_action(
            "kind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"required\"\nrevert_after = \"-5m\"\n",
        ),
        &[
            "p.toml:11:16: revert_after \"-5m\": a TTL cannot be negative: write a duration such as 30m, 2h or 1d",
        ],
    );
    check(
        &with_action(
            "kind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"required\"\nallow = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n",
        ),
        &["p.toml:11:25: allow \"10.0.0.0/33\": the prefix length must be 0 to 32"],
    );
    check(
        "[[tier]]\nnumber = 1\nname = \"a\"\n[[tier.rule]]\n\n[[tier]]\nnumber = 1\nname = \"b\"\n[[tier.rule]]\n",
        &["p.toml:7:10: tier 1 is defined twice (first on line 2)"],
    );
    check(
        &format!(
            "{ONE_TIER}[[exception]]\nadvisory = \"CVE-2024-1\"\nexpires = 2027-01-01T00:00:00Z\n"
        ),
        &[
            "p.toml:7:1: an exception needs a ticket (ticket = \"SEC-123\"): who accepted the risk, and where",
        ],
    );
}

#[test]
fn bad_values_are_refused_where_they_are() {
    let action = |rest: &str| {
        with_action(&format!(
            "kind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"required\"\n{rest}"
        ))
    };
    check(
        &action("revert_after = \"0m\"\n"),
        &[
            "p.toml:11:16: revert_after \"0m\": a TTL of zero would lift the action at once: leave revert_after out to keep it until a responder reverts it",
        ],
    );
    check(
        &action("revert_after = \"5 minutes\"\n"),
        &[
            "p.toml:11:16: revert_after \"5 minutes\": not a duration such as 30m, 2h or 1d (units: s, m, h, d)",
        ],
    );
    check(
        &action("revert_after = \"90\"\n"),
        &["p.toml:11:16: revert_after \"90\": a TTL needs a unit: s, m, h or d (such as 30m)"],
    );
    check(
        &action("revert_after = \"99999999999999999d\"\n"),
        &[
            "p.toml:11:16: revert_after \"99999999999999999d\": longer than 366d: leave revert_after out and revert by hand",
        ],
    );
    check(
        &action("allow = [\"198.51.100.7/24\", \"example.com\"]\n"),
        &[
            "p.toml:11:10: allow \"198.51.100.7/24\" has host bits set: the network is 198.51.100.0/24",
            "p.toml:11:29: allow \"example.com\" is not an IP network such as 198.51.100.0/24",
        ],
    );
    check(
        &action("max_replica_share = 1.5\n"),
        &[
            "p.toml:11:21: max_replica_share 1.5 is out of range: a share of a workload's replicas, more than 0 and at most 1 (0.5 is half)",
        ],
    );
    check(
        &with_action(
            "kind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\nallow = [\"10.0.0.0/8\"]\nmax_replica_share = 0.5\n",
        ),
        &[
            "p.toml:11:9: allow applies to isolate_affected_workloads only, not open_ticket_sev3",
            "p.toml:12:21: max_replica_share applies to isolate_affected_workloads, freeze_cgroup and kill_processes, not open_ticket_sev3",
        ],
    );
    check(
        "[[tier]]\nnumber = 1\nname = \"x\"\n[[tier.rule]]\nmin_score = 11\necosystem = [\"pip\"]\npurl_prefix = [\"pypi/torch\"]\n",
        &[
            "p.toml:5:13: min_score 11 is not a CVSS score (0 to 10)",
            "p.toml:6:14: unknown ecosystem \"pip\" (expected one of deb, rpm, apk, pypi, npm, maven, golang, cargo)",
            "p.toml:7:16: purl_prefix \"pypi/torch\" is not the start of a purl, such as \"pkg:pypi/torch\"",
        ],
    );
    check(
        "[[tier]]\nnumber = 1\nname = \"x\"\n[[tier.rule]]\nseverity = [\"severe\"]\n",
        &[
            "p.toml:5:13: unknown variant `severe`, expected one of `low`, `medium`, `high`, `critical`",
        ],
    );
    check(
        "[[tier]]\nnumber = 0\nname = \"a\"\n[[tier.rule]]\n[[tier]]\nnumber = 3\nname = \"\"\n[[tier.rule]]\n",
        &[
            "p.toml:2:10: tier 0: tiers are numbered from 1",
            "p.toml:7:8: a tier needs a name",
        ],
    );
    check(
        "[[tier]]\nnumber = 1\nname = \"a\"\n[[tier.rule]]\n[[tier]]\nnumber = 3\nname = \"c\"\n[[tier.rule]]\n",
        &["p.toml:6:1: tier 3 in a policy of 2 tier(s): number the tiers 1 to 2 without gaps"],
    );
    check(
        "# nothing\n",
        &[
            "p.toml:1:1: a policy needs at least one [[tier]] (without a file, the built-in three tiers apply)",
        ],
    );
    let e = errors("[[tier]]\nnumber = 1\nname = \"\u{e9}\u{e9}\" = 2\n");
    assert!(
        e[0].starts_with("p.toml:3:13: "),
        "columns count characters: {e:?}"
    );
    let mut bytes = ONE_TIER.as_bytes().to_vec();
    bytes.extend_from_slice(b"# \xff\n");
    let e = Policy::parse_at("p.toml", &bytes, NOW).unwrap_err();
    assert_eq!(e[0].to_string(), "p.toml:7:3: not valid UTF-8");
    let big = vec![b'#'; MAX_POLICY_BYTES + 1];
    let e = Policy::parse_at("p.toml", &big, NOW).unwrap_err();
    assert!(e[0].reason.contains("at most 1048576"), "{e:?}");
}

#[test]
fn actions_no_executor_can_perform_are_refused() {
    for kind in [
        "open_incident_sev1",
        "open_incident_sev2",
        "open_ticket_sev3",
        "queue_for_patch_window",
    ] {
        check(
            &with_action(&format!("kind = \"{kind}\"\nmode = \"shadow\"\napproval = \"auto\"\n")),
            &[format!("p.toml:9:8: {kind} has no shadow mode (it is a record, not a control): use observe or enforce").as_str()],
        );
    }
    check(
        &with_action(
            "kind = \"kill_processes\"\nmode = \"shadow\"\napproval = \"required\"\nrevert_after = \"1h\"\n",
        ),
        &[
            "p.toml:9:8: kill_processes has no shadow mode (it blocks nothing whose attempts could be counted): use observe or enforce",
            "p.toml:11:16: kill_processes cannot have revert_after: a killed process cannot be brought back",
        ],
    );
    check(
        &with_action(
            "kind = \"open_incident_sev1\"\nmode = \"enforce\"\napproval = \"auto\"\nrevert_after = \"1h\"\n",
        ),
        &[
            "p.toml:11:16: open_incident_sev1 cannot have revert_after: it is a record and changes nothing to revert",
        ],
    );
    // Shadow is fine where a control can count what it would block.
    for kind in [
        "isolate_affected_workloads",
        "freeze_deployments",
        "block_new_artifacts_with_package",
    ] {
        let text = with_action(&format!(
            "kind = \"{kind}\"\nmode = \"shadow\"\napproval = \"auto\"\n"
        ));
        Policy::parse_at("p.toml", text.as_bytes(), NOW).unwrap();
    }
    check(
        &with_action(
            "kind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\n[[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"observe\"\napproval = \"auto\"\n",
        ),
        &["p.toml:12:8: tier 1 lists open_ticket_sev3 twice"],
    );
}

#[test]
fn the_builtin_guards_cannot_be_lifted() {
    check(
        &format!(
            "{ONE_TIER}[guards]\nprotect_agent = false\nprotect_pid1 = true\nprotect_collector = false\n"
        ),
        &[
            "p.toml:8:17: protect_agent = false: the agent, the collector and PID 1 are always protected, and no policy can lift that",
            "p.toml:10:21: protect_collector = false: the agent, the collector and PID 1 are always protected, and no policy can lift that",
        ],
    );
    check(
        &format!("{ONE_TIER}[guards]\nunits = [\"!patchgap-agent.service\"]\n"),
        &[
            "p.toml:8:10: unit \"!patchgap-agent.service\": guards only add protection; nothing can remove one",
        ],
    );
    check(
        &format!(
            "{ONE_TIER}[[exception]]\nworkload = \"unit:patchgap-agent.service\"\nticket = \"SEC-1\"\nexpires = 2027-01-01T00:00:00Z\nguards = false\n"
        ),
        &[
            "p.toml:11:10: an exception cannot lift a guard: it exempts findings, and the agent, the collector and PID 1 are always protected",
        ],
    );
    // A tier that would isolate, freeze or kill the agent, the collector or PID 1.
    check(
        "[[tier]]\nnumber = 1\nname = \"x\"\n[[tier.rule]]\nworkload = [\"unit:nginx.service\", \"unit:patchgap-agent.service\"]\n[[tier.action]]\nkind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"auto\"\n[[tier.rule]]\nworkload = [\"k8s:prod/patchgap/DaemonSet/patchgap-collector/*\", \"unit:init.scope\"]\n",
        &[
            "p.toml:5:35: tier 1 would isolate_affected_workloads on \"unit:patchgap-agent.service\": the agent, the collector and PID 1 are always protected, so no executor acts on them",
            "p.toml:11:13: tier 1 would isolate_affected_workloads on \"k8s:prod/patchgap/DaemonSet/patchgap-collector/*\": the agent, the collector and PID 1 are always protected, so no executor acts on them",
            "p.toml:11:65: tier 1 would isolate_affected_workloads on \"unit:init.scope\": the agent, the collector and PID 1 are always protected, so no executor acts on them",
        ],
    );
    // The same rule with only records to make is fine.
    let ok = "[[tier]]\nnumber = 1\nname = \"x\"\n[[tier.rule]]\nworkload = [\"unit:patchgap-agent.service\"]\n[[tier.action]]\nkind = \"open_ticket_sev3\"\nmode = \"enforce\"\napproval = \"auto\"\n";
    Policy::parse_at("p.toml", ok.as_bytes(), NOW).unwrap();
}

#[test]
fn exceptions_need_a_ticket_an_expiry_and_a_match() {
    let exc = |body: &str| format!("{ONE_TIER}[[exception]]\n{body}");
    check(
        &exc("advisory = \"CVE-1\"\nticket = \"  \"\nexpires = \"tomorrow\"\n"),
        &[
            "p.toml:9:10: the ticket is empty",
            "p.toml:10:11: expires must be an RFC 3339 time with its offset, such as 2026-12-31T00:00:00Z",
        ],
    );
    check(
        &exc("ticket = \"SEC-1\"\nexpires = 2027-01-01T00:00:00Z\n"),
        &["p.toml:7:1: an exception must say what it exempts: advisory, purl or workload"],
    );
    check(
        &exc("advisory = \"CVE-1\"\nticket = \"SEC-1\"\n"),
        &["p.toml:7:1: an exception needs an expiry (expires = 2026-12-31T00:00:00Z, RFC 3339)"],
    );
    check(
        &exc("purl = \"pypi/torch\"\nticket = \"SEC-1\"\nexpires = 2027-01-01T00:00:00Z\n"),
        &["p.toml:8:8: purl \"pypi/torch\" is not a purl such as pkg:deb/debian/openssl"],
    );
    // A local time has no offset: refused, never guessed.
    check(
        &exc("advisory = \"CVE-1\"\nticket = \"SEC-1\"\nexpires = 2027-01-01T00:00:00\n"),
        &[
            "p.toml:10:11: expires must be an RFC 3339 time with its offset, such as 2026-12-31T00:00:00Z",
        ],
    );
    // Expired: accepted with a warning; the string form is accepted too.
    let p = Policy::parse_at(
        "p.toml",
        exc("advisory = \"CVE-1\"\nticket = \"SEC-1\"\nexpires = \"2026-01-01T00:00:00+01:00\"\n")
            .as_bytes(),
        NOW,
    )
    .unwrap();
    assert_eq!(
        p.warnings,
        ["p.toml:10:11: warning: this exception expired at 2025-12-31T23:00:00Z: it never applies"]
    );
    assert_eq!(p.exceptions[0].expires, "2025-12-31T23:00:00Z");
}

#[test]
fn warnings_do_not_refuse() {
    let p = Policy::parse_at(
        "p.toml",
        b"[[tier]]\nnumber = 1\nname = \"all\"\n[[tier.rule]]\n[[tier]]\nnumber = 2\nname = \"never\"\n[guards]\nnamespaces = []\ncgroups = [\"/\"]\n",
        NOW,
    )
    .unwrap();
    assert_eq!(
        p.warnings,
        [
            "p.toml:5:1: warning: tier 2 has no [[tier.rule]], so no finding reaches it",
            "p.toml:2:1: warning: tier 1 has a rule without conditions, which matches every finding: later tiers are never reached",
            "p.toml:9:14: warning: kube-system is not guarded: the default guard is replaced, not added to",
            "p.toml:10:12: warning: cgroup \"/\" guards every workload: nothing can be isolated, frozen or killed",
        ]
    );
    assert!(p.guards.namespaces.is_empty());
}

fn finding(severity: Option<Severity>, scope: Option<&str>) -> FindingFacts {
    FindingFacts {
        advisory: "CVE-2024-0001".into(),
        severity,
        score: None,
        data_scope: scope.map(String::from),
        evidence: Evidence::Loaded,
        ecosystem: "pypi".into(),
        purl: "pkg:pypi/torch@2.1.0".into(),
        namespace: Some("ml".into()),
        cluster: Some("prod".into()),
        workload: "k8s:prod/ml/Deployment/trainer/main".into(),
        now_ms: NOW,
        ..FindingFacts::default()
    }
}

fn tier_of(p: &Policy, f: &FindingFacts) -> Option<(u32, usize)> {
    p.route(f).tier.map(|t| (t.number, t.rule_index))
}

#[test]
fn the_builtin_policy_routes_the_seeds_tiers() {
    let p = Policy::builtin();
    let crit = Some(Severity::Critical);
    assert_eq!(tier_of(&p, &finding(crit, Some("sensitive"))), Some((1, 0)));
    let mut scored = finding(Some(Severity::High), Some("sensitive"));
    scored.score = Some(9.8);
    assert_eq!(
        tier_of(&p, &scored),
        Some((1, 1)),
        "CVSS >= 9 in a sensitive scope"
    );
    scored.score = Some(8.9);
    assert_eq!(tier_of(&p, &scored), Some((2, 0)), "8.9 is not 9");
    assert_eq!(tier_of(&p, &finding(crit, Some("internal"))), Some((2, 0)));
    assert_eq!(tier_of(&p, &finding(crit, None)), Some((2, 0)));
    assert_eq!(
        tier_of(&p, &finding(Some(Severity::High), None)),
        Some((2, 0))
    );
    assert_eq!(
        tier_of(&p, &finding(Some(Severity::Medium), Some("sensitive"))),
        Some((3, 0))
    );
    assert_eq!(tier_of(&p, &finding(None, None)), Some((3, 0)));
    let r = p.route(&finding(crit, Some("sensitive")));
    assert_eq!(r.actions().len(), 4);
    assert_eq!(r.actions()[1].kind, ActionKind::IsolateAffectedWorkloads);
    assert!(!r.open_incident_auto);
}

const ROUTING: &str = r#"
[[tier]]
number = 2
name = "ml in prod"
[[tier.rule]]
namespace = ["ml*"]
cluster = ["prod"]
labels = { team = "ml", tier = "gpu" }
open_incident = "auto"
[[tier.action]]
kind = "freeze_cgroup"
mode = "observe"
approval = "required"

[[tier]]
number = 1
name = "root pypi loaded"
[[tier.rule]]
ecosystem = ["pypi"]
evidence = ["loaded"]
root = true
[[tier.rule]]
purl_prefix = ["pkg:deb/"]
privileged = true
[[tier.action]]
kind = "isolate_affected_workloads"
mode = "shadow"
approval = "auto"
allow = ["198.51.100.0/24", "2001:db8::/32"]
max_replica_share = 0.5
revert_after = "30m"

[[tier]]
number = 3
name = "rest"
[[tier.rule]]

[[exception]]
advisory = "cve-2024-0001"
workload = "k8s:prod/ml/*"
ticket = "SEC-7"
expires = 2026-12-07T00:00:00Z
"#;

#[test]
fn the_first_tier_by_number_with_a_matching_rule_wins() {
    let p = Policy::parse_at("p.toml", ROUTING.as_bytes(), NOW).unwrap();
    assert_eq!(
        p.tiers.iter().map(|t| t.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let mut f = finding(Some(Severity::Low), None);
    f.advisory = "CVE-2024-9999".into();
    f.labels = [("team", "ml"), ("tier", "gpu"), ("extra", "x")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(tier_of(&p, &f), Some((2, 0)), "labels and namespace prefix");
    assert!(p.route(&f).open_incident_auto);
    f.root = true;
    assert_eq!(
        tier_of(&p, &f),
        Some((1, 0)),
        "tier 1 wins though written second"
    );
    let r = p.route(&f);
    assert!(!r.open_incident_auto);
    let a = &r.actions()[0];
    assert_eq!(
        (a.mode, a.revert_after_ms, a.max_replica_share),
        (Mode::Shadow, Some(1_800_000), Some(0.5))
    );
    assert!(a.allow[0].contains("198.51.100.77".parse().unwrap()));
    assert!(!a.allow[0].contains("198.51.101.1".parse().unwrap()));
    assert!(a.allow[1].contains("2001:db8::1".parse().unwrap()));
    assert!(!a.allow[1].contains("10.0.0.1".parse().unwrap()));
    f.evidence = Evidence::Installed;
    assert_eq!(tier_of(&p, &f), Some((2, 0)), "installed is not loaded");
    f.labels.insert("tier".into(), "cpu".into());
    assert_eq!(tier_of(&p, &f), Some((3, 0)), "a label with another value");
    f.labels.remove("tier");
    assert_eq!(tier_of(&p, &f), Some((3, 0)), "a missing label");
    f.purl = "pkg:deb/debian/openssl@3".into();
    f.privileged = true;
    assert_eq!(tier_of(&p, &f), Some((1, 1)));
    f.namespace = Some("web".into());
    f.privileged = false;
    assert_eq!(tier_of(&p, &f), Some((3, 0)));
}

#[test]
fn an_exception_exempts_until_it_expires() {
    let p = Policy::parse_at("p.toml", ROUTING.as_bytes(), NOW).unwrap();
    let mut f = finding(Some(Severity::Critical), None);
    f.root = true;
    let r = p.route(&f);
    let e = r
        .exception
        .as_ref()
        .expect("the advisory id matches without regard to case");
    assert_eq!((e.index, e.ticket.as_str()), (0, "SEC-7"));
    assert_eq!(
        r.tier.as_ref().map(|t| t.number),
        Some(1),
        "the tier is still named"
    );
    assert!(r.actions().is_empty(), "but nothing runs");
    f.workload = "k8s:staging/ml/Deployment/trainer/main".into();
    assert!(p.route(&f).exception.is_none(), "another workload");
    f.workload = "k8s:prod/ml/Deployment/trainer/main".into();
    f.now_ms = 1_796_601_600_000; // 2026-12-07T00:00:00Z: expired
    let r = p.route(&f);
    assert!(r.exception.is_none());
    assert_eq!(r.actions().len(), 1);
}

#[test]
fn a_policy_without_a_catch_all_can_route_nowhere() {
    let p = Policy::parse_at(
        "p.toml",
        b"[[tier]]\nnumber = 1\nname = \"crit\"\n[[tier.rule]]\nseverity = [\"critical\"]\nopen_incident = \"auto\"\n",
        NOW,
    )
    .unwrap();
    let r = p.route(&finding(Some(Severity::High), None));
    assert!(r.actions().is_empty() && !r.open_incident_auto);
    assert_eq!(r.tier, None);
}

#[test]
fn guards_name_what_excludes_a_target() {
    let p = Policy::parse_at(
        "p.toml",
        format!("{ONE_TIER}[guards]\nunits = [\"sshd.service\", \"systemd-*\"]\nnamespaces = [\"kube-system\", \"istio-*\"]\ncgroups = [\"/system.slice/\"]\nworkloads = [\"k8s:prod/payments/*\"]\n").as_bytes(),
        NOW,
    )
    .unwrap();
    let target = |cgroup: &str| GuardTarget {
        workload: "k8s:prod/ml/Deployment/trainer/main".into(),
        cgroup: cgroup.into(),
        pids: vec![4242],
        ..GuardTarget::default()
    };
    let pod = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope";
    assert_eq!(p.guarded(&target(pod)), None);
    let reason = |t: GuardTarget| p.guarded(&t).map(|r| r.to_string());
    assert_eq!(
        reason(GuardTarget {
            is_agent: true,
            ..target(pod)
        })
        .as_deref(),
        Some("the patchgap agent (always protected)")
    );
    assert_eq!(
        p.guarded(&GuardTarget {
            is_collector: true,
            ..target(pod)
        }),
        Some(GuardReason::Collector)
    );
    assert_eq!(
        p.guarded(&GuardTarget {
            pids: vec![7, 1],
            ..target(pod)
        }),
        Some(GuardReason::Pid1)
    );
    assert_eq!(p.guarded(&target("/init.scope")), Some(GuardReason::Pid1));
    assert_eq!(p.guarded(&target("/")), Some(GuardReason::HostRoot));
    assert_eq!(p.guarded(&target("")), Some(GuardReason::HostRoot));
    assert!(p.guarded(&target("/")).unwrap().is_builtin());
    assert_eq!(
        p.guarded(&GuardTarget {
            unit: Some("systemd-resolved.service".into()),
            ..target("/x.slice/y")
        }),
        Some(GuardReason::Unit("systemd-*".into()))
    );
    assert_eq!(
        p.guarded(&GuardTarget {
            namespace: Some("istio-system".into()),
            ..target(pod)
        }),
        Some(GuardReason::Namespace("istio-*".into()))
    );
    assert_eq!(
        reason(target("/system.slice/nginx.service")).as_deref(),
        Some("guards.cgroups \"/system.slice/\"")
    );
    assert_eq!(
        p.guarded(&target("/system.slice")),
        Some(GuardReason::Cgroup("/system.slice/".into()))
    );
    assert_eq!(
        p.guarded(&target("/system.slice2/x")),
        None,
        "whole components only"
    );
    let mut payments = target(pod);
    payments.workload = "k8s:prod/payments/Deployment/ledger/app".into();
    assert_eq!(
        p.guarded(&payments),
        Some(GuardReason::Workload("k8s:prod/payments/*".into()))
    );
    // The default guards kube-system.
    let builtin = Policy::builtin();
    assert_eq!(
        builtin.guarded(&GuardTarget {
            namespace: Some("kube-system".into()),
            ..target(pod)
        }),
        Some(GuardReason::Namespace("kube-system".into()))
    );
}

#[test]
fn severities_and_evidence_from_the_store() {
    assert_eq!(
        Severity::from_advisory("CRITICAL"),
        Some(Severity::Critical)
    );
    assert_eq!(Severity::from_advisory("Moderate"), Some(Severity::Medium));
    assert_eq!(Severity::from_advisory(""), None);
    for (e, want) in [
        ("exe", Evidence::Loaded),
        ("mapped", Evidence::Loaded),
        ("embedded", Evidence::Loaded),
        ("opened", Evidence::Loaded),
        ("installed", Evidence::Installed),
        ("declared", Evidence::Declared),
    ] {
        assert_eq!(Evidence::from_match(e), want, "{e}");
    }
}

#[test]
fn the_normalised_policy_is_stable_json() {
    let p = Policy::parse_at("p.toml", ROUTING.as_bytes(), NOW).unwrap();
    let json = serde_json::to_value(&p).unwrap();
    let iso = &json["tiers"][0]["actions"][0];
    assert_eq!(iso["kind"], "isolate_affected_workloads");
    assert_eq!(iso["mode"], "shadow");
    assert_eq!(iso["revert_after_ms"], 1_800_000);
    assert_eq!(
        iso["allow"],
        serde_json::json!(["198.51.100.0/24", "2001:db8::/32"])
    );
    assert_eq!(
        json["guards"]["always"],
        serde_json::json!(["agent", "collector", "pid 1"])
    );
    assert_eq!(json["exceptions"][0]["expires"], "2026-12-07T00:00:00Z");
}

#[test]
fn no_panic_on_hostile_input() {
    let seed = include_str!("../../../../packaging/policy.example.toml").as_bytes();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + x % 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % bytes.len() as u64) as usize;
            match x % 3 {
                0 => bytes[at] = b"[]=\"'\n-#.1x{},\xc3"[(x >> 8) as usize % 15],
                1 => bytes.truncate(at),
                _ => bytes.insert(at, b"[]=\"\n"[(x >> 8) as usize % 5]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let _ = Policy::parse_at("p.toml", &bytes, NOW);
    }
}

#[test]
fn the_deploy_gate_actions_can_warn_instead_of_denying() {
    let text = with_action(
        "kind = \"block_new_artifacts_with_package\"\nmode = \"enforce\"\napproval = \"auto\"\nadmission = \"warn\"\n",
    );
    let p = Policy::parse_at("p.toml", text.as_bytes(), NOW).unwrap();
    assert_eq!(p.tiers[0].actions[0].admission, Admission::Warn);
    let text =
        with_action("kind = \"freeze_deployments\"\nmode = \"enforce\"\napproval = \"auto\"\n");
    let p = Policy::parse_at("p.toml", text.as_bytes(), NOW).unwrap();
    assert_eq!(p.tiers[0].actions[0].admission, Admission::Deny);
    check(
        &with_action(
            "kind = \"isolate_affected_workloads\"\nmode = \"enforce\"\napproval = \"auto\"\nadmission = \"warn\"\n",
        ),
        &[
            "p.toml:11:13: admission applies to the deploy gate's actions (freeze_deployments, block_new_artifacts_with_package), not isolate_affected_workloads",
        ],
    );
    let bad = errors(&with_action(
        "kind = \"freeze_deployments\"\nmode = \"enforce\"\napproval = \"auto\"\nadmission = \"maybe\"\n",
    ));
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].starts_with("p.toml:11:13: unknown variant `maybe`"),
        "{bad:?}"
    );
}

#[test]
fn the_gate_section_sets_tags_and_excluded_namespaces() {
    let text = format!(
        "{ONE_TIER}[gate]\ntag_without_digest = \"deny\"\nexclude_namespaces = [\"kube-system\", \"istio-*\"]\n"
    );
    let p = Policy::parse_at("p.toml", text.as_bytes(), NOW).unwrap();
    assert_eq!(p.gate.tag_without_digest, Admission::Deny);
    assert_eq!(p.gate.exclude_namespaces, ["kube-system", "istio-*"]);
    let defaults = Policy::parse_at("p.toml", ONE_TIER.as_bytes(), NOW).unwrap();
    assert_eq!(defaults.gate, GateSettings::default());
    assert_eq!(
        defaults.gate.exclude_namespaces,
        ["kube-system", "kube-public", "kube-node-lease"]
    );
    check(
        &format!("{ONE_TIER}[gate]\nexclude_namespaces = [\"\"]\n"),
        &["p.toml:8:23: an empty gate.exclude_namespaces entry"],
    );
    let bad = errors(&format!("{ONE_TIER}[gate]\ntag = \"deny\"\n"));
    assert!(bad[0].contains("unknown field `tag`"), "{bad:?}");
}
