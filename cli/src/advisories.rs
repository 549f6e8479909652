//! `patchgap advisories import`: reads a file, a directory tree or a zip
//! with the collector's own OSV readers (same symlink, size and zip-bomb
//! rules), and sends the advisory files to the collector in batches, which
//! parses and stores them. The client only reads files; it judges none.

use std::path::Path;

use patchgap_collector::advisories::osv::{
    MAX_FILE_BYTES,
    import::{ImportError, is_advisory_name, tree_files, zip_files},
};
use patchgap_proto::v1;

use crate::Client;

/// A request stays well under the collector's 16 MiB message limit.
const BATCH_BYTES: usize = 4 << 20;
/// A zip of advisories is read whole: the OSV exports are tens of MB.
const MAX_ZIP: u64 = 1 << 30;

fn wire_error(prefix: &Path, e: ImportError) -> v1::ImportError {
    let (path, position, reason) = match e {
        ImportError::Parse { path, error } => (
            path,
            format!("{}:{}", error.line, error.column),
            error.reason,
        ),
        ImportError::Io { path, message } => (path, String::new(), message),
        ImportError::Skipped { path, reason } | ImportError::Archive { path, reason } => {
            (path, String::new(), reason)
        }
    };
    v1::ImportError {
        file: label(prefix, &path),
        position,
        reason,
    }
}

/// What errors and the collector call a file: the path given, and the
/// file's place below it (`tree/a.json`, `db.zip!/a.json`).
fn label(prefix: &Path, rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        prefix.display().to_string()
    } else if prefix.extension().is_some_and(|e| e == "zip") {
        format!("{}!/{}", prefix.display(), rel.display())
    } else {
        prefix.join(rel).display().to_string()
    }
}

/// Collects (name, bytes) of every advisory file at `path`, and the files
/// that could not be read.
fn collect(path: &Path) -> (Vec<v1::AdvisoryFile>, Vec<v1::ImportError>) {
    let io = |reason: String| {
        (
            Vec::new(),
            vec![v1::ImportError {
                file: path.display().to_string(),
                position: String::new(),
                reason,
            }],
        )
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return io(e.to_string()),
    };
    let (files, errors) = if meta.is_dir() {
        tree_files(path)
    } else if path.extension().is_some_and(|e| e == "zip") {
        if meta.len() > MAX_ZIP {
            return io(format!("{} bytes: larger than {MAX_ZIP}", meta.len()));
        }
        match std::fs::read(path) {
            Ok(bytes) => zip_files(&bytes),
            Err(e) => return io(e.to_string()),
        }
    } else {
        if !is_advisory_name(&path.to_string_lossy()) {
            return io(
                "not an advisory file: the name must end in .json, .yaml, .yml or .zip".into(),
            );
        }
        if meta.len() > MAX_FILE_BYTES as u64 {
            return io(format!(
                "{} bytes: larger than {MAX_FILE_BYTES}",
                meta.len()
            ));
        }
        return match std::fs::read(path) {
            Ok(data) => (
                vec![v1::AdvisoryFile {
                    name: path.display().to_string(),
                    data,
                }],
                Vec::new(),
            ),
            Err(e) => io(e.to_string()),
        };
    };
    (
        files
            .into_iter()
            .map(|(rel, data)| v1::AdvisoryFile {
                name: label(path, &rel),
                data,
            })
            .collect(),
        errors.into_iter().map(|e| wire_error(path, e)).collect(),
    )
}

/// Imports everything under `path`; the counts and errors of every batch,
/// added up.
pub async fn import(
    client: &mut Client,
    path: &Path,
    source: &str,
    replace: bool,
) -> anyhow::Result<v1::ImportAdvisoriesResponse> {
    let started = std::time::Instant::now();
    let (files, errors) = collect(path);
    let mut total = v1::ImportAdvisoriesResponse {
        errors,
        ..Default::default()
    };
    if files.is_empty() && total.errors.is_empty() {
        anyhow::bail!(
            "no advisory files (*.json, *.yaml, *.yml, *.zip) under {}",
            path.display()
        );
    }
    let mut batch: Vec<v1::AdvisoryFile> = Vec::new();
    let mut size = 0;
    let mut files = files.into_iter().peekable();
    while let Some(f) = files.next() {
        size += f.data.len() + f.name.len();
        batch.push(f);
        let full = files
            .peek()
            .is_some_and(|n| size + n.data.len() > BATCH_BYTES);
        if full || files.peek().is_none() {
            let resp = client
                .import_advisories(v1::ImportAdvisoriesRequest {
                    files: std::mem::take(&mut batch),
                    source: source.to_string(),
                    replace,
                })
                .await?
                .into_inner();
            total.added += resp.added;
            total.updated += resp.updated;
            total.unchanged += resp.unchanged;
            total.older += resp.older;
            total.withdrawn += resp.withdrawn;
            total.refused += resp.refused;
            total.matches += resp.matches;
            total.errors.extend(resp.errors);
            size = 0;
        }
    }
    // From reading the first file to the last batch's findings being
    // complete: what a responder waits for.
    total.time_to_scope_ms = started.elapsed().as_millis() as i64;
    Ok(total)
}
