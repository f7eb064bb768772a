//! Opening the database file and bringing its schema up to date.
//!
//! Schema versions are the files in `migrations/`, applied in order, each in its own
//! transaction, and recorded in `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreError;

/// Schema versions, applied in order; version N is `migrations/000N.sql`.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001.sql"),
    include_str!("migrations/0002.sql"),
    include_str!("migrations/0003.sql"),
    include_str!("migrations/0004.sql"),
    include_str!("migrations/0005.sql"),
    include_str!("migrations/0006.sql"),
    include_str!("migrations/0007.sql"),
    include_str!("migrations/0008.sql"),
    include_str!("migrations/0009.sql"),
    include_str!("migrations/0010.sql"),
    include_str!("migrations/0011.sql"),
    include_str!("migrations/0012.sql"),
];

/// SQLite's errors by what they mean for a caller: the disk, the file or a lock is an
/// outage (503, retry); a corrupt file is unreadable data; anything else — a constraint, a
/// type, a statement that does not fit the schema — is a refusal retrying will not change
/// (500, the cause logged).
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | ReadOnly
                | SystemIoFailure
                | CannotOpen
                | OutOfMemory
                | FileLockingProtocolFailed
                | PermissionDenied
                | OperationInterrupted
                | NoLargeFileSupport => StoreError::unavailable("sqlite", e),
                DatabaseCorrupt | NotADatabase => StoreError::corrupt("sqlite", e),
                _ => StoreError::failed("sqlite", e),
            },
            _ => StoreError::failed("sqlite", e),
        }
    }
}

pub(super) fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::unavailable(format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Creates `path` as a new file readable by its owner only (0600), for a backup's copy (it
/// holds transcripts); an existing file is refused, never overwritten. (The database file
/// itself is created by `create_private`, which keeps an existing one.)
pub(super) fn create_new_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| StoreError::unavailable(format!("cannot create {}", path.display()), e))
}

/// Creates the database file readable by its owner only (0600) when it does not exist: it
/// holds transcripts. SQLite gives its `-wal` and `-shm` files the database file's
/// permissions. An existing file is left as it is, with the permissions it has.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable(
            format!("cannot create {}", path.display()),
            e,
        )),
    }
}

/// Opens the writer's connection: WAL, `synchronous=FULL` (a commit is fsync'd before it
/// returns), a large page cache, and the schema migrated.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let mut conn = open_connection(path, OpenFlags::default())?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::down(format!(
            "cannot switch {} to WAL (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // 64 MiB of page cache for the writer: the B-tree pages inserts touch stay in memory.
    conn.pragma_update(None, "cache_size", -65536)?;
    // Every statement the writer runs stays prepared (the default keeps 16).
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn)?;
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::down(format!(
            "the database is at schema version {version}, newer than this wrapup knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::unavailable(format!("migrating to schema {}", i + 1), e))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    backfill_tags(conn)
}

/// Conversations stored before the tag index get their tags, derived by the domain from
/// their state, 1,000 per transaction; a restart midway starts over (writing a
/// conversation's tags replaces them).
fn backfill_tags(conn: &mut Connection) -> Result<(), StoreError> {
    let pending: i64 = conn.query_row(
        "SELECT count(*) FROM pending_backfill WHERE name = 'conversation_tags'",
        [],
        |r| r.get(0),
    )?;
    if pending == 0 {
        return Ok(());
    }
    let (mut after, mut done) = (0i64, 0u64);
    loop {
        let tx = conn.transaction()?;
        let rows: Vec<(i64, String, String, String)> = tx
            .prepare(
                "SELECT id, bot_id, conversation_id, state FROM conversations
                 WHERE id > ?1 ORDER BY id LIMIT 1000",
            )?
            .query_map([after], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last() else {
            tx.execute(
                "DELETE FROM pending_backfill WHERE name = 'conversation_tags'",
                [],
            )?;
            tx.commit()?;
            tracing::info!(conversations = done, "conversation tags backfilled");
            return Ok(());
        };
        after = last.0;
        for (id, bot_id, conversation_id, state) in &rows {
            if let Some(next) = crate::store::backfill_rows(bot_id, conversation_id, state) {
                let target = crate::domain::ingest::Target {
                    bot_id,
                    conversation_id,
                };
                super::conversations::replace_tags(&tx, *id, target, None, &next)?;
            }
        }
        tx.commit()?;
        done += rows.len() as u64;
        crate::store::backfill_progress(done, rows.len());
    }
}
