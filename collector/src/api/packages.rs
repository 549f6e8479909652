//! FindPackage: who has a package (by name, constraint or purl) or is
//! exposed to an advisory, now or in a time window. The request is parsed
//! and validated into [`FindPackage`] without any I/O; `apply` asks the
//! domain.

use patchgap_proto::{purl::Purl, v1};
use tonic::Status;

use super::{invalid, paging::Paging, query::QueryService, query::place_in_workloads};
use crate::{
    advisories::version::{Constraint, parse_query},
    ecosystem::{Ecosystem, purl_order},
    fleet::exposure::{self, FindingsQuery, PackageQuery, evidence_loaded},
};

/// What a FindPackage request asks, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FindPackage {
    /// The query as echoed back: `name@constraint` or `advisory ID`.
    pub query: String,
    pub target: Target,
    /// Only packages of this ecosystem.
    pub ecosystem: Option<Ecosystem>,
    /// `loaded`, `installed` or `declared`.
    pub evidence: Option<String>,
    /// (since, until) ms; None: running processes.
    pub window: Option<(i64, i64)>,
    pub filter: v1::WorkloadFilter,
}

/// A package (with an optional version constraint and Maven group) or an
/// advisory id.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Package {
        name: String,
        constraint: Option<Constraint>,
        /// A Maven groupId from a purl.
        source: Option<String>,
    },
    Advisory(String),
}

impl TryFrom<v1::FindPackageRequest> for FindPackage {
    type Error = Status;

    fn try_from(mut req: v1::FindPackageRequest) -> Result<FindPackage, Status> {
        // A purl names the ecosystem, the package and an exact version.
        let mut source = None;
        if req.name.trim_start().starts_with("pkg:") {
            let purl = Purl::parse(req.name.trim())
                .map_err(|e| invalid(format!("bad purl {:?}: {e}", req.name)))?;
            let eco = purl.ty().to_string();
            if Ecosystem::from_purl_type(&eco).is_none() {
                return Err(invalid(format!(
                    "purl type {eco:?} is not one patchgap inventories: use one of {}",
                    Ecosystem::list()
                )));
            }
            if !req.ecosystem.is_empty() && req.ecosystem != eco {
                return Err(invalid(format!(
                    "the purl says {eco}, --ecosystem says {}",
                    req.ecosystem
                )));
            }
            if let Some(v) = purl.version() {
                if !req.constraint.is_empty() {
                    return Err(invalid(
                        "give the version in the purl or as a constraint, not both",
                    ));
                }
                req.constraint = v.to_string();
            }
            req.name = match (eco.as_str(), purl.namespace()) {
                // Their names include the namespace.
                ("npm" | "golang", Some(ns)) => format!("{ns}/{}", purl.name()),
                // The groupId is stored as the source.
                ("maven", Some(ns)) => {
                    source = Some(ns.to_string());
                    purl.name().to_string()
                }
                // deb, rpm, apk: the namespace is the distribution.
                _ => purl.name().to_string(),
            };
            req.ecosystem = eco;
        }
        let advisory = req.advisory.trim().to_string();
        if !advisory.is_empty() && (!req.name.is_empty() || !req.constraint.is_empty()) {
            return Err(invalid("give a package or an advisory, not both"));
        }
        let (query, target) = if advisory.is_empty() {
            let spec = if req.constraint.is_empty() {
                req.name.clone()
            } else {
                format!("{}@{}", req.name, req.constraint)
            };
            let (name, constraint) = parse_query(&spec).map_err(|e| invalid(e.to_string()))?;
            let query = match &constraint {
                Some(c) => format!("{name}@{c}"),
                None => name.clone(),
            };
            (
                query,
                Target::Package {
                    name,
                    constraint,
                    source,
                },
            )
        } else {
            (format!("advisory {advisory}"), Target::Advisory(advisory))
        };
        if req.since_ms < 0 || req.until_ms < 0 || (req.until_ms > 0 && req.until_ms < req.since_ms)
        {
            return Err(invalid("the time window needs 0 <= since <= until"));
        }
        let until = if req.until_ms > 0 {
            req.until_ms
        } else {
            i64::MAX
        };
        let window = (req.since_ms > 0 || req.until_ms > 0).then_some((req.since_ms, until));
        let ecosystem = match req.ecosystem.trim() {
            "" => None,
            e => Some(Ecosystem::from_purl_type(e).ok_or_else(|| {
                invalid(format!(
                    "unknown ecosystem {e:?}: use one of {}",
                    Ecosystem::list()
                ))
            })?),
        };
        let evidence = match req.evidence.trim() {
            "" => None,
            e @ ("loaded" | "installed" | "declared") => Some(e.to_string()),
            e => {
                return Err(invalid(format!(
                    "unknown evidence {e:?}: use loaded, installed or declared"
                )));
            }
        };
        Ok(FindPackage {
            query,
            target,
            ecosystem,
            evidence,
            window,
            filter: req.filter.unwrap_or_default(),
        })
    }
}

