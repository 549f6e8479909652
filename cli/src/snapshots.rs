//! Snapshot tests of the documented JSON answers (README, "JSON output"):
//! for each command that prints JSON, a realistic patchgap.v1 response goes
//! through the render function and the text function the binary prints with,
//! and the bytes must equal the committed file in `cli/tests/snapshots/`.
//! `UPDATE_SNAPSHOTS=1 cargo test -p cli --bin patchgap snapshots` rewrites
//! the files; a changed file is then a reviewed change of the interface.

use std::path::PathBuf;

use patchgap_proto::v1;
use serde_json::Value;

use crate::render;

/// 2026-11-28T21:06:40.000Z, the instant the answers below were "computed".
const NOW: i64 = 1_795_900_000_000;

fn key(pid: u32, start_ticks: u64) -> Option<v1::ProcessKey> {
    Some(v1::ProcessKey { pid, start_ticks })
}

/// Two hosts: one fresh with eBPF, one stale and scan-only.
fn coverage() -> Option<v1::Coverage> {
    Some(v1::Coverage {
        hosts_total: 2,
        hosts_fresh: 1,
        hosts_stale: 1,
        generated_at_ms: NOW,
        hosts_scan_only: 1,
        oldest_scan_ms: NOW - 12_345,
        history_dropped_before_ms: 0,
        hosts: vec![
            v1::HostCoverage {
                host: "node-1".into(),
                fresh: true,
                ebpf: true,
                ebpf_reason: String::new(),
                events_lost: 17,
                scanning: true,
                ..Default::default()
            },
            v1::HostCoverage {
                host: "web-2".into(),
                fresh: false,
                ebpf: false,
                ebpf_reason: "not root".into(),
                events_lost: 0,
                scanning: false,
                scan_restarts: 2,
                spool_dropped: 40,
                shedding: "opens".into(),
            },
        ],
    })
}

fn libssl3() -> v1::Package {
    v1::Package {
        ecosystem: "deb".into(),
        name: "libssl3".into(),
        source: "openssl".into(),
        version: "3.0.11-1~deb12u2".into(),
        arch: "amd64".into(),
        purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12".into(),
        ..Default::default()
    }
}

fn trainer_workload() -> v1::WorkloadSummary {
    v1::WorkloadSummary {
        key: "k8s:prod/ml/Deployment/trainer/main".into(),
        kind: "pod".into(),
        cluster: "prod".into(),
        namespace: "ml".into(),
        name: "trainer-7d9f8b6c5-x2x4q".into(),
        owner: Some(v1::Owner {
            kind: "Deployment".into(),
            name: "trainer".into(),
            source: "inferred".into(),
        }),
        container: "main".into(),
        runtime: "containerd".into(),
        image: "registry.example/ml/trainer:1.4".into(),
        image_digest: format!("sha256:{}", "4f67c834".repeat(8)),
        unit: String::new(),
        pods: vec!["trainer-7d9f8b6c5-x2x4q".into()],
        hosts: vec!["node-1".into()],
        processes: 3,
        scope: Some(v1::DataScope {
            classification: "sensitive".into(),
            writes_to: vec!["s3://ml-models".into(), "postgres://features".into()],
            source: "mapping:3".into(),
        }),
        privilege: "root,CAP_SYS_ADMIN".into(),
        privileged: true,
        metadata_warnings: 1,
        provenance: Some(v1::ImageProvenance {
            revision: "9b2f1c4e7a3d5b6c8e0f1a2b3c4d5e6f7a8b9c0d".into(),
            source: "https://git.example/ml/trainer".into(),
            created: "2026-11-20T08:00:00Z".into(),
        }),
    }
}

fn root_privilege() -> v1::Privilege {
    v1::Privilege {
        uid0: true,
        euid0: true,
        cap_eff: vec!["CAP_NET_BIND_SERVICE".into(), "CAP_SYS_ADMIN".into()],
        all_caps: false,
        no_new_privs: Some(false),
        seccomp: "filter".into(),
        host_pid_ns: false,
        host_net_ns: true,
        host_mnt_ns: false,
        privileged: true,
        summary: "root,CAP_SYS_ADMIN,hostnet".into(),
    }
}

/// A process in a pod that maps libssl3, one mapping of it deleted on disk,
/// with a path that is not UTF-8 and one with a backslash.
fn pod_match() -> v1::Match {
    v1::Match {
        host: "node-1".into(),
        host_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        workload: "k8s:prod/ml/Deployment/trainer/main".into(),
        key: key(4242, 987_654),
        process_start_ms: NOW - 3_600_000,
        exe: b"/usr/bin/python3.11".to_vec(),
        cmdline: "python3 train.py --token <redacted>".into(),
        package: Some(libssl3()),
        evidence: "mapped".into(),
        stale: true,
        paths: vec![
            v1::MatchPath {
                path: b"/usr/lib/x86_64-linux-gnu/libssl.so.3".to_vec(),
                evidence: "mapped".into(),
                stale: true,
                deleted: true,
                dev: 2049,
                inode: 1_311_234,
            },
            v1::MatchPath {
                path: b"/opt/caf\xe9\\lib/libssl.so.3".to_vec(),
                evidence: "opened".into(),
                stale: false,
                deleted: false,
                dev: 2049,
                inode: 77,
            },
        ],
        uid: 0,
        workload_detail: Some(trainer_workload()),
        privilege: Some(root_privilege()),
        ..Default::default()
    }
}

