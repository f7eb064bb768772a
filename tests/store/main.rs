//! One store test suite, two stores: every case runs against SQLite (a fresh file) and
//! against the machine's PostgreSQL (a fresh schema in `DATABASE_URL`, by default
//! postgres://postgres@127.0.0.1:5432/test).

mod cases;

use std::sync::Arc;

use wrapup::clock::ManualClock;
use wrapup::config::{StoreSettings, StoreUrl};
use wrapup::store::{self, Store};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn settings(url: StoreUrl, schema: &str) -> StoreSettings {
    StoreSettings {
        url,
        queue_capacity: 16_384,
        max_batch: 1024,
        pool_size: 16,
        read_connections: 4,
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(10),
        schema: schema.to_owned(),
    }
}

pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// The store's clock: real time, moved forward by the cases that wait for time.
    pub clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Fixture {
    pub async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Sqlite(dir.path().join("wrapup.db"));
        let clock = Arc::new(ManualClock::default());
        let store = store::open(&settings(url, "public"), clock.clone())
            .await
            .expect("sqlite opens");
        Fixture {
            store,
            clock,
            _dir: Some(dir),
            schema: None,
        }
    }

    pub async fn postgres() -> Fixture {
        let schema = format!("wrapup_test_{}", uuid::Uuid::new_v4().simple());
        let clock = Arc::new(ManualClock::default());
        let store = store::open(
            &settings(StoreUrl::Postgres(database_url()), &schema),
            clock.clone(),
        )
        .await
        .expect(
            "PostgreSQL at DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) answers",
        );
        Fixture {
            store,
            clock,
            _dir: None,
            schema: Some(schema),
        }
    }

    /// The SQLite database's file.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("wrapup.db"))
    }

    pub fn schema_name(&self) -> Option<String> {
        self.schema.clone()
    }

    /// Closes the store and drops a PostgreSQL test schema.
    pub async fn done(self) {
        self.store.close().await;
        if let Some(schema) = self.schema {
            let pool = sqlx::PgPool::connect(&database_url()).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let f = crate::Fixture::sqlite().await;
                    crate::cases::$case(&f.store, &f.clock).await;
                    f.done().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let f = crate::Fixture::postgres().await;
                    crate::cases::$case(&f.store, &f.clock).await;
                    f.done().await;
                }
            )*
        }
    };
}

both_stores!(
    an_end_races_fifty_times_and_ends_once,
    events_after_the_end_are_refused_and_nothing_is_stored,
    a_jti_is_accepted_once,
    an_end_schedules_one_job_per_action_once,
    jobs_move_through_retry_dead_and_replay,
    a_released_job_is_pending_again_with_its_attempt_taken_back,
    an_expired_lease_is_reclaimed_and_the_stale_worker_refused,
    concurrent_claimers_never_share_a_job,
    inactive_conversations_end_once_even_when_a_client_end_races,
    retention_purges_transcripts_then_logs,
    listing_pages_through_every_conversation_once,
    the_event_log_pages_in_order,
    expired_jtis_are_forgotten_and_live_ones_kept,
    pages_stop_at_their_byte_budget,
    unknown_destinations_are_left_then_orphaned_and_decided,
    lists_filter_by_agent_queue_anomaly_and_reason,
    a_summary_is_stored_once_per_id,
    an_actions_jobs_include_those_named_after_it,
    a_job_whose_attempts_are_lost_ten_times_in_a_row_is_dead,
    a_conversation_is_found_among_its_bots_and_active_ones_counted,
    traffic_buckets_add_up_across_instances_and_old_ones_are_purged,
    destination_rows_count_jobs_and_list_recent_attempts,
    a_retry_by_filter_takes_at_most_a_batch,
    one_claim_takes_each_destinations_room_and_no_more,
);

/// Upgrading a database from before the tag index: the migration derives every stored
/// conversation's tags in SQL, and they must be exactly the ones the server writes.
mod upgrade {
    use std::collections::BTreeSet;

    type Tags = BTreeSet<(String, String)>;

