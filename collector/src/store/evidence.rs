//! What both backends' `evidence_page` share once their rows are read:
//! the shapes of a package's artifacts and SBOM declarations, how one
//! process's evidence is laid out, and how a selective answer is paged.
//! No I/O here.
//!
//! Two ways to find a page. The walk goes through every running process
//! of every host in cursor order and keeps those whose set holds one of
//! the packages' artifacts: its cost is the fleet's size, whatever the
//! answer's. A selective answer (a package a few processes have) is found
//! the other way round, from the sets that hold the artifacts and the
//! workloads that declare the package, through the indexes on a process's
//! set and workload; its cost is the answer's size. A backend first
//! counts the candidates up to [`SELECTIVE_MAX`], and walks past it.

use std::{collections::HashMap, sync::Arc};

use patchgap_proto::v1;

use super::{Evidence, EvidencePage, PageLimit, ProcessCursor};

/// One of the packages' artifacts in a set: (position of the package in
/// the request, package id, kind, path, stale, deleted, dev, inode).
pub type SetArtifact = (usize, i64, i32, Vec<u8>, bool, bool, i64, i64);

/// An SBOM declaration of one of the packages asked for, as the workloads
/// running its image see it: (position, package id, image, reference,
/// chain).
pub type Declared = (usize, i64, String, String, String);

/// Candidates a selective page gathers, sorts and pages at most. Past it
/// the walk is cheaper per page than gathering again for each one: a
/// million-process answer of 1,000 pages would gather a million rows per
/// page. Counting up to it costs one index range of this length.
pub const SELECTIVE_MAX: usize = 5_000;

/// One process's evidence: its artifacts (sorted by package position,
/// kind and path), then its SBOM declarations.
pub fn process_evidence(
    process: i64,
    who: &Arc<v1::Match>,
    mut arts: Vec<&SetArtifact>,
    decls: Option<&Vec<Declared>>,
) -> Vec<Evidence> {
    let mut evidence = Vec::new();
    // With several sets in the window, the packages' order first.
    arts.sort_by(|a, b| (a.0, a.2, &a.3).cmp(&(b.0, b.2, &b.3)));
    for &(_, package_id, kind, ref path, stale, deleted, dev, inode) in arts {
        evidence.push(Evidence {
            process,
            package_id,
            holder: who.clone(),
            path: v1::MatchPath {
                path: path.clone(),
                evidence: evidence_name(kind).into(),
                stale,
                deleted,
                dev: dev as u64,
                inode: inode as u64,
            },
            sbom: None,
        });
    }
    for (_, package_id, image, reference, chain) in decls.into_iter().flatten() {
        evidence.push(Evidence {
            process,
            package_id: *package_id,
            holder: who.clone(),
            path: v1::MatchPath {
                path: format!("sbom {image} {reference}").into_bytes(),
                evidence: "declared".into(),
                ..Default::default()
            },
            sbom: Some((
                image.clone(),
                chain
                    .split('\n')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
            )),
        });
    }
    evidence
}

/// The evidence name of an artifact kind, as answers spell it.
pub fn evidence_name(kind: i32) -> &'static str {
    match v1::ArtifactKind::try_from(kind) {
        Ok(v1::ArtifactKind::Exe) => "exe",
        Ok(v1::ArtifactKind::Opened) => "opened",
        Ok(v1::ArtifactKind::Installed) => "installed",
        Ok(v1::ArtifactKind::Embedded) => "embedded",
        Ok(v1::ArtifactKind::Anonymous) => "anonymous",
        _ => "mapped",
    }
}

/// A running process a selective page considers: found by its set or its
/// workload, not by walking its host, and read with its side of a match.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub cursor: ProcessCursor,
    pub set: i64,
    pub workload: String,
    pub holder: Arc<v1::Match>,
}