impl FindPackage {
    pub(super) async fn apply(
        self,
        svc: &QueryService,
        paging: Paging,
    ) -> Result<v1::FindPackageResponse, Status> {
        let started = std::time::Instant::now();
        let FindPackage {
            query,
            target,
            ecosystem,
            evidence,
            window,
            filter,
        } = self;
        // The coverage (first pages) and the page are read at once.
        let coverage = async {
            if !paging.first() {
                return Ok((None, 0.0));
            }
            let mut c = svc.coverage().await?;
            if let Some((since, _)) = window {
                svc.mark_retention(&mut c, since).await?;
            }
            Ok::<_, Status>((Some(c), started.elapsed().as_secs_f64() * 1e3))
        };
        let (after, limit) = (paging.after.clone(), paging.limit());
        let page = async {
            match target {
                Target::Package {
                    name,
                    constraint,
                    source,
                } => {
                    svc.read(move |s| {
                        exposure::find_package_page(
                            s,
                            &PackageQuery {
                                name: &name,
                                ecosystem: ecosystem.map(Ecosystem::purl_type),
                                source: source.as_deref(),
                                // Each package's version in its own ecosystem's order.
                                version_ok: &|eco, v| {
                                    constraint
                                        .as_ref()
                                        .is_none_or(|c| c.matches_in(v, purl_order(eco)))
                                },
                                window,
                            },
                            after.as_ref(),
                            limit,
                        )
                    })
                    .await
                }
                Target::Advisory(id) => exposed_to(svc, id, ecosystem, window, &paging).await,
            }
        };
        let ((coverage, coverage_ms), page) = tokio::try_join!(coverage, page)?;
        let found = started.elapsed();
        let fleet = svc
            .workloads_of(
                paging.first(),
                page.processes.iter().flat_map(|(_, ms)| ms.iter()),
            )
            .await?;
        let placed = started.elapsed();
        let groups = page
            .processes
            .into_iter()
            .map(|(cursor, mut matches)| {
                if let Some(wanted) = &evidence {
                    matches.retain(|m| match wanted.as_str() {
                        "loaded" => evidence_loaded(&m.evidence),
                        other => m.evidence == other,
                    });
                }
                place_in_workloads(&mut matches, &fleet, &filter);
                (cursor, matches)
            })
            .collect();
        let (matches, next_page_token) = paging.fill(groups, page.next);
        tracing::debug!(
            matches = matches.len(),
            coverage_ms,
            read_ms = found.as_secs_f64() * 1e3,
            workloads_ms = (placed - found).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "FindPackage page"
        );
        Ok(v1::FindPackageResponse {
            query,
            coverage,
            matches,
            scope_map_error: fleet.scope_map_error.clone(),
            next_page_token,
        })
    }
}