/// A process on a plain host whose executable the package owns.
fn host_match() -> v1::Match {
    v1::Match {
        host: "web-2".into(),
        host_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
        workload: "unit:nginx.service".into(),
        key: key(812, 4_100),
        process_start_ms: NOW - 86_400_000,
        exe: b"/usr/sbin/nginx".to_vec(),
        cmdline: "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;".into(),
        package: Some(libssl3()),
        evidence: "exe".into(),
        stale: false,
        paths: vec![v1::MatchPath {
            path: b"/usr/lib/x86_64-linux-gnu/libssl.so.3".to_vec(),
            evidence: "mapped".into(),
            stale: false,
            deleted: false,
            dev: 64_768,
            inode: 393_222,
        }],
        uid: 33,
        workload_detail: Some(v1::WorkloadSummary {
            key: "unit:nginx.service".into(),
            kind: "systemd".into(),
            name: "nginx.service".into(),
            unit: "nginx.service".into(),
            hosts: vec!["web-2".into()],
            processes: 5,
            scope: Some(v1::DataScope::default()),
            privilege: "root".into(),
            ..Default::default()
        }),
        privilege: Some(v1::Privilege {
            seccomp: "disabled".into(),
            summary: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A PyPI distribution a Debian package installed, with the CVEs the
/// Debian changelog says it fixed.
fn distro_match() -> v1::Match {
    v1::Match {
        host: "node-1".into(),
        host_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        workload: "host:node-1".into(),
        key: key(3100, 55_000),
        process_start_ms: NOW - 600_000,
        exe: b"/usr/bin/python3.11".to_vec(),
        cmdline: "/usr/bin/python3 /usr/bin/certbot renew".into(),
        package: Some(v1::Package {
            ecosystem: "pypi".into(),
            name: "cryptography".into(),
            version: "38.0.4".into(),
            purl: "pkg:pypi/cryptography@38.0.4".into(),
            distro: Some(Box::new(v1::Package {
                ecosystem: "deb".into(),
                name: "python3-cryptography".into(),
                source: "python-cryptography".into(),
                version: "38.0.4-3~deb12u1".into(),
                arch: "amd64".into(),
                purl: "pkg:deb/debian/python3-cryptography@38.0.4-3~deb12u1?arch=amd64".into(),
                fixed_cves: vec!["CVE-2023-23931".into(), "CVE-2023-49083".into()],
                ..Default::default()
            })),
            ..Default::default()
        }),
        evidence: "installed".into(),
        paths: vec![v1::MatchPath {
            path: b"/usr/lib/python3/dist-packages/cryptography".to_vec(),
            evidence: "installed".into(),
            dev: 2049,
            inode: 4_455,
            ..Default::default()
        }],
        workload_detail: Some(v1::WorkloadSummary {
            key: "host:node-1".into(),
            kind: "host".into(),
            name: "node-1".into(),
            hosts: vec!["node-1".into()],
            processes: 120,
            ..Default::default()
        }),
        privilege: Some(root_privilege()),
        ..Default::default()
    }
}

/// A package only an image's SBOM declares, as an advisory finding.
fn declared_finding() -> v1::Match {
    v1::Match {
        host: "node-1".into(),
        host_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        workload: "k8s:prod/ml/Deployment/trainer/main".into(),
        key: key(4242, 987_654),
        process_start_ms: NOW - 3_600_000,
        exe: b"/usr/bin/python3.11".to_vec(),
        cmdline: "python3 train.py --token <redacted>".into(),
        package: Some(v1::Package {
            ecosystem: "pypi".into(),
            name: "setuptools".into(),
            version: "65.5.0".into(),
            purl: "pkg:pypi/setuptools@65.5.0".into(),
            ..Default::default()
        }),
        evidence: "declared".into(),
        workload_detail: Some(trainer_workload()),
        privilege: Some(root_privilege()),
        advisory: "PYSEC-2022-43012".into(),
        severity: "HIGH".into(),
        status: "affected".into(),
        sbom_image: format!("sha256:{}", "4f67c834".repeat(8)),
        pulled_in_by: vec![
            "trainer@1.4".into(),
            "ipython@8.12.3".into(),
            "setuptools@65.5.0".into(),
        ],
        score: Some(7.5),
        vector: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H".into(),
        ..Default::default()
    }
}

/// The advisory verdicts on the two libssl3 processes.
fn advisory_matches() -> Vec<v1::Match> {
    let mut pod = pod_match();
    pod.advisory = "DSA-5764-1".into();
    pod.severity = "CRITICAL".into();
    pod.score = Some(9.8);
    pod.vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".into();
    pod.status = "affected".into();
    let mut host = host_match();
    host.advisory = "DSA-5764-1".into();
    host.severity = "CRITICAL".into();
    host.status = "fixed-by-distro".into();
    vec![pod, host]
}

fn query() -> Value {
    render::query_json(&v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "libssl3@<3.0.13".into(),
        coverage: coverage(),
        matches: vec![pod_match(), host_match()],
        scope_map_error: String::new(),
    })
}

/// Nothing found, no host fresh (so no `oldest_scan_at`), and a scope
/// mapping that failed to reload.
fn query_empty() -> Value {
    render::query_json(&v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "pkg:pypi/cryptography@38.0.4".into(),
        coverage: Some(v1::Coverage {
            generated_at_ms: NOW,
            ..Default::default()
        }),
        matches: Vec::new(),
        scope_map_error: "line 4: unknown selector \"namespce\"".into(),
    })
}

fn query_distro() -> Value {
    render::query_json(&v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "cryptography".into(),
        coverage: coverage(),
        matches: vec![distro_match()],
        scope_map_error: String::new(),
    })
}

/// `query --since`: an exited process has its exit time; the window
/// reaches before the retention horizon (30 days ago), which coverage
/// names.
fn history() -> Value {
    let mut exited = host_match();
    exited.key = key(9001, 123_456);
    exited.exit_time_ms = NOW - 1_800_000;
    let mut coverage = coverage();
    if let Some(c) = coverage.as_mut() {
        c.history_dropped_before_ms = NOW - 30 * 86_400_000;
    }
    render::query_json(&v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "libssl3".into(),
        coverage,
        matches: vec![exited, pod_match()],
        scope_map_error: String::new(),
    })
}

