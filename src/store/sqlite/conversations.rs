//! Conversations and their event logs: loading for update, writing the domain's plan,
//! the inactivity sweep, retention, and the reads of the records API.

use rusqlite::{Connection, OptionalExtension, params};

use super::jobs;
use crate::domain::ingest::{self, Plan, Target};
use crate::domain::tags::TagRows;
use crate::domain::{Conversation, JtiUse, Timestamp};
use crate::store::{
    ConversationFilter, ConversationList, EventPage, EventQuery, Expiry, Ingest, IngestOutcome,
    ListedConversation, Purge, StoreError, StoredConversation, StoredEvent, parse_state,
    plan_state, within_budget,
};

/// Records `jti`; false if this app used it before.
pub(super) fn record_jti(
    conn: &Connection,
    jti: &JtiUse,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO used_jti (client_id, jti, used_at, expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![jti.client_id, jti.jti, now.millis(), jti.expires_at.map(|t| t.millis())])?;
    Ok(inserted == 1)
}

pub(super) fn purge_jti(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM used_jti WHERE (client_id, jti) IN (
                 SELECT client_id, jti FROM used_jti WHERE expires_at < ?1 LIMIT ?2)",
        )?
        .execute(params![before.millis(), limit as i64])? as u64)
}

/// One request in its own savepoint: rolling back to it undoes only this request. The
/// statements are prepared once (a `Savepoint` guard would parse its SQL every time).
pub(super) fn ingest_one(
    conn: &Connection,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    conn.prepare_cached("SAVEPOINT request")?.execute([])?;
    let result = ingest_in_savepoint(conn, ingest, now);
    if matches!(result, Ok(IngestOutcome::Accepted { .. })) {
        conn.prepare_cached("RELEASE request")?.execute([])?;
    } else {
        conn.prepare_cached("ROLLBACK TO request")?.execute([])?;
        conn.prepare_cached("RELEASE request")?.execute([])?;
    }
    result
}

fn ingest_in_savepoint(
    conn: &Connection,
    ingest: &Ingest,
    now: Timestamp,
) -> Result<IngestOutcome, StoreError> {
    if let Some(jti) = &ingest.jti
        && !record_jti(conn, jti, now)?
    {
        return Ok(IngestOutcome::Replay);
    }
    let target = Target {
        bot_id: &ingest.bot_id,
        conversation_id: &ingest.conversation_id,
    };
    let (id, state) = match load(conn, &ingest.bot_id, &ingest.conversation_id)? {
        Some((id, conv)) => (Some(id), Some(conv)),
        None => (None, None),
    };
    match ingest::plan(target, state, &ingest.events, &ingest.bot, now) {
        Ok(plan) => {
            write_plan(conn, id, target, &plan, now)?;
            Ok(plan.outcome.into())
        }
        Err(refusal) => Ok(IngestOutcome::Refused(refusal)),
    }
}

/// The conversation's integer id and state, if it exists. (The writer holds the only
/// write connection, so what it loads stays current until it writes.)
fn load(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Option<(i64, Conversation)>, StoreError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, state FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )?
        .query_row(params![bot_id, conversation_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(id, json)| Ok((id, parse_state(&json)?)))
        .transpose()
}

/// Writes a plan: the state (inserted when `id` is `None`), the log entries, the jobs.
fn write_plan(
    conn: &Connection,
    id: Option<i64>,
    target: Target<'_>,
    plan: &Plan<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let id = save(conn, id, target, plan)?;
    write_tags(conn, id, target, plan)?;
    let mut append = conn.prepare_cached(
        "INSERT INTO events (conversation, seq, name, received_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for a in &plan.appends {
        append.execute(params![
            id,
            a.seq as i64,
            a.name,
            now.millis(),
            a.body.as_ref()
        ])?;
    }
    if let Some(j) = &plan.jobs {
        // The summaries completed by the end travel with it.
        let stored = jobs::summaries(conn, target.bot_id, target.conversation_id)?;
        jobs::schedule(conn, target, &j.payload_with(&stored), &j.actions, now)?;
    }
    Ok(())
}

/// Replaces the conversation's tag rows of the state before with the plan's.
fn write_tags(
    conn: &Connection,
    id: i64,
    target: Target<'_>,
    plan: &Plan<'_>,
) -> Result<(), StoreError> {
    replace_tags(conn, id, target, plan.tags_before.as_ref(), &plan.tags)
}

