//! The store file itself: how it is created, recognised and checked.
//!
//! - A new store is created and migrated under a temporary name, then
//!   linked into place, so no crash leaves a zero-length or half-made file
//!   under the store's name, and two processes creating it at once end with
//!   one store.
//! - An existing file is recognised before it is used: a zero-length file,
//!   a file that is not SQLite, or another application's SQLite database
//!   is refused with [`StoreError::Foreign`], never reinitialised.
//! - At every start the file passes SQLite's `quick_check` before the
//!   collector serves, or is refused with [`StoreError::Corrupt`] naming it.
//! - [`check`] is `patchgap-collector check`: the full `integrity_check`,
//!   `foreign_key_check`, the schema version and the files' modes, with
//!   the bundled SQLite (Debian 12's sqlite3 3.40 reports false "NULL
//!   value" errors on this schema's WITHOUT ROWID tables).

use std::{
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags};

use super::schema::{KNOWN_VERSION, migrate};
use crate::store::{Result, StoreError};

/// The store's file name in the data directory.
pub const FILE: &str = "patchgap.db";

/// `PRAGMA application_id` of a patchgap store: "pgap".
pub const APPLICATION_ID: i32 = 0x7067_6170;

/// Tables every patchgap store has had since schema 1.
const OUR_TABLES: &[&str] = &["host", "process", "package"];

fn foreign(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Foreign {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A SQLite error that means the file is damaged, as [`StoreError::Corrupt`];
/// any other as it is.
pub(super) fn corrupt_or(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                problems: e.to_string(),
            }
        }
        _ => e.into(),
    }
}

/// Creates the store in `dir` unless a file of that name exists (then
/// [`identify`] decides what it is).
pub(super) fn create_if_missing(dir: &Path) -> Result<()> {
    let path = dir.join(FILE);
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Unique among this process's threads too: two opens can read the same clock.
    static OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{FILE}.new-{}-{nanos}-{n}", std::process::id()));
    let made = (|| -> Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|source| StoreError::DataDir {
                path: tmp.clone(),
                source,
            })?;
        let mut conn = Connection::open(&tmp)?;
        // Only before the first table: retention can then hand freed
        // pages back to the file system (see `retention`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut conn)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        // The last connection's close folds the WAL into the file.
        conn.close().map_err(|(_, e)| e)?;
        // Into place, unless another process put its own there first.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(StoreError::DataDir {
                path: path.clone(),
                source,
            }),
        }
    })();
    for side in ["", "-wal", "-shm", "-journal"] {
        let mut name = tmp.clone().into_os_string();
        name.push(side);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    made
}

/// Refuses a file that is not a patchgap store: checked on the file's
/// own header first (SQLite would take a zero-length file for a new
/// database), then on its tables.
pub(super) fn identify(path: &Path) -> Result<()> {
    let meta = path.metadata().map_err(|source| StoreError::DataDir {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(foreign(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(foreign(
            path,
            "a zero-length file (a store is created only where no file exists)",
        ));
    }
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|source| StoreError::DataDir {
            path: path.to_path_buf(),
            source,
        })?;
    if !header.starts_with(b"SQLite format 3\0") {
        let start: String = header
            .iter()
            .take(16)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        return Err(foreign(
            path,
            format!("not an SQLite database (it starts with \"{start}\")"),
        ));
    }
    if header.len() < 100 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            problems: format!(
                "truncated to {} bytes, inside the SQLite header",
                meta.len()
            ),
        });
    }
    let app = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if app != 0 && app != APPLICATION_ID {
        return Err(foreign(
            path,
            format!("another application's SQLite database (application_id {app:#x})"),
        ));
    }
    Ok(())
}

/// The tables of an open database, and whether it holds a patchgap
/// schema: an empty database is new (ours to migrate), one with tables but
/// not ours is another application's.
pub(super) fn identify_tables(path: &Path, conn: &Connection) -> Result<()> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| corrupt_or(path, e))?;
    if tables.is_empty() || OUR_TABLES.iter().all(|t| tables.iter().any(|x| x == t)) {
        return Ok(());
    }
    let mut named = tables
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 5 {
        named.push_str(", ...");
    }
    Err(foreign(
        path,
        format!("an SQLite database with other tables ({named})"),
    ))
}

/// SQLite's quick check (every page and index entry, not their contents
/// against each other), at start.
pub(super) fn quick_check(path: &Path, conn: &Connection) -> Result<()> {
    let problems = check_rows(conn, "PRAGMA quick_check(20)").map_err(|e| corrupt_or(path, e))?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        problems: problems.join("; "),
    })
}

/// The rows of an integrity pragma that are not "ok".
fn check_rows(conn: &Connection, pragma: &str) -> rusqlite::Result<Vec<String>> {
    let rows: Vec<String> = conn
        .prepare(pragma)?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}

/// What `patchgap-collector check` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckReport {
    pub path: PathBuf,
    /// `PRAGMA user_version`, when the file could be read.
    pub schema_version: Option<i64>,
    /// The schema this collector writes.
    pub known_version: i64,
    /// What is wrong: the store should not be served as it is.
    pub problems: Vec<String>,
    /// Worth knowing, not wrong.
    pub notes: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `data_dir` without changing it: the directory's