fn query_advisory() -> Value {
    let mut matches = advisory_matches();
    matches.push(declared_finding());
    render::query_json(&v1::FindPackageResponse {
        next_page_token: String::new(),
        query: "advisory DSA-5764-1".into(),
        coverage: coverage(),
        matches,
        scope_map_error: String::new(),
    })
}

fn findings() -> Value {
    let mut findings = advisory_matches();
    findings.push(declared_finding());
    render::findings_json(&v1::ListFindingsResponse {
        next_page_token: String::new(),
        coverage: coverage(),
        findings,
        scope_map_error: "line 9: expected =>".into(),
        advisories: 1_234,
        elapsed_ms: 42,
    })
}

fn workloads() -> Value {
    render::workloads_json(&v1::ListWorkloadsResponse {
        coverage: coverage(),
        workloads: vec![
            trainer_workload(),
            v1::WorkloadSummary {
                key: "container:web-2/redis".into(),
                kind: "container".into(),
                name: "redis".into(),
                owner: None,
                container: "redis".into(),
                runtime: "docker".into(),
                image: "redis:7".into(),
                image_digest: String::new(),
                hosts: vec!["web-2".into()],
                processes: 1,
                scope: Some(v1::DataScope {
                    classification: "internal".into(),
                    writes_to: Vec::new(),
                    source: "label".into(),
                }),
                privilege: "-".into(),
                ..Default::default()
            },
            v1::WorkloadSummary {
                key: "unit:nginx.service".into(),
                kind: "systemd".into(),
                name: "nginx.service".into(),
                unit: "nginx.service".into(),
                hosts: vec!["web-2".into(), "web-3".into()],
                processes: 5,
                privilege: "root".into(),
                ..Default::default()
            },
        ],
        scope_map_error: String::new(),
    })
}

fn hosts() -> Value {
    render::hosts_json(&v1::ListHostsResponse {
        coverage: coverage(),
        hosts: vec![
            v1::HostSummary {
                identity: Some(v1::HostIdentity {
                    host_id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
                    hostname: "node-1".into(),
                    boot_id: "6c2a9d1e-6b1f-4c47-9d3e-2f4b8a7c5e10".into(),
                    kernel: "6.1.0-27-amd64".into(),
                    labels: [
                        ("zone".to_string(), "eu-west-1a".to_string()),
                        ("cluster".to_string(), "prod".to_string()),
                        ("role".to_string(), "gpu".to_string()),
                    ]
                    .into_iter()
                    .collect(),
                }),
                agent_version: "0.1.0".into(),
                capabilities: Some(v1::Capabilities {
                    ebpf: true,
                    ebpf_reason: String::new(),
                    root: true,
                    rescan_interval_secs: 30,
                    contain: true,
                    contain_reason: String::new(),
                }),
                last_seen_ms: NOW - 2_000,
                last_full_scan_ms: NOW - 12_345,
                fresh: true,
                processes_running: 214,
                last_scan: Some(v1::ScanStats {
                    processes: 214,
                    vanished: 3,
                    denied: 0,
                    artifacts: 5_120,
                    unresolved_artifacts: 12,
                    cpu_micros: 48_000,
                    wall_micros: 61_000,
                    resolve_cache_hits: 5_000,
                    resolve_cache_misses: 120,
                    scanned_at_ms: NOW - 12_345,
                    reconciled: 2,
                    sockets_read_ms: NOW - 42_000,
                    reused: 190,
                }),
                connected: true,
                cert_not_after_ms: 1_796_083_200_000,
                health: Some(v1::AgentHealth {
                    scanning: true,
                    scan_alive_ms: NOW - 3_000,
                    scan_restarts: 0,
                    last_panic: String::new(),
                    spool_dropped: 0,
                    spool_bytes: 81_920,
                    spool_unacked: 2,
                    spool_on_disk: true,
                    shedding: String::new(),
                    watchdog_trips: 0,
                    cpu_permille: 4,
                    rss_bytes: 31_457_280,
                }),
                conflict: String::new(),
            },
            v1::HostSummary {
                identity: Some(v1::HostIdentity {
                    host_id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                    hostname: "web-2".into(),
                    boot_id: "0b7e7c1a-93f2-4f43-8d52-61c1f0a3b2d4".into(),
                    kernel: "5.15.0-119-generic".into(),
                    labels: Default::default(),
                }),
                agent_version: "0.1.0".into(),
                capabilities: Some(v1::Capabilities {
                    ebpf: false,
                    ebpf_reason: "not root".into(),
                    root: false,
                    rescan_interval_secs: 30,
                    contain: false,
                    contain_reason: "disabled by configuration".into(),
                }),
                last_seen_ms: NOW - 400_000,
                last_full_scan_ms: 0,
                fresh: false,
                processes_running: 0,
                last_scan: None,
                connected: false,
                cert_not_after_ms: 0,
                health: None,
                conflict: "two agents claim host id \"a1b2c3d4e5f60718293a4b5c6d7e8f90\": a stream from 10.0.0.12:51544 (host name \"web-2-clone\", session 5d0c2b8e) was refused while the stream from 10.0.0.11:40322 (host name \"web-2\", session 9a7f3e21) is live; give each host its own /etc/machine-id".into(),
            },
        ],
    })
}