/// A tag's key in the index: bot and tag hashed to 64 bits (XXH3, fixed by its spec, so
/// stable across versions).
pub(super) fn tag_key(bot_id: &str, tag: &str) -> i64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(bot_id.as_bytes());
    h.update(b"\n");
    h.update(tag.as_bytes());
    h.digest() as i64
}

/// Deletes the rows of `before` that `next` does not keep, and writes `next`'s new or
/// changed rows (a row whose status changed is deleted and written again).
pub(super) fn replace_tags(
    conn: &Connection,
    id: i64,
    target: Target<'_>,
    before: Option<&TagRows>,
    next: &TagRows,
) -> Result<(), StoreError> {
    let changed = TagRows::changed_in(before, next);
    if let Some(b) = before {
        let mut delete = conn.prepare_cached(
            "DELETE FROM conversation_tags WHERE tag_key = ?1 AND sort_at = ?2 AND conversation = ?3",
        )?;
        let restated = changed
            .iter()
            .filter(|t| b.sort_at == next.sort_at && b.tags.iter().any(|o| o == *t));
        for tag in b.gone_in(next).into_iter().chain(restated.copied()) {
            delete.execute(params![tag_key(target.bot_id, tag), b.sort_at.millis(), id])?;
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO conversation_tags (tag_key, sort_at, conversation, ended) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let ended = next.status == crate::domain::Status::Ended;
    for tag in changed {
        insert.execute(params![
            tag_key(target.bot_id, tag),
            next.sort_at.millis(),
            id,
            ended
        ])?;
    }
    Ok(())
}

/// Updates the conversation `id`, or inserts it when it is new; returns its id.
fn save(
    conn: &Connection,
    id: Option<i64>,
    target: Target<'_>,
    plan: &Plan<'_>,
) -> Result<i64, StoreError> {
    let (conv, state) = (&plan.state, plan_state(plan)?);
    let ended_at = conv.ended_at.map(|t| t.millis());
    let sort_at = conv.ended_at.unwrap_or(conv.last_event_at).millis();
    Ok(match id {
        Some(id) => {
            conn.prepare_cached(
                "UPDATE conversations SET status = ?2, last_event_at = ?3, ended_at = ?4, sort_at = ?5, state = ?6
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                conv.status.as_str(),
                conv.last_event_at.millis(),
                ended_at,
                sort_at,
                state
            ])?;
            id
        }
        None => conn
            .prepare_cached(
                "INSERT INTO conversations (bot_id, conversation_id, status, created_at, last_event_at, ended_at, sort_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .insert(params![
                target.bot_id,
                target.conversation_id,
                conv.status.as_str(),
                conv.created_at.millis(),
                conv.last_event_at.millis(),
                ended_at,
                sort_at,
                state
            ])?,
    })
}