/// and files' modes, what the file is, its schema version, SQLite's full
/// `integrity_check` and `foreign_key_check`. Safe beside a running
/// collector (reads only).
pub fn check(data_dir: &Path) -> CheckReport {
    let path = data_dir.join(FILE);
    let mut report = CheckReport {
        path: path.clone(),
        known_version: KNOWN_VERSION,
        ..Default::default()
    };
    match data_dir.metadata() {
        Ok(m) if m.mode() & 0o077 != 0 => report.problems.push(format!(
            "the data directory {} is mode {:o}, open to other users (the collector makes it 0700)",
            data_dir.display(),
            m.mode() & 0o7777
        )),
        Ok(_) => {}
        Err(e) => {
            report.problems.push(format!(
                "cannot read the data directory {}: {e}",
                data_dir.display()
            ));
            return report;
        }
    }
    if let Err(e) = identify(&path) {
        report.problems.push(match e {
            StoreError::DataDir { source, .. } => {
                format!("cannot read {}: {source}", path.display())
            }
            e => e.to_string(),
        });
        return report;
    }
    for side in ["", "-wal", "-shm"] {
        let mut name = path.clone().into_os_string();
        name.push(side);
        let p = PathBuf::from(name);
        if let Ok(m) = p.metadata()
            && m.mode() & 0o077 != 0
        {
            report.problems.push(format!(
                "{} is mode {:o}, readable by other users (the collector makes it 0600)",
                p.display(),
                m.mode() & 0o7777
            ));
        }
    }
    // Read-write without create, so SQLite may make the WAL index a
    // reader needs; query_only keeps every statement a read.
    let conn = match Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.pragma_update(None, "query_only", true)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(format!("SQLite cannot open it: {e}"));
            return report;
        }
    };
    match identify_tables(&path, &conn) {
        Ok(()) => {}
        // Damage: integrity_check below says where.
        Err(StoreError::Corrupt { problems, .. }) => report
            .problems
            .push(format!("reading its tables: {problems}")),
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    }
    match conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)) {
        Ok(v) => {
            report.schema_version = Some(v);
            if v > KNOWN_VERSION {
                report.problems.push(format!(
                    "schema version {v} is newer than this collector knows ({KNOWN_VERSION}): check it with a newer collector"
                ));
            } else if v < KNOWN_VERSION {
                report.notes.push(format!(
                    "schema version {v}: the collector migrates it to {KNOWN_VERSION} at its next start"
                ));
            }
        }
        Err(e) => report
            .problems
            .push(format!("cannot read the schema version: {e}")),
    }
    match check_rows(&conn, "PRAGMA integrity_check(100)") {
        Ok(rows) => report
            .problems
            .extend(rows.into_iter().map(|r| format!("integrity_check: {r}"))),
        Err(e) => report.problems.push(format!("integrity_check: {e}")),
    }
    let fk: rusqlite::Result<Vec<String>> =
        conn.prepare("PRAGMA foreign_key_check").and_then(|mut s| {
            s.query_map([], |r| {
                Ok(format!(
                    "foreign_key_check: row {} of {} points at a missing row of {}",
                    r.get::<_, Option<i64>>(1)?
                        .map_or_else(|| "?".to_string(), |x| x.to_string()),
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(2)?
                ))
            })?
            .take(100)
            .collect()
        });
    match fk {
        Ok(rows) => report.problems.extend(rows),
        Err(e) => report.problems.push(format!("foreign_key_check: {e}")),
    }
    report
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::{Store, sqlite::SqliteStore};

    fn mode(p: &Path) -> u32 {
        p.metadata().unwrap().permissions().mode() & 0o7777
    }

    /// A store with some pages: hosts and processes from a Hello and a
    /// snapshot, so damage lands inside tables.
    fn filled(dir: &Path) {
        use patchgap_proto::v1;
        let store = SqliteStore::open(dir).unwrap();
        let hello = v1::Hello {
            host: Some(v1::HostIdentity {
                host_id: "m1".into(),
                hostname: "h1".into(),
                ..Default::default()
            }),
            session_id: "s".into(),
            ..Default::default()
        };
        let session = store.hello(&hello, 1).unwrap();
        let processes = (0..2000)
            .map(|i| v1::Process {
                key: Some(v1::ProcessKey {
                    pid: i,
                    start_ticks: 1,
                }),
                cmdline: format!("/usr/bin/worker --id {i} {}", "x".repeat(200)),
                ..Default::default()
            })
            .collect();
        let msg = v1::AgentMessage {
            seq: 1,
            body: Some(v1::agent_message::Body::Snapshot(v1::Snapshot {
                snapshot_id: "snap".into(),
                processes,
                last: true,
                ..Default::default()
            })),
        };
        store.apply(&session, &msg, 2).unwrap();
    }

    /// A clean stop folds the WAL into the file while the store is still
    /// open (readers pooled): the file alone is then the whole store.
    #[test]
    fn flush_leaves_the_whole_store_in_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        filled(&dir);
        let store = SqliteStore::open(&dir).unwrap();
        let before = store.storage_use().unwrap().used_bytes;
        store.set_retention_horizon(1, 2).unwrap();
        // A read leaves a connection in the pool, as in a collector.
        assert!(store.retention_horizon().unwrap().is_some());
        let wal = || std::fs::metadata(dir.join("patchgap.db-wal")).map_or(0, |m| m.len());
        assert!(wal() > 0, "the write went to the WAL");
        store.flush().unwrap();
        assert_eq!(wal(), 0);
        assert!(std::fs::metadata(dir.join(FILE)).unwrap().len() >= before);
        assert_eq!(store.retention_horizon().unwrap(), Some(1));
    }

    #[test]
    fn a_new_store_is_private_and_marked_as_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let store = SqliteStore::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        let app: i32 = store
            .read()
            .unwrap()
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
        // Nothing is left of the temporary name.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("patchgap.db")),
            "{names:?}"
        );
        drop(store);
        let report = check(&dir);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.schema_version, Some(KNOWN_VERSION));
    }

    /// Zero-length, text and another application's databases are refused
    /// and left exactly as they were.
    #[test]
    fn foreign_files_are_refused_and_left_alone() {
        type Make = Box<dyn Fn(&Path)>;
        let cases: Vec<(&str, Make, &str)> = vec![
            (
                "zero-length",
                Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
                "zero-length",
            ),
            (
                "text",
                Box::new(|p: &Path| std::fs::write(p, b"host=db\npassword=x\n").unwrap()),
                "not an SQLite database (it starts with \"host=db\\npassword\")",
            ),
            (
                "firefox",
                Box::new(|p: &Path| {
                    let c = Connection::open(p).unwrap();
                    c.execute_batch(
                        "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT);
                         INSERT INTO moz_places (url) VALUES ('https://example.org');",
                    )
                    .unwrap();
                }),
                "other tables (moz_places)",
            ),
            (
                "application id",
                Box::new(|p: &Path| {
                    let c = Connection::open(p).unwrap();
                    c.pragma_update(None, "application_id", 0x0f05_5112)
                        .unwrap();
                    c.execute_batch("CREATE TABLE host (x)").unwrap();
                }),
                "application_id 0xf055112",
            ),
        ];
        for (what, make, says) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join(FILE);
            make(&path);
            let before = std::fs::read(&path).unwrap();
            let err = SqliteStore::open(tmp.path())
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"));
            let msg = err.to_string();
            assert!(
                matches!(err, StoreError::Foreign { .. }) && msg.contains(says),
                "{what}: {msg}"
            );
            assert!(
                msg.contains(&path.display().to_string()),
                "{what}: names the file: {msg}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                before,
                "{what}: the file was changed"
            );
            let report = check(tmp.path());
            assert!(!report.ok(), "{what}: check passed");
            assert!(report.problems[0].contains(says), "{what}: {report:?}");
        }
    }

    /// A truncated file and a page overwritten with garbage fail the
    /// start-up check, naming the file; `check` names the problems.
    #[test]
    fn corrupt_stores_are_refused_at_open() {
        // Truncated: the second half of the file is gone.
        let tmp = tempfile::tempdir().unwrap();
        filled(tmp.path());
        let path = tmp.path().join(FILE);
        let len = path.metadata().unwrap().len();
        assert!(len > 64 << 10, "a store of {len} bytes");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let err = SqliteStore::open(tmp.path())
            .err()
            .expect("a truncated store opened");
        assert!(
            matches!(err, StoreError::Corrupt { .. })
                && err.to_string().contains(&path.display().to_string()),
            "{}",
            err.chain()
        );
        let report = check(tmp.path());
        assert!(!report.ok());
        assert!(
            report.problems.iter().any(|p| p.contains("malformed")),
            "{report:?}"
        );

        // Garbage over pages in the middle.
        let tmp = tempfile::tempdir().unwrap();
        filled(tmp.path());
        let path = tmp.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for (i, b) in bytes[mid..mid + 16384].iter_mut().enumerate() {
            *b = (i * 7 + 13) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let err = SqliteStore::open(tmp.path())
            .err()
            .expect("a corrupt store opened");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{}", err.chain());
        assert!(!check(tmp.path()).ok());

        // Inside the header.
        std::fs::write(&path, &bytes[..50]).unwrap();
        let err = SqliteStore::open(tmp.path()).err().expect("opened");
        assert!(err.to_string().contains("truncated to 50 bytes"), "{err}");
    }

    /// `check` names modes open to other users.
    #[test]
    fn check_names_open_modes() {
        let tmp = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(tmp.path()).unwrap());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            tmp.path().join(FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let report = check(tmp.path());
        assert_eq!(report.problems.len(), 2, "{report:?}");
        assert!(report.problems[0].contains("mode 755"));
        assert!(report.problems[1].contains("mode 644"));
        // The collector makes them private again.
        drop(SqliteStore::open(tmp.path()).unwrap());
        assert!(check(tmp.path()).ok());
    }
}