fn ps() -> Value {
    render::ps_json(&v1::ListProcessesResponse {
        next_page_token: String::new(),
        coverage: coverage(),
        processes: vec![
            v1::ProcessSummary {
                host: "node-1".into(),
                workload: "k8s:prod/ml/Deployment/trainer/main".into(),
                key: key(4242, 987_654),
                ppid: 4200,
                uid: 0,
                exe: b"/usr/bin/python3.11".to_vec(),
                cmdline: "python3 train.py --token <redacted>".into(),
                start_time_ms: NOW - 3_600_000,
                artifacts: 61,
                packages: 23,
                stale_artifacts: 1,
                outbound_sockets: 2,
                anonymous_code: vec![v1::Artifact {
                    path: b"/memfd:payload".to_vec(),
                    dev: 1,
                    inode: 2051,
                    kind: v1::ArtifactKind::Anonymous as i32,
                    deleted: true,
                    content: Some(v1::Content {
                        size: 14_480,
                        sha256: "5f0e1d7c9b3a8e2f4d6c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"
                            .into(),
                        unhashed: String::new(),
                    }),
                    ..Default::default()
                }],
                // One socket as the tables showed it, one from a connect
                // eBPF saw since (no local end yet).
                sockets: vec![
                    v1::Socket {
                        protocol: "tcp".into(),
                        local_addr: "10.0.3.5".into(),
                        local_port: 41822,
                        remote_addr: "10.0.3.17".into(),
                        remote_port: 5432,
                        state: "ESTABLISHED".into(),
                        inode: 918_273,
                        outbound: true,
                        connect_ms: 0,
                    },
                    v1::Socket {
                        protocol: "tcp".into(),
                        remote_addr: "127.0.0.1".into(),
                        remote_port: 19090,
                        state: "ESTABLISHED".into(),
                        outbound: true,
                        connect_ms: NOW - 2_000,
                        ..Default::default()
                    },
                ],
                sockets_total: 2,
                sockets_read_ms: NOW - 42_000,
                net_ns: 4_026_532_999,
                net_ns_name: "trainer-net".into(),
                host_net_ns: false,
            },
            v1::ProcessSummary {
                host: "node-1".into(),
                workload: "host:node-1".into(),
                key: key(2, 0),
                ppid: 0,
                uid: 0,
                exe: Vec::new(),
                cmdline: String::new(),
                start_time_ms: NOW - 864_000_000,
                sockets_read_ms: NOW - 42_000,
                net_ns: 4_026_531_840,
                host_net_ns: true,
                ..Default::default()
            },
        ],
    })
}

fn connections() -> Value {
    render::connections_json(&v1::ListConnectionsResponse {
        coverage: coverage(),
        connections: vec![
            v1::ConnectionSummary {
                host: "node-1".into(),
                workload: "k8s:prod/ml/Deployment/trainer/main".into(),
                key: key(4242, 987_654),
                exe: b"/usr/bin/python3.11".to_vec(),
                protocol: "tcp".into(),
                remote_addr: "10.0.3.17".into(),
                remote_port: 5432,
                first_seen_ms: NOW - 3_000_000,
                last_seen_ms: NOW - 1_000,
                count: 1_812,
                last_result: 0,
                exit_time_ms: 0,
                net_ns: 4_026_532_999,
                net_ns_name: "trainer-net".into(),
            },
            v1::ConnectionSummary {
                host: "node-1".into(),
                workload: "host:node-1".into(),
                key: key(9100, 777),
                exe: b"/usr/bin/curl".to_vec(),
                protocol: "tcp6".into(),
                remote_addr: "2001:db8::1".into(),
                remote_port: 443,
                first_seen_ms: NOW - 60_000,
                last_seen_ms: NOW - 60_000,
                count: 1,
                last_result: -111,
                exit_time_ms: NOW - 59_000,
                net_ns: 4_026_531_840,
                net_ns_name: String::new(),
            },
        ],
    })
}

fn advisory_summaries() -> Vec<v1::AdvisorySummary> {
    vec![
        v1::AdvisorySummary {
            id: "GHSA-w7pp-m8wf-vj6r".into(),
            aliases: vec!["CVE-2023-23931".into(), "PYSEC-2023-254".into()],
            modified: "2024-09-18T21:48:52Z".into(),
            withdrawn: String::new(),
            summary: "Cipher.update_into can corrupt memory if passed an immutable python object as the outbuf".into(),
            severity: "MEDIUM".into(),
            score: Some(4.8),
            vector: "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:L/A:L".into(),
            packages: vec![v1::AffectedPackage {
                ecosystem: "pypi".into(),
                osv_ecosystem: "PyPI".into(),
                name: "cryptography".into(),
            }],
            source: "advisory-database/vulns/GHSA-w7pp-m8wf-vj6r.json".into(),
            provenance: Some(v1::Provenance {
                imported_by: "feeds".into(),
                imported_ms: NOW - 3_600_000,
                source: "osv-ghsa".into(),
                sha256: "5e".repeat(32),
            }),
        },
        v1::AdvisorySummary {
            id: "DSA-5764-1".into(),
            aliases: vec!["CVE-2024-5535".into(), "CVE-2024-6119".into()],
            modified: "2024-09-04T12:00:00Z".into(),
            withdrawn: "2024-10-01T00:00:00Z".into(),
            summary: "openssl - security update".into(),
            severity: String::new(),
            score: None,
            vector: String::new(),
            packages: vec![
                v1::AffectedPackage {
                    ecosystem: "deb".into(),
                    osv_ecosystem: "Debian:12".into(),
                    name: "openssl".into(),
                },
                v1::AffectedPackage {
                    ecosystem: "deb".into(),
                    osv_ecosystem: "Debian:11".into(),
                    name: "openssl".into(),
                },
            ],
            source: "osv-Debian-all.zip!/DSA-5764-1.json".into(),
            // Stored before provenance was kept.
            provenance: Some(v1::Provenance {
                imported_ms: NOW - 7_200_000,
                sha256: "d1".repeat(32),
                ..Default::default()
            }),
        },
    ]
}

