//! `wrapup backup`: a consistent copy of the embedded store while the server runs.
//!
//! SQLite's online backup API copies every page in one step under one read transaction:
//! in WAL mode that reader does not block the server's writer, and the copy is the
//! database as of one commit (a multi-step backup would restart whenever the server
//! commits, and under steady ingest might never finish). The copy is then opened and
//! checked (`PRAGMA integrity_check`) and its rows counted, so a backup that reports
//! success is one that opens.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::store::StoreError;

/// What a backup wrote, as `wrapup backup` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub to: String,
    pub bytes: u64,
    pub schema_version: u32,
    pub conversations: u64,
    pub ended: u64,
    pub jobs: u64,
    pub integrity: String,
}

/// Copies the database at `from` to `to` (a new file, created 0600; an existing file is
/// refused rather than overwritten) and checks the copy.
pub fn backup(from: &Path, to: &Path) -> Result<BackupReport, StoreError> {
    if !from.exists() {
        return Err(StoreError::down(format!(
            "{} does not exist",
            from.display()
        )));
    }
    super::schema::create_new_private(to)?;
    let result = copy_and_check(from, to);
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

fn copy_and_check(from: &Path, to: &Path) -> Result<BackupReport, StoreError> {
    let source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(Duration::from_secs(10))?;
    let mut copy = Connection::open(to)?;
    {
        use rusqlite::backup::StepResult;
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // -1: every page in one step, so the copy is one snapshot. Busy or locked (a
        // checkpoint holding a lock): try again, for at most 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err(StoreError::down(
                        "the database stayed locked for 10 s; try again",
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    drop(source);
    // The copy is a plain file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    let integrity: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt {
            what: format!("the copy failed its integrity check: {integrity}"),
            source: None,
        });
    }
    let count = |sql: &str| copy.query_row(sql, [], |r| r.get::<_, i64>(0));
    let report = BackupReport {
        to: to.display().to_string(),
        bytes: 0,
        schema_version: copy.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        conversations: count("SELECT count(*) FROM conversations")? as u64,
        ended: count("SELECT count(*) FROM conversations WHERE status = 'ended'")? as u64,
        jobs: count("SELECT count(*) FROM jobs")? as u64,
        integrity,
    };
    drop(copy);
    let bytes = std::fs::metadata(to)
        .map_err(|e| StoreError::unavailable(format!("reading {}", to.display()), e))?
        .len();
    Ok(BackupReport { bytes, ..report })
}
