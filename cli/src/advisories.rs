//! `patchgap advisories import`: reads a file, a directory tree or a zip,
//! and sends the advisory files to the collector in batches, which parses
//! and stores them. The client only reads files; it judges none.

use std::path::Path;

use patchgap_agent::parse::zip::ZipBytes;
use patchgap_proto::v1::{self, query_client::QueryClient};
use tonic::transport::Channel;

/// A request stays well under the collector's 16 MiB message limit.
const BATCH_BYTES: usize = 4 << 20;
/// One advisory file larger than this is refused here, with its name.
const MAX_FILE: u64 = 16 << 20;
/// A zip of advisories is read whole: the OSV exports are tens of MB.
const MAX_ZIP: u64 = 1 << 30;

fn is_advisory(name: &str) -> bool {
    [".json", ".yaml", ".yml"].iter().any(|e| name.ends_with(e))
}

/// Collects (name, bytes) of every advisory file under `path`, and the
/// files that could not be read.
fn collect(path: &Path, out: &mut Vec<v1::AdvisoryFile>, errors: &mut Vec<v1::ImportError>) {
    let err = |file: &Path, reason: String| v1::ImportError {
        file: file.display().to_string(),
        position: String::new(),
        reason,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return errors.push(err(path, e.to_string())),
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = match std::fs::read_dir(path) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(e) => return errors.push(err(path, e.to_string())),
        };
        entries.sort();
        for p in entries {
            // Symlinks are not followed: an import reads the tree it names.
            let is_link = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if is_link || name.starts_with('.') {
                continue;
            }
            if p.is_dir() || is_advisory(&name) {
                collect(&p, out, errors);
            }
        }
        return;
    }
    let name = path.display().to_string();
    if name.ends_with(".zip") {
        if meta.len() > MAX_ZIP {
            return errors.push(err(
                path,
                format!("{} bytes: larger than {MAX_ZIP}", meta.len()),
            ));
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return errors.push(err(path, e.to_string())),
        };
        let zip = match ZipBytes::open(&bytes) {
            Ok(z) => z,
            Err(e) => return errors.push(err(path, format!("not a readable zip: {e}"))),
        };
        for entry in zip.entries() {
            let inner = String::from_utf8_lossy(&entry.name).into_owned();
            if entry.is_dir() || !is_advisory(&inner) {
                continue;
            }
            match zip.read(entry, MAX_FILE as usize) {
                Ok(data) => out.push(v1::AdvisoryFile {
                    name: format!("{name}!/{inner}"),
                    data: data.into_owned(),
                }),
                Err(e) => errors.push(v1::ImportError {
                    file: format!("{name}!/{inner}"),
                    position: String::new(),
                    reason: e.to_string(),
                }),
            }
        }
        return;
    }
    if meta.len() > MAX_FILE {
        return errors.push(err(
            path,
            format!("{} bytes: larger than {MAX_FILE}", meta.len()),
        ));
    }
    match std::fs::read(path) {
        Ok(data) => out.push(v1::AdvisoryFile { name, data }),
        Err(e) => errors.push(err(path, e.to_string())),
    }
}

/// Imports everything under `path`; the counts and errors of every batch,
/// added up.
pub async fn import(
    client: &mut QueryClient<Channel>,
    path: &Path,
) -> anyhow::Result<v1::ImportAdvisoriesResponse> {
    let mut files = Vec::new();
    let mut total = v1::ImportAdvisoriesResponse::default();
    collect(path, &mut files, &mut total.errors);
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
                })
                .await?
                .into_inner();
            total.added += resp.added;
            total.updated += resp.updated;
            total.unchanged += resp.unchanged;
            total.older += resp.older;
            total.withdrawn += resp.withdrawn;
            total.errors.extend(resp.errors);
            size = 0;
        }
    }
    Ok(total)
}