fn advisories_list() -> Value {
    render::advisories_json(&advisory_summaries(), &[])
}

fn advisory_show() -> Value {
    let one = advisory_summaries()[..1].to_vec();
    let document = "{\n  \"id\": \"GHSA-w7pp-m8wf-vj6r\",\n  \"modified\": \"2024-09-18T21:48:52Z\",\n  \"aliases\": [\"CVE-2023-23931\"]\n}\n";
    render::advisories_json(&one, &[document.to_string()])
}

fn advisories_import() -> Value {
    render::import_json(&v1::ImportAdvisoriesResponse {
        added: 1_204,
        updated: 7,
        unchanged: 30_112,
        older: 2,
        refused: 1,
        withdrawn: 11,
        errors: vec![
            v1::ImportError {
                file: "vulns/PYSEC-2099-1.json".into(),
                position: "12:7".into(),
                reason: "affected[0].ranges[0].type: expected a string".into(),
            },
            v1::ImportError {
                file: "osv.zip!/../evil.json".into(),
                position: String::new(),
                reason: "path leaves the archive".into(),
            },
            v1::ImportError {
                file: "vulns/PYSEC-2023-11.json".into(),
                position: String::new(),
                reason: "PYSEC-2023-11 is held from source \"osv-pypa\" (imported by feeds); not replaced: use --replace to take it over from \"mirror\"".into(),
            },
        ],
        time_to_scope_ms: 5_321,
        matches: 88,
    })
}

fn sbom_summary() -> v1::SbomSummary {
    v1::SbomSummary {
        image: format!("sha256:{}", "4f67c834".repeat(8)),
        name: "trainer.cdx.json".into(),
        sha256: "9a".repeat(32),
        format: "cyclonedx".into(),
        syntax: "json".into(),
        spec_version: "1.6".into(),
        tools: vec!["syft 1.14.0".into(), "cyclonedx-py 4.1".into()],
        components: 312,
        edges: 540,
        packages: 298,
        ecosystems: [
            ("pypi".to_string(), 240),
            ("deb".to_string(), 55),
            ("npm".to_string(), 3),
        ]
        .into_iter()
        .collect(),
        pushed_ms: NOW - 5_000,
        provenance: Some(v1::Provenance {
            imported_by: "ci".into(),
            imported_ms: NOW - 5_000,
            source: "build-pipeline".into(),
            sha256: "9a".repeat(32),
        }),
    }
}

fn sbom_push() -> Value {
    render::sbom_push_json(&v1::PushSbomResponse {
        sbom: Some(sbom_summary()),
        outcome: "replaced".into(),
        matches: 14,
    })
}

fn sbom_list() -> Value {
    let mut spdx = sbom_summary();
    spdx.image = format!("sha256:{}", "0d".repeat(32));
    spdx.name = "redis.spdx".into();
    spdx.format = "spdx".into();
    spdx.syntax = "tag-value".into();
    spdx.spec_version = "SPDX-2.3".into();
    spdx.tools = Vec::new();
    spdx.ecosystems = [("apk".to_string(), 20)].into_iter().collect();
    render::sboms_json(&v1::ListSbomsResponse {
        sboms: vec![sbom_summary(), spdx],
    })
}

pub(crate) fn an_incident() -> v1::Incident {
    v1::Incident {
        id: "INC-3".into(),
        dedup_key: "advisory:PYSEC-2023-228".into(),
        state: "scoped".into(),
        tier: None,
        source: Some(v1::IncidentSource {
            kind: "advisory".into(),
            advisory: "PYSEC-2023-228".into(),
            asked_as: "CVE-2023-5752".into(),
            ..Default::default()
        }),
        opened_at_ms: 1_764_900_000_000,
        opened_by: "alice".into(),
        updated_at_ms: 1_764_900_060_000,
        scope: Some(v1::IncidentScope {
            workloads: vec!["k8s:prod/ml/Deployment/trainer/trainer".into()],
            hosts: vec!["web-1".into()],
            image_digests: vec![format!("sha256:{}", "4f".repeat(32))],
            pids: vec![v1::HostPids {
                host: "web-1".into(),
                pids: vec![4242, 4250],
            }],
            data_scopes: vec!["sensitive".into()],
            privileged: false,
            evidence: "installed".into(),
            packages: vec!["pkg:pypi/pip@23.0.1".into()],
            processes: 2,
            truncated: false,
        }),
        events: Vec::new(),
        tier_name: String::new(),
        plan: None,
        actions: Vec::new(),
        policy: Some(v1::PolicyInForce {
            source: "built-in".into(),
            loaded_at_ms: 1_764_899_000_000,
            reload_error: String::new(),
            verify: None,
        }),
        verification: None,
    }
}

