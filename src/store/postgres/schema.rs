//! Connecting and bringing the schema up to date, under an advisory lock so instances
//! starting together apply each migration once. Versions are the files in
//! `migrations/`, recorded in `wrapup_schema`.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::StoreSettings;
use crate::store::StoreError;

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
];

/// PostgreSQL's errors by what they mean for a caller: the connection, the pool, the
/// server's resources or state (SQLSTATE classes 08, 53, 57, 58; a serialization failure or
/// deadlock, 40; a read-only standby after a failover, 25006) are an outage (503, retry);
/// anything else — a constraint (23), data (22), a statement wrong for the schema (42), a
/// row that does not decode — is a refusal retrying will not change (500, the cause logged).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                let class = code.get(..2).unwrap_or_default();
                matches!(class, "08" | "53" | "57" | "58" | "40") || code == "25006"
            }),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        };
        if transient {
            StoreError::unavailable("postgresql", e)
        } else {
            StoreError::failed("postgresql", e)
        }
    }
}

pub(super) async fn connect(url: &str, settings: &StoreSettings) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| StoreError::unavailable("invalid PostgreSQL URL", e))?;
    let options = options.options([
        (
            "statement_timeout",
            settings.statement_timeout.as_millis().to_string(),
        ),
        ("search_path", settings.schema.clone()),
    ]);
    // One connection first, so a server that cannot be reached is reported with its
    // address and the real cause (the pool would only say it timed out).
    let at = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(
        settings.connect_timeout,
        sqlx::Connection::connect_with(&options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let conn: sqlx::PgConnection = conn;
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(e)) => {
            return Err(StoreError::unavailable(
                format!("cannot connect to PostgreSQL at {at}{}", tls_hint(&e)),
                e,
            ));
        }
        Err(_) => {
            return Err(StoreError::down(format!(
                "cannot connect to PostgreSQL at {at}: no answer within {:?} (store.connect_timeout)",
                settings.connect_timeout
            )));
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .acquire_timeout(settings.connect_timeout)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::unavailable("cannot connect to PostgreSQL", e))?;
    migrate(&pool, &settings.schema).await?;
    Ok(pool)
}

/// What to do about a certificate libpq takes and rustls refuses: a self-signed
/// certificate that is its own CA (`CA:TRUE`) used as the server's (docs/tls.md).
fn tls_hint(e: &sqlx::Error) -> &'static str {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("CaUsedAsEndEntity") {
            return " (the server's certificate is a CA certificate used as its own: libpq takes that, wrapup does not; make a CA and a server certificate signed by it, and name the CA in sslrootcert — docs/tls.md)";
        }
        cause = c.source();
    }
    ""
}

async fn migrate(pool: &PgPool, schema: &str) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    // One instance migrates at a time; the others wait here and then find nothing to do.
    sqlx::query("SELECT pg_advisory_lock(hashtext('wrapup-migrate'))")
        .execute(&mut *conn)
        .await?;
    let result = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS wrapup_schema (version INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM wrapup_schema")
            .fetch_one(&mut *conn)
            .await?;
        let version = version.unwrap_or(0) as usize;
        if version > MIGRATIONS.len() {
            // A newer instance migrated (a rolling upgrade): migrations only add, so this
            // one keeps working with what it knows.
            tracing::warn!(
                schema_version = version,
                known = MIGRATIONS.len(),
                "the schema is newer than this wrapup; fine during a rolling upgrade, upgrade this instance next"
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO wrapup_schema (version) VALUES ($1)")
                .bind((i + 1) as i32)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok::<usize, sqlx::Error>(version)
    }
    .await;
    // Still under the lock: one instance backfills, the others then find nothing to do.
    let backfilled = match &result {
        Ok(_) => backfill_tags(&mut conn).await,
        Err(_) => Ok(()),
    };
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('wrapup-migrate'))")
        .execute(&mut *conn)
        .await;
    // A schema newer than this build is accepted (with the warning above): during a
    // rolling upgrade the older instances run on the schema the first new one migrated.
    // Migrations are written to allow it: they add tables, nullable or defaulted columns
    // and indexes, and never drop or rename what an earlier release reads or writes.
    result.map_err(|e| StoreError::unavailable("migrating the schema failed", e))?;
    backfilled?;
    Ok(())
}

/// Conversations stored before the tag index get their tags, derived by the domain from
/// their state, 1,000 per transaction; a restart midway starts over (writing a
/// conversation's tags replaces them).
async fn backfill_tags(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pending_backfill WHERE name = 'conversation_tags'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if pending == 0 {
        return Ok(());
    }
    let mut after = (String::new(), String::new());
    let mut done = 0u64;
    loop {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT bot_id, conversation_id, state FROM conversations
             WHERE (bot_id, conversation_id) > ($1, $2) ORDER BY bot_id, conversation_id LIMIT 1000",
        )
        .bind(&after.0)
        .bind(&after.1)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            sqlx::query("DELETE FROM pending_backfill WHERE name = 'conversation_tags'")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(conversations = done, "conversation tags backfilled");
            return Ok(());
        };
        after = (last.0.clone(), last.1.clone());
        for (bot_id, conversation_id, state) in &rows {
            if let Some(next) = crate::store::backfill_rows(bot_id, conversation_id, state) {
                let target = crate::domain::ingest::Target {
                    bot_id,
                    conversation_id,
                };
                super::conversations::replace_tags(&mut tx, target, None, &next).await?;
            }
        }
        tx.commit().await?;
        done += rows.len() as u64;
        crate::store::backfill_progress(done, rows.len());
    }
}