    /// Every row of the SQLite tag index: conversation, tag key, sort time, ended.
    async fn sqlite_tags(path: &std::path::Path) -> Tags {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT c.conversation_id, t.tag_key || ' ' || t.sort_at || ' ' || t.ended
                 FROM conversation_tags t JOIN conversations c ON c.id = t.conversation",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn sqlite_backfills_the_same_tags_the_server_writes() {
        let f = crate::Fixture::sqlite().await;
        crate::cases::fill_for_backfill(&f.store).await;
        let path = f.sqlite_path().unwrap();
        f.store.close().await;
        let written = sqlite_tags(&path).await;
        assert!(written.len() >= 12, "{written:?}");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP TABLE conversation_tags; DROP TABLE traffic; DROP TABLE pending_backfill;
                 DROP INDEX attempts_by_start; DROP TABLE summaries;
                 ALTER TABLE jobs DROP COLUMN lost_in_row; ALTER TABLE jobs DROP COLUMN action_name;
                 ALTER TABLE jobs DROP COLUMN event; ALTER TABLE jobs DROP COLUMN trigger_seq;
                 ALTER TABLE jobs DROP COLUMN repointed_from; PRAGMA user_version = 8;",
            )
            .unwrap();
        }
        let clock = std::sync::Arc::new(wrapup::clock::ManualClock::default());
        let store = wrapup::store::open(
            &crate::settings(wrapup::config::StoreUrl::Sqlite(path.clone()), "public"),
            clock,
        )
        .await
        .expect("the migration runs");
        store.close().await;
        assert_eq!(sqlite_tags(&path).await, written);
        f.done().await;
    }

    #[tokio::test]
    async fn postgres_backfills_the_same_tags_the_server_writes() {
        let f = crate::Fixture::postgres().await;
        crate::cases::fill_for_backfill(&f.store).await;
        let schema = f.schema_name().unwrap();
        let pool = sqlx::PgPool::connect(&crate::database_url()).await.unwrap();
        let read = |pool: sqlx::PgPool, schema: String| async move {
            let rows: Vec<(String, String)> = sqlx::query_as(&format!(
                "SELECT conversation_id, tag || ' ' || sort_at || ' ' || status
                 FROM {schema}.conversation_tags"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            rows.into_iter().collect::<Tags>()
        };
        let written = read(pool.clone(), schema.clone()).await;
        assert!(written.len() >= 12, "{written:?}");
        sqlx::raw_sql(&format!(
            "DROP TABLE {schema}.conversation_tags; DROP TABLE {schema}.traffic;
             DROP TABLE {schema}.pending_backfill;
             DROP INDEX {schema}.attempts_by_start; DROP TABLE {schema}.summaries;
             DELETE FROM {schema}.wrapup_schema WHERE version >= 4;"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let clock = std::sync::Arc::new(wrapup::clock::ManualClock::default());
        let store = wrapup::store::open(
            &crate::settings(
                wrapup::config::StoreUrl::Postgres(crate::database_url()),
                &schema,
            ),
            clock,
        )
        .await
        .expect("the migration runs");
        store.close().await;
        assert_eq!(read(pool.clone(), schema.clone()).await, written);
        pool.close().await;
        f.done().await;
    }
}

/// An unreadable conversation in the inactivity sweep, on each store (the state is
/// spoiled with SQL, as a disk or a hand edit would).
mod unreadable {
    #[tokio::test]
    async fn on_sqlite() {
        let f = crate::Fixture::sqlite().await;
        let path = f.sqlite_path().unwrap();
        crate::cases::an_unreadable_idle_conversation_does_not_stop_the_others_ending(
            &f.store,
            &f.clock,
            |c| async move {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                let n = conn
                    .execute(
                        "UPDATE conversations SET state = 'not json' WHERE conversation_id = ?1",
                        [c],
                    )
                    .unwrap();
                assert_eq!(n, 1);
            },
        )
        .await;
        f.done().await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let f = crate::Fixture::postgres().await;
        let schema = f.schema_name().unwrap();
        let pool = sqlx::PgPool::connect(&crate::database_url()).await.unwrap();
        crate::cases::an_unreadable_idle_conversation_does_not_stop_the_others_ending(
            &f.store,
            &f.clock,
            |c| {
                let pool = pool.clone();
                async move {
                    let done = sqlx::query(&format!(
                        "UPDATE {schema}.conversations SET state = 'not json' WHERE conversation_id = $1"
                    ))
                    .bind(c)
                    .execute(&pool)
                    .await
                    .unwrap();
                    assert_eq!(done.rows_affected(), 1);
                }
            },
        )
        .await;
        pool.close().await;
        f.done().await;
    }
}

/// Issue 25, item 16: a driver's error is an outage (503, retry) only when it is one; a
/// constraint, bad data or a statement that does not fit is a refusal (500) a client must
/// not retry forever, and an unreadable file is unreadable data.
mod errors {
    use wrapup::store::StoreError;

    #[tokio::test]
    async fn postgres_errors_are_told_apart() {
        let pool = sqlx::PgPool::connect(&crate::database_url()).await.unwrap();
        let failed = |e: sqlx::Error| matches!(StoreError::from(e), StoreError::Failed { .. });
        let down = |e: sqlx::Error| matches!(StoreError::from(e), StoreError::Unavailable { .. });
        // 22012 (data), 42P01 (no such table), 23505 (a unique constraint).
        assert!(failed(
            sqlx::query("SELECT 1/0").execute(&pool).await.unwrap_err()
        ));
        assert!(failed(
            sqlx::query("SELECT * FROM no_such_table_anywhere")
                .execute(&pool)
                .await
                .unwrap_err()
        ));
        let mut tx = pool.begin().await.unwrap();
        sqlx::raw_sql("CREATE TEMP TABLE once (x int PRIMARY KEY); INSERT INTO once VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO once VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(failed(dup));
        tx.rollback().await.unwrap();
        // 57014: a statement timeout; and a server that cannot be reached.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL statement_timeout = 20")
            .execute(&mut *tx)
            .await
            .unwrap();
        let slow = sqlx::query("SELECT pg_sleep(1)")
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert!(down(slow));
        tx.rollback().await.unwrap();
        // The connection and the pool (sqlx retries a refused connection for its
        // timeout, so the errors are made here).
        let unreachable = sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(down(sqlx::Error::PoolTimedOut));
        assert!(down(unreachable));
        pool.close().await;
    }

    #[test]
    fn sqlite_errors_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE once (x INTEGER PRIMARY KEY); INSERT INTO once VALUES (1);",
        )
        .unwrap();
        let dup = conn.execute("INSERT INTO once VALUES (1)", []).unwrap_err();
        assert!(matches!(StoreError::from(dup), StoreError::Failed { .. }));
        let wrong = conn
            .execute("INSERT INTO nowhere VALUES (1)", [])
            .unwrap_err();
        assert!(matches!(StoreError::from(wrong), StoreError::Failed { .. }));
        drop(conn);
        let read_only = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let refused = read_only
            .execute("INSERT INTO once VALUES (2)", [])
            .unwrap_err();
        assert!(matches!(
            StoreError::from(refused),
            StoreError::Unavailable { .. }
        ));
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let conn = rusqlite::Connection::open(&junk).unwrap();
        let unreadable = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_err();
        assert!(matches!(
            StoreError::from(unreadable),
            StoreError::Corrupt { .. }
        ));
    }
}