fn incident_event(seq: i64, actor: &str, kind: &str, payload: Value) -> v1::IncidentEvent {
    v1::IncidentEvent {
        seq,
        at_ms: 1_764_900_000_000 + (seq - 1) * 30_000,
        actor: actor.into(),
        kind: kind.into(),
        payload_json: payload.to_string(),
    }
}

fn incident_open() -> Value {
    let mut v = render::incident_json(&an_incident(), false);
    v["created"] = true.into();
    v
}

fn incident_show() -> Value {
    let mut i = an_incident();
    let scope = serde_json::json!({
        "workloads": ["k8s:prod/ml/Deployment/trainer/trainer"],
        "hosts": ["web-1"],
        "image_digests": [format!("sha256:{}", "4f".repeat(32))],
        "pids": {"web-1": [4242, 4250]},
        "data_scopes": ["sensitive"],
        "privileged": false,
        "evidence": "installed",
        "packages": ["pkg:pypi/pip@23.0.1"],
        "processes": 2,
        "truncated": false
    });
    i.events = vec![
        incident_event(
            1,
            "alice",
            "opened",
            serde_json::json!({"kind": "opened", "source": {"kind": "advisory", "id": "PYSEC-2023-228", "asked_as": "CVE-2023-5752"}, "dedup_key": "advisory:PYSEC-2023-228"}),
        ),
        incident_event(
            2,
            "alice",
            "scope_changed",
            serde_json::json!({"kind": "scope_changed", "scope": scope, "added": {"workloads": ["k8s:prod/ml/Deployment/trainer/trainer"], "hosts": ["web-1"], "pids": {"web-1": [4242]}}, "removed": {"workloads": [], "hosts": [], "pids": {}}}),
        ),
        incident_event(
            3,
            "alice",
            "state_changed",
            serde_json::json!({"kind": "state_changed", "from": "detected", "to": "scoped", "reason": "1 process(es) on 1 host(s)"}),
        ),
        incident_event(
            4,
            "collector",
            "scope_changed",
            serde_json::json!({"kind": "scope_changed", "scope": scope, "added": {"workloads": [], "hosts": [], "pids": {"web-1": [4250]}}, "removed": {"workloads": [], "hosts": [], "pids": {}}}),
        ),
    ];
    let mut v = render::incident_json(&i, true);
    v["more_events"] = false.into();
    v
}

fn incidents_list() -> Value {
    let mut package = an_incident();
    package.id = "INC-2".into();
    package.dedup_key = "package:libssl3@<3.0.13".into();
    package.state = "false_positive".into();
    package.source = Some(v1::IncidentSource {
        kind: "package".into(),
        package: "libssl3".into(),
        range: "<3.0.13".into(),
        ..Default::default()
    });
    render::incidents_json(&v1::ListIncidentsResponse {
        incidents: vec![an_incident(), package],
        next_before: "INC-2".into(),
        policy: Some(v1::PolicyInForce {
            source: "built-in".into(),
            loaded_at_ms: 1_764_896_400_000,
            reload_error: String::new(),
            verify: None,
        }),
        time_to_containment: vec![v1::TierContainment {
            tier: 1,
            actions: 1,
            min_ms: 1_450,
            median_ms: 1_450,
            max_ms: 1_450,
        }],
    })
}

const CGROUP: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7d1c.slice/cri-containerd-4f4f.scope";

/// The trainer's cgroup, its two exposed pythons among five processes.
pub(crate) fn a_target() -> v1::PlanTarget {
    v1::PlanTarget {
        host: "web-1".into(),
        workload: "k8s:prod/ml/Deployment/trainer/trainer".into(),
        cgroup: CGROUP.into(),
        pids: vec![4242, 4250],
        processes: 5,
        shared_with: Vec::new(),
    }
}

/// Tier 1's plan for INC-3: isolate (a guard leaves the agent out), rotate
/// tokens (no executor here), and a record carried out at once.
pub(crate) fn a_plan() -> v1::Plan {
    v1::Plan {
        hash: "9c1f".repeat(16),
        tier: Some(1),
        tier_name: "critical in a sensitive scope".into(),
        exception: String::new(),
        actions: vec![
            v1::PlanAction {
                id: 1,
                kind: "isolate_affected_workloads".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                revert_after_ms: 7_200_000,
                allow: vec!["10.20.0.0/16".into()],
                targets: vec![a_target()],
                excluded: vec![v1::PlanExclusion {
                    host: "web-1".into(),
                    workload: "unit:patchgap-agent.service".into(),
                    cgroup: "/system.slice/patchgap-agent.service".into(),
                    guard: "protect_agent".into(),
                    pids: vec![812],
                }],
                no_executor: String::new(),
                executor: "agents".into(),
            },
            v1::PlanAction {
                id: 2,
                kind: "rotate_scoped_tokens".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                no_executor: "no executor configured".into(),
                ..Default::default()
            },
            v1::PlanAction {
                id: 3,
                kind: "open_incident_sev1".into(),
                mode: "enforce".into(),
                approval: "auto".into(),
                ..Default::default()
            },
            v1::PlanAction {
                id: 4,
                kind: "freeze_deployments".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                executor: "deploy_gate".into(),
                ..Default::default()
            },
        ],
        made_at_ms: 1_764_900_120_000,
        requested_by: "alice".into(),
        expires_at_ms: 1_764_903_720_000,
    }
}