/// The page of `candidates` after `after`, in cursor order (the walk's).
/// Every candidate holds one of the packages (its set has one of their
/// artifacts, or its workload's image declares one), so the page stops on
/// `limit.items` and on `limit.scan` alike, and says where to go on only
/// when candidates are left.
pub fn selective_page(
    mut candidates: Vec<Candidate>,
    by_set: &HashMap<i64, Vec<SetArtifact>>,
    declared: &HashMap<(i64, String), Vec<Declared>>,
    after: Option<&ProcessCursor>,
    limit: PageLimit,
) -> EvidencePage {
    candidates.sort_by(|a, b| a.cursor.cmp(&b.cursor));
    candidates.dedup_by(|a, b| a.cursor == b.cursor);
    let start = after.map_or(0, |a| candidates.partition_point(|c| &c.cursor <= a));
    let mut page = EvidencePage::default();
    // The last candidate looked at: the next page starts after it, so a
    // page always moves on (bounds of 0 count as 1).
    let mut last: Option<&ProcessCursor> = None;
    let (items, scan) = (limit.items.max(1), limit.scan.max(1));
    for (scanned, c) in candidates[start..].iter().enumerate() {
        if page.processes.len() >= items || scanned >= scan {
            page.next = last.cloned();
            break;
        }
        last = Some(&c.cursor);
        let arts: Vec<&SetArtifact> = by_set.get(&c.set).into_iter().flatten().collect();
        let decls = declared.get(&(c.cursor.host, c.workload.clone()));
        if arts.is_empty() && decls.is_none() {
            continue;
        }
        page.processes.push((
            c.cursor.clone(),
            process_evidence(c.cursor.id, &c.holder, arts, decls),
        ));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(hostname: &str, host: i64, pid: u32, id: i64, set: i64) -> Candidate {
        Candidate {
            cursor: ProcessCursor {
                hostname: hostname.into(),
                host,
                pid,
                id,
            },
            set,
            workload: String::new(),
            holder: Arc::new(v1::Match {
                host: hostname.into(),
                ..Default::default()
            }),
        }
    }

    /// Pages of any size and scan bound list every candidate once, in
    /// cursor order, and the last page says nothing is left; a page cut
    /// short by its scan bound moves on even when it listed nothing.
    #[test]
    fn selective_pages_list_each_candidate_once_in_cursor_order() {
        let art: SetArtifact = (
            0,
            7,
            v1::ArtifactKind::Mapped as i32,
            b"/lib/x".to_vec(),
            false,
            false,
            1,
            2,
        );
        let by_set = HashMap::from([(1, vec![art.clone()]), (2, vec![art])]);
        let declared = HashMap::new();
        let candidates = vec![
            cand("b", 2, 5, 50, 1),
            cand("a", 9, 7, 70, 2),
            cand("a", 9, 3, 30, 1),
            cand("a", 1, 9, 90, 1),
            cand("a", 9, 3, 30, 1),
            cand("c", 3, 1, 10, 3), // its set holds nothing asked for
        ];
        for (size, scan) in
            [1, 2, 3, 4, 5]
                .into_iter()
                .map(|n| (n, usize::MAX))
                .chain([(5, 1), (2, 2), (9, 0)])
        {
            let mut listed = Vec::new();
            let mut after = None;
            for _ in 0..20 {
                let page = selective_page(
                    candidates.clone(),
                    &by_set,
                    &declared,
                    after.as_ref(),
                    PageLimit { items: size, scan },
                );
                listed.extend(page.processes.iter().map(|(c, e)| {
                    assert_eq!(e[0].path.evidence, "mapped");
                    assert_eq!(e[0].holder.host, c.hostname);
                    (c.hostname.clone(), c.host, c.pid)
                }));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            assert_eq!(
                listed,
                [
                    ("a".to_string(), 1, 9),
                    ("a".to_string(), 9, 3),
                    ("a".to_string(), 9, 7),
                    ("b".to_string(), 2, 5)
                ],
                "page size {size}, scan {scan}"
            );
        }
    }
}