/// The server's own end for conversations gone silent, planned by the domain like a
/// client's end.
pub(super) fn expire_inactive(
    conn: &Connection,
    a: &Expiry,
    now: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT conversation_id FROM conversations INDEXED BY conversations_idle
             WHERE bot_id = ?1 AND status = 'active' AND last_event_at <= ?2
             ORDER BY last_event_at LIMIT ?3",
        )?
        .query_map(
            params![a.bot_id, a.idle_since.millis(), a.limit as i64],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut ended = Vec::with_capacity(ids.len());
    for id in ids {
        let (row, conv) = match load(conn, &a.bot_id, &id) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => continue,
            Err(e @ StoreError::Corrupt { .. }) => {
                crate::store::skipped_unreadable(&a.bot_id, &id, &e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let target = Target {
            bot_id: &a.bot_id,
            conversation_id: &id,
        };
        let Some(plan) = ingest::plan_expiry(target, conv, a.timeout_ms, &a.on_end, now) else {
            continue;
        };
        write_plan(conn, Some(row), target, &plan, now)?;
        ended.push(id);
    }
    Ok(ended)
}

pub(super) fn purge_ended(
    conn: &Connection,
    bot_id: &str,
    p: Purge,
    limit: usize,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut purged = 0u64;
    for (before, column, only_messages) in p.steps() {
        let ids: Vec<(i64, String)> = conn
            .prepare_cached(&format!(
                "SELECT id, conversation_id FROM conversations
                 WHERE bot_id = ?1 AND sort_at <= ?2 AND status = 'ended' AND {column} IS NULL
                 LIMIT ?3"
            ))?
            .query_map(params![bot_id, before.millis(), limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (id, conversation_id) in ids {
            // Summaries quote the transcript: they go with it.
            conn.prepare_cached(
                "DELETE FROM summaries WHERE bot_id = ?1 AND conversation_id = ?2",
            )?
            .execute(params![bot_id, conversation_id])?;
            // And so do the copies in its jobs' payloads (see `Purge`).
            conn.prepare_cached(
                "UPDATE job_payloads SET payload = CASE
                     WHEN json_type(payload, '$.summary') = 'object'
                         THEN json_set(payload, '$.summary.text', '', '$.summary.sections', json('null'))
                     ELSE json_set(payload, '$.summaries', json('[]')) END
                 WHERE id IN (SELECT payload_id FROM jobs WHERE bot_id = ?1 AND conversation_id = ?2)
                   AND (json_type(payload, '$.summary') = 'object'
                        OR json_array_length(payload, '$.summaries') > 0)",
            )?
            .execute(params![bot_id, conversation_id])?;
            // A receiver's or a model's answer kept with an attempt may quote them too.
            conn.prepare_cached(
                "UPDATE attempts SET response = NULL
                 WHERE response IS NOT NULL
                   AND job_id IN (SELECT id FROM jobs WHERE bot_id = ?1 AND conversation_id = ?2)",
            )?
            .execute(params![bot_id, conversation_id])?;
            let delete = if only_messages {
                "DELETE FROM events WHERE conversation = ?1 AND name = 'MESSAGE'"
            } else {
                "DELETE FROM events WHERE conversation = ?1"
            };
            conn.prepare_cached(delete)?.execute(params![id])?;
            conn.prepare_cached(&format!(
                "UPDATE conversations SET {column} = ?2 WHERE id = ?1"
            ))?
            .execute(params![id, now.millis()])?;
            purged += 1;
        }
    }
    Ok(purged)
}

pub(super) fn conversation(
    conn: &Connection,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Option<StoredConversation>, StoreError> {
    let state: Option<String> = conn
        .prepare_cached(
            "SELECT state FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )?
        .query_row(params![bot_id, conversation_id], |r| r.get(0))
        .optional()?;
    state
        .map(|json| {
            Ok(StoredConversation {
                bot_id: bot_id.to_owned(),
                conversation_id: conversation_id.to_owned(),
                state: parse_state(&json)?,
            })
        })
        .transpose()
}

type Sql = (String, Vec<rusqlite::types::Value>);

/// Where a bounded scan stops: the `scan`-th conversation of the index the list reads,
/// as its sort time, its key in that index (the integer id in the tag index, the text id
/// in the conversations' sort index) and its conversation id (for the cursor).
struct Horizon {
    at: i64,
    key: rusqlite::types::Value,
    conversation_id: String,
}

/// The range both the page and its horizon read: the filter's times and the cursor,
/// on the columns `at` (sort time) and `key` (the tie-breaker of the index's order).
fn push_range(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    f: &ConversationFilter,
    (at, key): (&str, &str),
    cursor_key: Option<rusqlite::types::Value>,
) {
    if let Some(from) = f.from {
        args.push(from.millis().into());
        sql.push_str(&format!(" AND {at} >= ?{}", args.len()));
    }
    if let Some(to) = f.to {
        args.push(to.millis().into());
        sql.push_str(&format!(" AND {at} <= ?{}", args.len()));
    }
    if let (Some((after, _)), Some(cursor_key)) = (&f.after, cursor_key) {
        args.push(after.millis().into());
        args.push(cursor_key);
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND ({at} < ?{a} OR ({at} = ?{a} AND {key} < ?{b}))"
        ));
    }
}

/// The cursor's key in the index the list reads: its text id in the sort index, its
/// integer id in the tag index (a conversation that is gone sorts after every id).
fn cursor_key(
    conn: &Connection,
    bot_id: &str,
    f: &ConversationFilter,
) -> Result<Option<rusqlite::types::Value>, StoreError> {
    let Some((_, id)) = &f.after else {
        return Ok(None);
    };
    if f.tags.is_empty() {
        return Ok(Some(id.clone().into()));
    }
    let row: Option<i64> = conn
        .prepare_cached("SELECT id FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2")?
        .query_row(params![bot_id, id], |r| r.get(0))
        .optional()?;
    Ok(Some(row.unwrap_or(i64::MAX).into()))
}

/// The `scan`-th conversation of the range the list reads, when there are that many and
/// a filter may pass some of them over (bounding the rows examined, not only returned).
fn horizon(
    conn: &Connection,
    bot_id: &str,
    f: &ConversationFilter,
    cursor: Option<rusqlite::types::Value>,
) -> Result<Option<Horizon>, StoreError> {
    if f.scan == 0 || (f.tags.is_empty() && f.status.is_none()) {
        return Ok(None);
    }
    let mut args: Vec<rusqlite::types::Value> = vec![bot_id.to_owned().into()];
    let mut sql;
    match f.tags.first() {
        Some(first) => {
            args.push(tag_key(bot_id, first).into());
            sql = String::from(
                "SELECT h.sort_at, h.conversation, c.conversation_id FROM (
                 SELECT t.sort_at, t.conversation FROM conversation_tags t WHERE t.tag_key = ?2",
            );
            push_range(
                &mut sql,
                &mut args,
                f,
                ("t.sort_at", "t.conversation"),
                cursor,
            );
            sql.push_str(" ORDER BY t.sort_at DESC, t.conversation DESC");
        }
        None => {
            sql = String::from(
                "SELECT h.sort_at, h.conversation_id, h.conversation_id FROM (
                 SELECT sort_at, conversation_id FROM conversations WHERE bot_id = ?1",
            );
            push_range(
                &mut sql,
                &mut args,
                f,
                ("sort_at", "conversation_id"),
                cursor,
            );
            sql.push_str(" ORDER BY sort_at DESC, conversation_id DESC");
        }
    }
    args.push((f.scan as i64 - 1).into());
    sql.push_str(&format!(" LIMIT 1 OFFSET ?{}) h", args.len()));
    if !f.tags.is_empty() {
        sql.push_str(" JOIN conversations c ON c.id = h.conversation AND c.bot_id = ?1");
    }
    let row = conn
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(args), |r| {
            Ok(Horizon {
                at: r.get(0)?,
                key: r.get(1)?,
                conversation_id: r.get(2)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// Keeps a page's range at or before the horizon.
fn push_horizon(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    horizon: Option<&Horizon>,
    (at, key): (&str, &str),
) {
    if let Some(h) = horizon {
        args.push(h.at.into());
        args.push(h.key.clone());
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(
            " AND ({at} > ?{a} OR ({at} = ?{a} AND {key} >= ?{b}))"
        ));
    }
}

/// The conversations' sort index, newest first.
fn unfiltered_sql(
    bot_id: &str,
    f: &ConversationFilter,
    cursor: Option<rusqlite::types::Value>,
    horizon: Option<&Horizon>,
) -> Sql {
    let mut args: Vec<rusqlite::types::Value> = vec![bot_id.to_owned().into()];
    let mut sql =
        String::from("SELECT conversation_id, sort_at, state FROM conversations WHERE bot_id = ?1");
    if let Some(status) = f.status {
        args.push(status.as_str().to_owned().into());
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    push_range(
        &mut sql,
        &mut args,
        f,
        ("sort_at", "conversation_id"),
        cursor,
    );
    push_horizon(&mut sql, &mut args, horizon, ("sort_at", "conversation_id"));
    args.push((f.limit as i64).into());
    sql.push_str(&format!(
        " ORDER BY sort_at DESC, conversation_id DESC LIMIT ?{}",
        args.len()
    ));
    (sql, args)
}

/// The first tag's range of the tag index, newest first (ties by the conversation's
/// integer id), with a key lookup for each other tag; the page is picked from the index
/// alone and only its own conversations are read.
fn filtered_sql(
    bot_id: &str,
    (first, rest): (&String, &[String]),
    f: &ConversationFilter,
    cursor: Option<rusqlite::types::Value>,
    horizon: Option<&Horizon>,
) -> Sql {
    let mut args: Vec<rusqlite::types::Value> =
        vec![bot_id.to_owned().into(), tag_key(bot_id, first).into()];
    let mut sql = String::from(
        "SELECT c.conversation_id, t.sort_at, c.state FROM (
         SELECT t.conversation, t.sort_at FROM conversation_tags t
         WHERE t.tag_key = ?2",
    );
    for tag in rest {
        args.push(tag_key(bot_id, tag).into());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM conversation_tags x WHERE x.tag_key = ?{}
               AND x.sort_at = t.sort_at AND x.conversation = t.conversation)",
            args.len()
        ));
    }
    if let Some(status) = f.status {
        args.push((status == crate::domain::Status::Ended).into());
        sql.push_str(&format!(" AND t.ended = ?{}", args.len()));
    }
    push_range(
        &mut sql,
        &mut args,
        f,
        ("t.sort_at", "t.conversation"),
        cursor,
    );
    push_horizon(
        &mut sql,
        &mut args,
        horizon,
        ("t.sort_at", "t.conversation"),
    );
    args.push((f.limit as i64).into());
    sql.push_str(&format!(
        " ORDER BY t.sort_at DESC, t.conversation DESC LIMIT ?{}) t
         JOIN conversations c ON c.id = t.conversation AND c.bot_id = ?1
         ORDER BY t.sort_at DESC, t.conversation DESC",
        args.len()
    ));
    (sql, args)
}

pub(super) fn list(
    conn: &Connection,
    bot_id: &str,
    f: &ConversationFilter,
) -> Result<ConversationList, StoreError> {
    let cursor = cursor_key(conn, bot_id, f)?;
    let horizon = horizon(conn, bot_id, f, cursor.clone())?;
    let (sql, args) = match f.tags.split_first() {
        None => unfiltered_sql(bot_id, f, cursor, horizon.as_ref()),
        Some((first, rest)) => filtered_sql(bot_id, (first, rest), f, cursor, horizon.as_ref()),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    // Rows are read one at a time, so a page past its byte budget stops reading.
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let rows = within_budget(
        rows.map(|r| r.map_err(StoreError::from)),
        f.max_bytes,
        |r| r.2.len(),
    )?;
    let mut listed = rows
        .into_iter()
        .map(|(conversation_id, sort_at, state)| {
            Ok(ListedConversation {
                bytes: state.len(),
                conversation: StoredConversation {
                    bot_id: bot_id.to_owned(),
                    conversation_id,
                    state: parse_state(&state)?,
                },
                sort_at: Timestamp::from_millis(sort_at),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if !f.tags.is_empty() {
        // The index keys tags by a 64-bit hash: a conversation that matched only by a
        // collision is dropped here (its page is then one shorter).
        listed.retain(|l| {
            let tags = l.conversation.state.tags();
            f.tags.iter().all(|t| tags.contains(t))
        });
    }
    Ok(ConversationList {
        listed,
        examined_to: horizon.map(|h| (Timestamp::from_millis(h.at), h.conversation_id)),
    })
}

pub(super) fn event_page(
    conn: &Connection,
    q: &EventQuery<'_>,
) -> Result<Option<EventPage>, StoreError> {
    let EventQuery {
        bot_id,
        conversation_id,
        only,
        after,
        limit,
        max_bytes,
    } = *q;
    let purged: Option<(i64, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, events_purged_at, transcript_purged_at FROM conversations WHERE bot_id = ?1 AND conversation_id = ?2",
        )?
        .query_row(params![bot_id, conversation_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((id, events_purged_at, transcript_purged_at)) = purged else {
        return Ok(None);
    };
    let map = |r: &rusqlite::Row<'_>| {
        Ok(StoredEvent {
            seq: r.get::<_, i64>(0)? as u64,
            name: r.get(1)?,
            received_at: Timestamp::from_millis(r.get(2)?),
            body: r.get(3)?,
        })
    };
    let body_len = |e: &StoredEvent| e.body.len();
    let after = after.min(i64::MAX as u64) as i64;
    let events = match only {
        Some(name) => {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, name, received_at, body FROM events
                 WHERE conversation = ?1 AND seq > ?2 AND name = ?4 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after, limit as i64, name], map)?;
            within_budget(
                rows.map(|r| r.map_err(StoreError::from)),
                max_bytes,
                body_len,
            )?
        }
        None => {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, name, received_at, body FROM events
                 WHERE conversation = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, after, limit as i64], map)?;
            within_budget(
                rows.map(|r| r.map_err(StoreError::from)),
                max_bytes,
                body_len,
            )?
        }
    };
    Ok(Some(EventPage {
        events,
        events_purged_at: events_purged_at.map(Timestamp::from_millis),
        transcript_purged_at: transcript_purged_at.map(Timestamp::from_millis),
    }))
}