/// INC-3 once its plan was approved: the isolation applied and blocking,
/// the token rotation failed for want of an executor, the record done.
pub(crate) fn a_contained_incident() -> v1::Incident {
    let plan = a_plan();
    let t0 = 1_764_900_000_000;
    v1::Incident {
        state: "contained".into(),
        tier: Some(1),
        tier_name: plan.tier_name.clone(),
        actions: vec![
            v1::IncidentAction {
                id: 1,
                kind: "isolate_affected_workloads".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                state: "applied".into(),
                plan: plan.hash.clone(),
                targets: vec![a_target()],
                planned_at_ms: t0 + 120_000,
                requested_at_ms: t0 + 300_000,
                applied_at_ms: t0 + 301_250,
                time_to_containment_ms: 302_400,
                blocked_connects: 3,
                blocked_packets: 41,
                revert_at_ms: t0 + 300_000 + 7_200_000,
                approved_by: "bob".into(),
                executor: "agents".into(),
                ..Default::default()
            },
            v1::IncidentAction {
                id: 2,
                kind: "rotate_scoped_tokens".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                state: "failed".into(),
                reason: "no executor configured".into(),
                plan: plan.hash.clone(),
                planned_at_ms: t0 + 120_000,
                requested_at_ms: t0 + 300_000,
                failed_at_ms: t0 + 300_000,
                approved_by: "bob".into(),
                ..Default::default()
            },
            v1::IncidentAction {
                id: 3,
                kind: "open_incident_sev1".into(),
                mode: "enforce".into(),
                approval: "auto".into(),
                state: "applied".into(),
                plan: plan.hash.clone(),
                planned_at_ms: t0 + 120_000,
                applied_at_ms: t0 + 120_000,
                ..Default::default()
            },
            // The deploy gate's: applied from the approval's commit,
            // verified by its own decision, with the admissions it denied.
            v1::IncidentAction {
                id: 4,
                kind: "freeze_deployments".into(),
                mode: "enforce".into(),
                approval: "required".into(),
                state: "verified".into(),
                plan: plan.hash.clone(),
                planned_at_ms: t0 + 120_000,
                requested_at_ms: t0 + 300_000,
                applied_at_ms: t0 + 300_000,
                verified_at_ms: t0 + 300_480,
                time_to_containment_ms: 300_480,
                approved_by: "bob".into(),
                executor: "deploy_gate".into(),
                denied_admissions: 2,
                overridden_admissions: 1,
                ..Default::default()
            },
        ],
        plan: Some(plan),
        updated_at_ms: t0 + 301_250,
        ..an_incident()
    }
}

fn incident_plan() -> Value {
    render::plan_json(&v1::PlanIncidentResponse {
        incident: Some(v1::Incident {
            state: "planned".into(),
            tier: Some(1),
            tier_name: a_plan().tier_name,
            plan: Some(a_plan()),
            ..an_incident()
        }),
        plan: Some(a_plan()),
        recorded: true,
    })
}

fn incident_approve() -> Value {
    render::approve_json(&v1::ApproveIncidentResponse {
        incident: Some(a_contained_incident()),
        requested: vec![1, 2],
    })
}

fn incident_revert() -> Value {
    let mut i = a_contained_incident();
    let a = &mut i.actions[0];
    a.state = "reverted".into();
    a.reason = "false-positive".into();
    a.reverted_at_ms = a.applied_at_ms + 600_000;
    a.revert_verified_at_ms = a.reverted_at_ms + 900;
    a.revert_at_ms = 0;
    render::revert_json(&v1::RevertIncidentResponse {
        incident: Some(i),
        reverted: vec![1],
    })
}

fn incident_show_contained() -> Value {
    let mut i = a_contained_incident();
    i.policy = Some(v1::PolicyInForce {
        source: "/etc/patchgap/policy.toml".into(),
        loaded_at_ms: 1_764_899_000_000,
        reload_error: "/etc/patchgap/policy.toml:12:8: unknown action kind \"isolate\"".into(),
        verify: None,
    });
    let mut v = render::incident_json(&i, true);
    v["more_events"] = false.into();
    v
}

/// The outbox: one delivery retried after a 503, one given up on a 410
/// that disabled its endpoint.
fn deliveries() -> Value {
    let t0 = 1_764_900_000_000;
    crate::deliveries::deliveries_json(&v1::ListDeliveriesResponse {
        deliveries: vec![
            v1::Delivery {
                id: 2,
                webhook_id: "msg_5d0c6a1e9b7f42a8c3e1d0b4".into(),
                endpoint: "canary".into(),
                incident: "INC-3".into(),
                action: 5,
                event_type: "patchgap.action.requested".into(),
                state: "pending".into(),
                attempts: 2,
                next_attempt_at_ms: t0 + 305_000,
                last_status: 503,
                last_error: "HTTP 503 Service Unavailable".into(),
                created_at_ms: t0,
                ..Default::default()
            },
            v1::Delivery {
                id: 1,
                webhook_id: "msg_3b2f0c8e1d9a4f7b6c5d2e10".into(),
                endpoint: "tokens".into(),
                endpoint_disabled: true,
                incident: "INC-3".into(),
                action: 2,
                event_type: "patchgap.action.requested".into(),
                state: "failed".into(),
                attempts: 1,
                last_status: 410,
                last_error: "endpoint gone".into(),
                created_at_ms: t0,
                done_at_ms: t0 + 1_000,
                ..Default::default()
            },
        ],
        disabled_endpoints: vec![v1::DisabledEndpoint {
            name: "tokens".into(),
            disabled_at_ms: t0 + 1_000,
            reason: "HTTP 410 Gone".into(),
        }],
    })
}

