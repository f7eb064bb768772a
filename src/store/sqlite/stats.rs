//! What the console reads beside the records: a conversation id across bots, the
//! destinations' counts and recent attempts, and the traffic buckets.

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::Timestamp;
use crate::store::{
    DestinationRows, FoundConversation, JobState, RecentAttempt, StoreError, TrafficBucket,
    parse_status,
};

pub(super) fn find_conversation(
    conn: &Connection,
    bots: &[String],
    conversation_id: &str,
) -> Result<Vec<FoundConversation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, sort_at FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
    )?;
    let mut found = Vec::new();
    for bot_id in bots {
        let row: Option<(String, i64)> = stmt
            .query_row(params![bot_id, conversation_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((status, sort_at)) = row {
            found.push(FoundConversation {
                bot_id: bot_id.clone(),
                conversation_id: conversation_id.to_owned(),
                status: parse_status(&status)?,
                sort_at: Timestamp::from_millis(sort_at),
            });
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.sort_at));
    Ok(found)
}

pub(super) fn destination_rows(
    conn: &Connection,
    since: Timestamp,
    limit: usize,
) -> Result<DestinationRows, StoreError> {
    let counts = conn
        .prepare_cached(
            "SELECT bot_id, action_name, state, count(*) FROM jobs GROUP BY bot_id, action_name, state",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let counts = counts
        .into_iter()
        .map(|(bot, action, state, n)| {
            Ok((bot, action, JobState::from_column(&state)?, n.max(0) as u64))
        })
        .collect::<Result<_, StoreError>>()?;
    let read = |sql: &str, limit: usize| -> Result<Vec<RecentAttempt>, StoreError> {
        Ok(conn
            .prepare_cached(sql)?
            .query_map(params![since.millis(), limit as i64], |r| {
                Ok(RecentAttempt {
                    bot_id: r.get(0)?,
                    action: r.get(1)?,
                    started_at: Timestamp::from_millis(r.get(2)?),
                    duration_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    succeeded: r.get::<_, String>(4)? == "succeeded",
                    status_code: r
                        .get::<_, Option<i64>>(5)?
                        .and_then(|c| u16::try_from(c).ok()),
                    error: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    };
    let attempts = read(
        "SELECT j.bot_id, j.action_name, a.started_at, a.duration_ms, a.outcome, a.status_code, NULL
         FROM attempts a INDEXED BY attempts_by_start JOIN jobs j ON j.id = a.job_id
         WHERE a.started_at >= ?1 ORDER BY a.started_at DESC LIMIT ?2",
        limit,
    )?;
    let failures = read(
        "SELECT j.bot_id, j.action_name, a.started_at, a.duration_ms, a.outcome, a.status_code, a.error
         FROM attempts a INDEXED BY attempts_by_start JOIN jobs j ON j.id = a.job_id
         WHERE a.started_at >= ?1 AND a.outcome <> 'succeeded' ORDER BY a.started_at DESC LIMIT ?2",
        500,
    )?;
    Ok(DestinationRows {
        counts,
        attempts,
        failures,
    })
}

pub(super) fn add_traffic(conn: &Connection, buckets: &[TrafficBucket]) -> Result<(), StoreError> {
    let mut add = conn.prepare_cached(
        "INSERT INTO traffic (at_ms, events, ends, duplicate_ends) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (at_ms) DO UPDATE SET events = events + excluded.events,
             ends = ends + excluded.ends, duplicate_ends = duplicate_ends + excluded.duplicate_ends",
    )?;
    for b in buckets {
        add.execute(params![
            b.at_ms,
            b.events as i64,
            b.ends as i64,
            b.duplicate_ends as i64
        ])?;
    }
    Ok(())
}

pub(super) fn traffic(
    conn: &Connection,
    since: Timestamp,
) -> Result<Vec<TrafficBucket>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT at_ms, events, ends, duplicate_ends FROM traffic WHERE at_ms >= ?1 ORDER BY at_ms",
        )?
        .query_map(params![since.millis()], |r| {
            Ok(TrafficBucket {
                at_ms: r.get(0)?,
                events: r.get::<_, i64>(1)?.max(0) as u64,
                ends: r.get::<_, i64>(2)?.max(0) as u64,
                duplicate_ends: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn purge_traffic(conn: &Connection, before: Timestamp) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM traffic WHERE at_ms < ?1")?
        .execute(params![before.millis()])? as u64)
}

pub(super) fn count_active(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM conversations INDEXED BY conversations_idle WHERE status = 'active'",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}
