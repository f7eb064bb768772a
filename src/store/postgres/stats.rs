//! What the console reads beside the records: a conversation id across bots, the
//! destinations' counts and recent attempts, and the traffic buckets.

use sqlx::postgres::PgPool;

use crate::domain::Timestamp;
use crate::store::{
    DestinationRows, FoundConversation, JobState, RecentAttempt, StoreError, TrafficBucket,
    parse_status,
};

pub(super) async fn find_conversation(
    pool: &PgPool,
    bots: &[String],
    conversation_id: &str,
) -> Result<Vec<FoundConversation>, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT bot_id, status, sort_at FROM conversations
         WHERE bot_id = ANY($1) AND conversation_id = $2 ORDER BY sort_at DESC",
    )
    .bind(bots)
    .bind(conversation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(bot_id, status, sort_at)| {
            Ok(FoundConversation {
                bot_id,
                conversation_id: conversation_id.to_owned(),
                status: parse_status(&status)?,
                sort_at: Timestamp::from_millis(sort_at),
            })
        })
        .collect()
}

type AttemptRow = (
    String,
    String,
    i64,
    i64,
    String,
    Option<i32>,
    Option<String>,
);

pub(super) async fn destination_rows(
    pool: &PgPool,
    since: Timestamp,
    limit: usize,
) -> Result<DestinationRows, StoreError> {
    let counts: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT bot_id, action_name, state, count(*) FROM jobs GROUP BY bot_id, action_name, state",
    )
    .fetch_all(pool)
    .await?;
    let counts = counts
        .into_iter()
        .map(|(bot, action, state, n)| {
            Ok((bot, action, JobState::from_column(&state)?, n.max(0) as u64))
        })
        .collect::<Result<_, StoreError>>()?;
    let attempts = recent(
        pool,
        "SELECT j.bot_id, j.action_name, a.started_at, a.duration_ms, a.outcome, a.status_code, NULL::text
         FROM attempts a JOIN jobs j ON j.id = a.job_id
         WHERE a.started_at >= $1 ORDER BY a.started_at DESC LIMIT $2",
        (since, limit),
    )
    .await?;
    let failures = recent(
        pool,
        "SELECT j.bot_id, j.action_name, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error
         FROM attempts a JOIN jobs j ON j.id = a.job_id
         WHERE a.started_at >= $1 AND a.outcome <> 'succeeded' ORDER BY a.started_at DESC LIMIT $2",
        (since, 500),
    )
    .await?;
    Ok(DestinationRows {
        counts,
        attempts,
        failures,
    })
}

async fn recent(
    pool: &PgPool,
    sql: &str,
    (since, limit): (Timestamp, usize),
) -> Result<Vec<RecentAttempt>, StoreError> {
    let rows: Vec<AttemptRow> = sqlx::query_as(sql)
        .bind(since.millis())
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(bot_id, action, started_at, duration_ms, outcome, status_code, error)| {
                RecentAttempt {
                    bot_id,
                    action,
                    started_at: Timestamp::from_millis(started_at),
                    duration_ms: duration_ms.max(0) as u64,
                    succeeded: outcome == "succeeded",
                    status_code: status_code.and_then(|c| u16::try_from(c).ok()),
                    error,
                }
            },
        )
        .collect())
}

pub(super) async fn add_traffic(
    pool: &PgPool,
    buckets: &[TrafficBucket],
) -> Result<(), StoreError> {
    let at: Vec<i64> = buckets.iter().map(|b| b.at_ms).collect();
    let events: Vec<i64> = buckets.iter().map(|b| b.events as i64).collect();
    let ends: Vec<i64> = buckets.iter().map(|b| b.ends as i64).collect();
    let dups: Vec<i64> = buckets.iter().map(|b| b.duplicate_ends as i64).collect();
    sqlx::query(
        "INSERT INTO traffic (at_ms, events, ends, duplicate_ends)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
         ON CONFLICT (at_ms) DO UPDATE SET events = traffic.events + EXCLUDED.events,
             ends = traffic.ends + EXCLUDED.ends,
             duplicate_ends = traffic.duplicate_ends + EXCLUDED.duplicate_ends",
    )
    .bind(at)
    .bind(events)
    .bind(ends)
    .bind(dups)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn traffic(
    pool: &PgPool,
    since: Timestamp,
) -> Result<Vec<TrafficBucket>, StoreError> {
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT at_ms, events, ends, duplicate_ends FROM traffic WHERE at_ms >= $1 ORDER BY at_ms",
    )
    .bind(since.millis())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(at_ms, events, ends, dups)| TrafficBucket {
            at_ms,
            events: events.max(0) as u64,
            ends: ends.max(0) as u64,
            duplicate_ends: dups.max(0) as u64,
        })
        .collect())
}

pub(super) async fn purge_traffic(pool: &PgPool, before: Timestamp) -> Result<u64, StoreError> {
    Ok(sqlx::query("DELETE FROM traffic WHERE at_ms < $1")
        .bind(before.millis())
        .execute(pool)
        .await?
        .rows_affected())
}

pub(super) async fn count_active(pool: &PgPool) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations WHERE status = 'active'")
        .fetch_one(pool)
        .await?;
    Ok(n.max(0) as u64)
}