/// A case: the snapshot's file name, and the answer as the command prints it.
type Case = (&'static str, fn() -> Value);

/// `patchgap changes --workload ml/Deployment/trainer --since 24h`: an
/// upgrade on both replicas, a package new to the workload and one gone.
fn changes() -> Value {
    crate::egress::changes_json(&[changes_page()], NOW - 86_400_000)
}

/// The same, when retention dropped the history of the window's first
/// hours: `history_dropped_before` says from when the answer is whole.
fn changes_after_retention() -> Value {
    let mut page = changes_page();
    page.history_dropped_before_ms = NOW - 8 * 3_600_000;
    crate::egress::changes_json(&[page], NOW - 86_400_000)
}

fn changes_page() -> v1::ListWorkloadChangesResponse {
    v1::ListWorkloadChangesResponse {
        key: "k8s:prod/ml/Deployment/trainer/trainer".into(),
        changes: vec![
            v1::WorkloadPackageChange {
                name: "pypi/trainlib".into(),
                from_version: "1.0.0".into(),
                to_version: "2.0.0".into(),
                at_ms: NOW - 3_600_000,
                evidence: "installed".into(),
                purl: "pkg:pypi/trainlib@2.0.0".into(),
                hosts: vec!["node-1".into(), "node-2".into()],
                replicas: vec![
                    "node-1/pod/2f0c/trainer".into(),
                    "node-2/pod/9a41/trainer".into(),
                ],
            },
            v1::WorkloadPackageChange {
                name: "pypi/telemetry-sdk".into(),
                from_version: String::new(),
                to_version: "0.9.1".into(),
                at_ms: NOW - 3_600_000,
                evidence: "opened".into(),
                purl: "pkg:pypi/telemetry-sdk@0.9.1".into(),
                hosts: vec!["node-1".into()],
                replicas: vec!["node-1/pod/2f0c/trainer".into()],
            },
            v1::WorkloadPackageChange {
                name: "deb/libbz2-1.0".into(),
                from_version: "1.0.8-5+b1".into(),
                to_version: String::new(),
                at_ms: NOW - 600_000,
                evidence: "mapped".into(),
                purl: "pkg:deb/debian/libbz2-1.0@1.0.8-5+b1?arch=amd64".into(),
                hosts: vec!["node-1".into()],
                replicas: vec!["node-1/pod/2f0c/trainer".into()],
            },
        ],
        next_page_token: String::new(),
        instances: 3,
        truncated: false,
        history_dropped_before_ms: 0,
    }
}

/// Every documented JSON answer.
const CASES: &[Case] = &[
    // patchgap query NAME[@CONSTRAINT] -o json
    ("query", query),
    ("query_empty", query_empty),
    ("query_distro", query_distro),
    // patchgap query NAME --since T -o json
    ("history", history),
    // patchgap query --advisory ID -o json
    ("query_advisory", query_advisory),
    // patchgap findings -o json
    ("findings", findings),
    // patchgap workloads -o json
    ("workloads", workloads),
    // patchgap hosts -o json
    ("hosts", hosts),
    // patchgap ps -o json
    ("ps", ps),
    // patchgap connections -o json
    ("connections", connections),
    // patchgap advisories list -o json
    ("advisories_list", advisories_list),
    // patchgap advisories show ID -o json
    ("advisory_show", advisory_show),
    // patchgap advisories import PATH -o json
    ("advisories_import", advisories_import),
    // patchgap sbom push --image D FILE -o json
    ("sbom_push", sbom_push),
    // patchgap sbom list -o json
    ("sbom_list", sbom_list),
    // patchgap incident open --advisory ID -o json
    ("incident_open", incident_open),
    // patchgap incident show ID -o json
    ("incident_show", incident_show),
    // patchgap incidents -o json
    ("incidents", incidents_list),
    // patchgap incident plan ID -o json
    ("incident_plan", incident_plan),
    // patchgap incident approve ID --plan HASH -o json
    ("incident_approve", incident_approve),
    // patchgap incident revert ID --reason false-positive -o json
    ("incident_revert", incident_revert),
    // patchgap incident show ID -o json, once contained (and under a
    // policy whose reload failed)
    ("incident_show_contained", incident_show_contained),
    // patchgap deliveries -o json
    ("deliveries", deliveries),
    // patchgap changes --workload W --since T -o json
    ("changes", changes),
    ("changes_after_retention", changes_after_retention),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Each answer's bytes equal its committed snapshot; every mismatch is
/// reported, not only the first.
#[test]
fn json_answers_match_their_snapshots() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (name, answer) in CASES {
        let text = render::json_text(&answer()).unwrap();
        let path = dir().join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!(
                "{name}: the JSON differs from {}\n--- want\n{want}--- got\n{text}",
                path.display()
            )),
            Err(e) => failures.push(format!("{name}: {}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(if the change is intended: UPDATE_SNAPSHOTS=1 cargo test -p cli --bin patchgap snapshots)",
        failures.join("\n")
    );
}

/// A snapshot without a case would pin nothing: every file is one of the cases.
#[test]
fn every_snapshot_file_has_a_case() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = CASES.iter().map(|(n, _)| format!("{n}.json")).collect();
    names.sort();
    assert_eq!(files, names);
}