/// The processes that have a package and version an advisory (by id or
/// alias) affects, from the matcher's stored verdicts: fixed-by-distro
/// ones included, with their status. Withdrawn advisories expose nothing.
async fn exposed_to(
    svc: &QueryService,
    id: String,
    ecosystem: Option<Ecosystem>,
    window: Option<(i64, i64)>,
    paging: &Paging,
) -> Result<exposure::MatchPage, Status> {
    let wanted = id.clone();
    let found = svc.read(move |s| s.advisory(&wanted)).await?;
    if found.is_empty() {
        return Err(Status::not_found(format!(
            "no advisory is known as {id}: import it with `patchgap advisories import`"
        )));
    }
    let ids: Vec<String> = found.into_iter().map(|r| r.id).collect();
    let (after, limit) = (paging.after.clone(), paging.limit());
    let mut page = svc
        .read(move |s| {
            let index = exposure::FindingsIndex::load(
                s,
                &FindingsQuery {
                    advisories: Some(ids),
                    window,
                    include_fixed: true,
                },
            )?;
            exposure::findings_page(s, &index, window, after.as_ref(), limit)
        })
        .await?;
    for (_, matches) in &mut page.processes {
        if let Some(e) = ecosystem {
            matches.retain(|m| {
                m.package
                    .as_ref()
                    .is_some_and(|p| p.ecosystem == e.purl_type())
            });
        }
        // A process's matches are all on one page: one row per package.
        *matches = exposure::one_per_package(std::mem::take(matches));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(req: v1::FindPackageRequest) -> Result<FindPackage, String> {
        FindPackage::try_from(req).map_err(|s| s.message().to_string())
    }

    #[test]
    fn a_purl_names_ecosystem_group_and_version() {
        let q = parse(v1::FindPackageRequest {
            name: "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.ecosystem, Some(Ecosystem::Maven));
        assert_eq!(q.query, "log4j-core@=2.14.1");
        match q.target {
            Target::Package { name, source, .. } => {
                assert_eq!(name, "log4j-core");
                assert_eq!(source.as_deref(), Some("org.apache.logging.log4j"));
            }
            t => panic!("{t:?}"),
        }
        let npm = parse(v1::FindPackageRequest {
            name: "pkg:npm/%40babel/core".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(npm.target, Target::Package { ref name, .. } if name == "@babel/core"));
    }

    #[test]
    fn bad_requests_say_why() {
        let cases = [
            (
                v1::FindPackageRequest {
                    name: "pkg:nuget/Foo@1".into(),
                    ..Default::default()
                },
                "not one patchgap inventories",
            ),
            (
                v1::FindPackageRequest {
                    name: "libc6".into(),
                    advisory: "CVE-1".into(),
                    ..Default::default()
                },
                "not both",
            ),
            (
                v1::FindPackageRequest {
                    name: "libc6".into(),
                    ecosystem: "nuget".into(),
                    ..Default::default()
                },
                "unknown ecosystem \"nuget\": use one of deb, rpm, apk, pypi, npm, maven, golang, cargo",
            ),
            (
                v1::FindPackageRequest {
                    name: "libc6".into(),
                    since_ms: 10,
                    until_ms: 5,
                    ..Default::default()
                },
                "0 <= since <= until",
            ),
            (
                v1::FindPackageRequest {
                    name: "libc6".into(),
                    evidence: "smelled".into(),
                    ..Default::default()
                },
                "unknown evidence",
            ),
        ];
        for (req, want) in cases {
            let err = parse(req.clone()).unwrap_err();
            assert!(err.contains(want), "{req:?}: {err}");
        }
    }

    #[test]
    fn a_window_without_an_end_is_open() {
        let q = parse(v1::FindPackageRequest {
            advisory: " CVE-2023-23931 ".into(),
            since_ms: 1000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.target, Target::Advisory("CVE-2023-23931".into()));
        assert_eq!(q.window, Some((1000, i64::MAX)));
        assert_eq!(q.query, "advisory CVE-2023-23931");
    }

    /// A first page's workload summaries come from the matches' hosts
    /// alone, equal to the fleet's, however many unrelated hosts there
    /// are; a match in a workload whose key spans hosts (a systemd unit)
    /// still gets the fleet's summary. A host's rows are read again only
    /// when its inventory generation moved (a Hello, a snapshot or a
    /// delta; not a heartbeat). Coverage never counts processes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_reads_the_workloads_of_its_matches_hosts_only() {
        use std::{
            sync::{Arc, Mutex},
            time::Duration,
        };

        use patchgap_proto::v1::{agent_message::Body, query_server::Query};
        use tonic::Request;

        use crate::{
            audit::{AuditLog, CheckpointPolicy},
            auth::{SigningKey, TokenPolicy, Tokens},
            fleet::{ingest::Ingest, scope::ScopeMap},
            store::{
                conformance::{T0, deb, exe, hello_for, mapped, msg, process, snapshot},
                counting::Counting,
                sqlite::SqliteStore,
            },
        };

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::new(SqliteStore::in_memory().unwrap()));
        let ingest = Arc::new(Ingest::new(store.clone()));
        let tokens = Arc::new(Tokens::open(dir.path(), TokenPolicy::default(), &*store).unwrap());
        let key = Arc::new(SigningKey::load_or_create(dir.path()).unwrap());
        let audit =
            Arc::new(AuditLog::open(store.clone(), key, CheckpointPolicy::default()).unwrap());
        let svc = QueryService::new(
            ingest.clone(),
            Default::default(),
            Duration::from_secs(3600),
            Arc::new(Mutex::new(ScopeMap::default())),
            tokens,
            audit,
        );
        let container = |id: &str| v1::Workload {
            id: format!("container/{id}"),
            kind: "container".into(),
            container_id: id.into(),
            container_name: "web".into(),
            runtime: "docker".into(),
            ..Default::default()
        };
        // Each host: pid 10 in the test unit, 20 and 21 in container c1; on
        // `rare_on` hosts pid 20 maps librare (in c1) and pid 10 maps
        // libunit (in the unit).
        let add = |name: &str, rare: bool| {
            let s = ingest
                .hello(&hello_for(&format!("m-{name}"), name, "s"), T0)
                .unwrap();
            let lib = |path: &str, pkg: &str| mapped(path, 300, Some(deb(pkg, pkg, "1.0-1")));
            let mut p10 = process(10, vec![exe("/usr/bin/d", 100, Some(deb("d", "d", "1")))]);
            let mut p20 = process(20, vec![exe("/usr/bin/w", 101, Some(deb("w", "w", "1")))]);
            if rare {
                p10.artifacts.push(lib("/usr/lib/libunit.so.1", "libunit1"));
                p20.artifacts.push(lib("/usr/lib/librare.so.1", "librare1"));
            }
            p20.workload = "container/c1".into();
            let mut p21 = process(21, vec![]);
            p21.workload = "container/c1".into();
            let mut snap = snapshot("snap-1", vec![p10, p20, p21], vec![]);
            if let Body::Snapshot(s) = &mut snap {
                s.workloads.push(container("c1"));
            }
            ingest.apply(&s, &msg(1, snap), T0 + 1).unwrap();
        };
        let find = |name: &'static str| {
            let svc = &svc;
            async move {
                svc.find_package(Request::new(v1::FindPackageRequest {
                    name: name.into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
            }
        };
        add("alpha", true);
        for i in 0..3 {
            add(&format!("unrelated-{i}"), false);
        }
        let (rows, full, hosts) = (
            store.count.workload_rows_on(),
            store.count.workloads(),
            store.count.hosts(),
        );

        let rare = find("librare1").await;
        assert_eq!(rare.matches.len(), 1, "{rare:?}");
        let m = &rare.matches[0];
        assert_eq!(m.workload, "container:alpha/web");
        assert_eq!(rare.coverage.as_ref().unwrap().hosts_total, 4);
        assert_eq!(store.count.hosts(), hosts, "coverage counts no processes");
        // alpha's two instances (the unit and c1), no other host's.
        assert_eq!(store.count.workload_rows_on() - rows, 2);
        let rows = store.count.workload_rows_on();
        let fleet = svc.workloads().await.unwrap();
        let whole = |k: &str| fleet.summaries.iter().find(|s| s.key == k).cloned();
        assert_eq!(m.workload_detail, whole(&m.workload));
        assert_eq!(m.workload_detail.as_ref().unwrap().processes, 2);
        // The fleet's read the three other hosts only: alpha's were held.
        assert_eq!(store.count.workload_rows_on() - rows, 6);

        for i in 3..12 {
            add(&format!("unrelated-{i}"), false);
        }
        let rows = store.count.workload_rows_on();
        let again = find("librare1").await;
        assert_eq!(
            store.count.workload_rows_on() - rows,
            0,
            "alpha's rows are held: its generation did not move"
        );
        assert_eq!(again.matches[0].workload_detail, m.workload_detail);
        assert_eq!(again.coverage.unwrap().hosts_total, 13);

        // The unit runs on every host: its summary is the fleet's, for
        // which the nine new hosts are read.
        let unit = find("libunit1").await;
        assert_eq!(unit.matches.len(), 1, "{unit:?}");
        let u = &unit.matches[0];
        assert_eq!(u.workload, "unit:test.service");
        assert_eq!(
            store.count.workload_rows_on() - rows,
            18,
            "read the fleet's"
        );
        let detail = u.workload_detail.as_ref().unwrap();
        assert_eq!(detail.hosts.len(), 13);
        assert_eq!(Some(detail.clone()), {
            let fleet = svc.workloads().await.unwrap();
            fleet
                .summaries
                .iter()
                .find(|s| s.key == u.workload)
                .cloned()
        });
        assert_eq!(store.count.workloads(), full, "no store-wide read");

        // A heartbeat moves nothing; a delta that starts a process in c1
        // on alpha moves its generation, and the next answer counts it.
        let alpha = ingest
            .hello(&hello_for("m-alpha", "alpha", "s"), T0 + 2)
            .unwrap();
        let to_alpha = |seq: u64, body| {
            ingest
                .apply(&alpha, &msg(seq, body), T0 + 1 + seq as i64)
                .unwrap()
        };
        let rows = store.count.workload_rows_on();
        to_alpha(2, crate::store::conformance::heartbeat());
        find("librare1").await;
        assert_eq!(
            store.count.workload_rows_on() - rows,
            2,
            "the Hello moved it"
        );
        let rows = store.count.workload_rows_on();
        to_alpha(3, crate::store::conformance::heartbeat());
        let beat = find("librare1").await;
        assert_eq!(
            store.count.workload_rows_on() - rows,
            0,
            "a heartbeat did not"
        );
        assert_eq!(beat.matches[0].workload_detail, m.workload_detail);
        let mut p22 = process(22, vec![]);
        p22.workload = "container/c1".into();
        to_alpha(4, crate::store::conformance::delta(vec![p22], &[], vec![]));
        let moved = find("librare1").await;
        assert_eq!(
            store.count.workload_rows_on() - rows,
            2,
            "the delta moved it"
        );
        assert_eq!(
            moved.matches[0].workload_detail.as_ref().unwrap().processes,
            3
        );

        // A listing's later pages on the same host read no workload rows:
        // the host's workloads are counted once per listing, however many
        // pages its matches take (a host with a million processes).
        let s = ingest
            .hello(&hello_for("m-paged", "paged", "s"), T0)
            .unwrap();
        let procs = (30..41)
            .map(|pid| {
                let mut p = process(pid, vec![exe("/usr/bin/w", 101, Some(deb("w", "w", "1")))]);
                p.artifacts.push(mapped(
                    "/usr/lib/libpaged.so.1",
                    300,
                    Some(deb("libpaged1", "libpaged1", "1.0-1")),
                ));
                p.workload = "container/c1".into();
                p
            })
            .collect();
        let mut snap = snapshot("snap-1", procs, vec![]);
        if let Body::Snapshot(s) = &mut snap {
            s.workloads.push(container("c1"));
        }
        ingest.apply(&s, &msg(1, snap), T0 + 1).unwrap();
        let rows = store.count.workload_rows_on();
        let (mut token, mut pages, mut pids) = (String::new(), 0, Vec::new());
        loop {
            let r = svc
                .find_package(Request::new(v1::FindPackageRequest {
                    name: "libpaged1".into(),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            for m in &r.matches {
                assert_eq!(m.workload, "container:paged/web");
                pids.push(m.key.as_ref().unwrap().pid);
            }
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        assert_eq!(pids, (30..41).collect::<Vec<_>>());
        assert_eq!(pages, 6);
        assert_eq!(
            store.count.workload_rows_on() - rows,
            1,
            "the host's one workload, read by the first page only"
        );
    }
}
