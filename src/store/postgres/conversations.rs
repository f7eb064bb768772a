//! Conversations and their event logs: the inactivity and retention sweeps, tag rows and
//! record reads. Requests are written by [`super::batch`] (the row lock that serializes a
//! conversation's writers across instances is taken there).

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::batch::Planned;
use crate::domain::ingest::{self, Target};
use crate::domain::tags::TagRows;
use crate::domain::{JtiUse, Timestamp};
use crate::store::{
    ConversationFilter, ConversationList, EventPage, EventQuery, Expiry, ListedConversation, Purge,
    StoreError, StoredConversation, StoredEvent, parse_state,
};

/// Records `jti`; false if this app used it before.
pub(super) async fn record_jti(
    conn: &mut PgConnection,
    jti: &JtiUse,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO used_jti (client_id, jti, used_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(&jti.client_id)
    .bind(&jti.jti)
    .bind(now.millis())
    .bind(jti.expires_at.map(|t| t.millis()))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a conversation's tag rows with `next`'s in one statement (the two parts
/// touch different rows): rows of tags it no longer has go, the others are written when
/// new or when their sort time or status changed. Keyed by the conversation, so the
/// statement reads only its rows whatever the planner's statistics say.
pub(super) async fn replace_tags(
    conn: &mut PgConnection,
    target: Target<'_>,
    before: Option<&TagRows>,
    next: &TagRows,
) -> Result<(), StoreError> {
    if before == Some(next) {
        return Ok(());
    }
    sqlx::query(
        "WITH gone AS (
             DELETE FROM conversation_tags
             WHERE bot_id = $1 AND conversation_id = $2 AND NOT (tag = ANY($3)))
         INSERT INTO conversation_tags (bot_id, conversation_id, tag, sort_at, status)
         SELECT $1, $2, t, $4, $5 FROM unnest($3::text[]) t
         ON CONFLICT (bot_id, conversation_id, tag)
         DO UPDATE SET sort_at = EXCLUDED.sort_at, status = EXCLUDED.status
         WHERE conversation_tags.sort_at <> EXCLUDED.sort_at
            OR conversation_tags.status <> EXCLUDED.status",
    )
    .bind(target.bot_id)
    .bind(target.conversation_id)
    .bind(&next.tags)
    .bind(next.sort_at.millis())
    .bind(next.status.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The server's own end for conversations gone silent, planned by the domain like a
/// client's end. SKIP LOCKED: a conversation a request (or another sweeper) holds is
/// left to it.
pub(super) async fn expire_inactive(
    conn: &mut PgConnection,
    e: &Expiry,
    now: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let bot_id = e.bot_id.as_str();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, state FROM conversations
         WHERE bot_id = $1 AND status = 'active' AND last_event_at <= $2
         ORDER BY last_event_at LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(bot_id)
    .bind(e.idle_since.millis())
    .bind(e.limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut plans = Vec::with_capacity(rows.len());
    for (id, state) in &rows {
        let target = Target {
            bot_id,
            conversation_id: id,
        };
        let conv = match parse_state(state) {
            Ok(conv) => conv,
            Err(err @ StoreError::Corrupt { .. }) => {
                crate::store::skipped_unreadable(bot_id, id, &err);
                continue;
            }
            Err(err) => return Err(err),
        };
        let Some(plan) = ingest::plan_expiry(target, conv, e.timeout_ms, &e.on_end, now) else {
            continue;
        };
        plans.push(Planned::new(target, false, plan));
    }
    // One statement per table for all of them (they are locked, and exist).
    super::batch::write_plans(conn, &plans, now).await?;
    Ok(plans
        .iter()
        .map(|p| p.target.conversation_id.to_owned())
        .collect())
}

/// Retention, one statement per rule: pick up to `limit` ended conversations not yet
/// purged by it (skipping rows another instance holds), delete their log entries, their
/// summaries and the summaries' text in their jobs' payloads, and mark them.
pub(super) async fn purge_ended(
    conn: &mut PgConnection,
    (bot_id, rule, limit): (&str, Purge, usize),
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut purged = 0u64;
    for (before, column, only_messages) in rule.steps() {
        let marked = sqlx::query(&format!(
            "WITH picked AS (
                 SELECT conversation_id FROM conversations
                 WHERE bot_id = $1 AND {column} IS NULL AND status = 'ended' AND ended_at <= $2
                 LIMIT $3 FOR UPDATE SKIP LOCKED),
             removed AS (
                 DELETE FROM events e USING picked p
                 WHERE e.bot_id = $1 AND e.conversation_id = p.conversation_id
                   AND (NOT $4 OR e.name = 'MESSAGE')),
             -- Summaries quote the transcript: they go with it.
             unsummarized AS (
                 DELETE FROM summaries s USING picked p
                 WHERE s.bot_id = $1 AND s.conversation_id = p.conversation_id),
             -- And so do the copies in its jobs' payloads (see `Purge`).
             scrubbed AS (
                 UPDATE jobs j SET payload = CASE
                     WHEN jsonb_typeof(j.payload::jsonb -> 'summary') = 'object'
                         THEN jsonb_set(jsonb_set(j.payload::jsonb, '{{summary,text}}', '\"\"'),
                                        '{{summary,sections}}', 'null')::text
                     ELSE jsonb_set(j.payload::jsonb, '{{summaries}}', '[]')::text END
                 FROM picked p
                 WHERE j.bot_id = $1 AND j.conversation_id = p.conversation_id
                   -- jsonb cannot hold NUL: a payload stored before NUL was refused at the
                   -- door is left as it is rather than stopping the bot's retention.
                   -- (CASE: the cast is never tried on such a payload.)
                   AND CASE WHEN strpos(j.payload, '\\u0000') > 0 THEN false
                       ELSE jsonb_typeof(j.payload::jsonb -> 'summary') = 'object'
                            OR jsonb_array_length(CASE WHEN jsonb_typeof(j.payload::jsonb -> 'summaries') = 'array'
                                                       THEN j.payload::jsonb -> 'summaries' ELSE '[]' END) > 0 END),
             -- A receiver's or a model's answer kept with an attempt may quote them too.
             unanswered AS (
                 UPDATE attempts a SET response = NULL FROM jobs j, picked p
                 WHERE j.bot_id = $1 AND j.conversation_id = p.conversation_id
                   AND a.job_id = j.id AND a.response IS NOT NULL)
             UPDATE conversations c SET {column} = $5 FROM picked p
             WHERE c.bot_id = $1 AND c.conversation_id = p.conversation_id"
        ))
        .bind(bot_id)
        .bind(before.millis())
        .bind(limit as i64)
        .bind(only_messages)
        .bind(now.millis())
        .execute(&mut *conn)
        .await?;
        purged += marked.rows_affected();
    }
    Ok(purged)
}

pub(super) async fn conversation(
    pool: &PgPool,
    bot_id: &str,
    conversation_id: &str,
) -> Result<Option<StoredConversation>, StoreError> {
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM conversations WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    state
        .map(|s| {
            Ok(StoredConversation {
                bot_id: bot_id.to_owned(),
                conversation_id: conversation_id.to_owned(),
                state: parse_state(&s)?,
            })
        })
        .transpose()
}

/// The range both a page and its horizon read: the filter's times and the cursor, on the
/// columns of `k` (`c`: conversations, `t`: the tag index).
fn push_range(q: &mut QueryBuilder<'_, Postgres>, k: &str, f: &ConversationFilter) {
    if let Some(from) = f.from {
        q.push(format!(" AND {k}.sort_at >= "))
            .push_bind(from.millis());
    }
    if let Some(to) = f.to {
        q.push(format!(" AND {k}.sort_at <= "))
            .push_bind(to.millis());
    }
    if let Some((at, id)) = &f.after {
        q.push(format!(" AND ({k}.sort_at, {k}.conversation_id) < ("))
            .push_bind(at.millis())
            .push(", ")
            .push_bind(id.clone())
            .push(")");
    }
}

/// The `scan`-th conversation of the range the list reads, when there are that many and
/// a filter may pass some of them over (bounding the rows examined, not only returned).
async fn horizon(
    pool: &PgPool,
    bot_id: &str,
    f: &ConversationFilter,
) -> Result<Option<(i64, String)>, StoreError> {
    if f.scan == 0 || (f.tags.is_empty() && f.status.is_none()) {
        return Ok(None);
    }
    let mut q = QueryBuilder::<Postgres>::new("");
    let k = match f.tags.first() {
        Some(first) => {
            q.push(
                "SELECT t.sort_at, t.conversation_id FROM conversation_tags t WHERE t.bot_id = ",
            )
            .push_bind(bot_id)
            .push(" AND t.tag = ")
            .push_bind(first.clone());
            "t"
        }
        None => {
            q.push("SELECT c.sort_at, c.conversation_id FROM conversations c WHERE c.bot_id = ")
                .push_bind(bot_id);
            "c"
        }
    };
    push_range(&mut q, k, f);
    q.push(format!(
        " ORDER BY {k}.sort_at DESC, {k}.conversation_id DESC LIMIT 1 OFFSET "
    ))
    .push_bind(f.scan as i64 - 1);
    let row = q.build().fetch_optional(pool).await?;
    row.map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
        .transpose()
        .map_err(|e| StoreError::corrupt("a conversation row", e))
}

pub(super) async fn list(
    pool: &PgPool,
    bot_id: &str,
    f: ConversationFilter,
) -> Result<ConversationList, StoreError> {
    let horizon = horizon(pool, bot_id, &f).await?;
    // The page's rows with the bytes of state before each (a running sum), so that the
    // rows past the byte budget never leave the database.
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT conversation_id, sort_at, state FROM (
             SELECT conversation_id, sort_at, state,
                    sum(octet_length(state)) OVER (ORDER BY sort_at DESC, conversation_id DESC)
                        - octet_length(state) AS before
             FROM (",
    );
    // Unfiltered, the conversations' sort index; with tags, the first tag's index range
    // (the API puts the most selective first) and a key lookup for each other tag.
    let k = match f.tags.split_first() {
        None => {
            q.push("SELECT c.conversation_id, c.sort_at, c.state FROM conversations c WHERE c.bot_id = ")
                .push_bind(bot_id);
            "c"
        }
        Some((first, rest)) => {
            // The page is picked from the tags' index alone; the outer query reads the
            // page's own conversations.
            q.push(
                "SELECT t.conversation_id, t.sort_at, c.state FROM (
                 SELECT t.bot_id, t.conversation_id, t.sort_at FROM conversation_tags t
                 WHERE t.bot_id = ",
            )
            .push_bind(bot_id)
            .push(" AND t.tag = ")
            .push_bind(first.clone());
            for tag in rest {
                // A correlated ANY stays a per-row lookup by the key (conversation, tag);
                // an EXISTS could be planned as a join over the other tag's whole range
                // when the table has no statistics yet.
                q.push(" AND ").push_bind(tag.clone()).push(
                    " = ANY (SELECT x.tag FROM conversation_tags x
                           WHERE x.bot_id = t.bot_id AND x.conversation_id = t.conversation_id)",
                );
            }
            "t"
        }
    };
    if let Some(status) = f.status {
        q.push(format!(" AND {k}.status = "))
            .push_bind(status.as_str());
    }
    push_range(&mut q, k, &f);
    if let Some((at, id)) = &horizon {
        q.push(format!(" AND ({k}.sort_at, {k}.conversation_id) >= ("))
            .push_bind(*at)
            .push(", ")
            .push_bind(id.clone())
            .push(")");
    }
    q.push(format!(
        " ORDER BY {k}.sort_at DESC, {k}.conversation_id DESC LIMIT "
    ))
    .push_bind(f.limit as i64);
    if k == "t" {
        // The page's own conversations, in the page's order.
        q.push(
            ") t JOIN conversations c ON c.bot_id = t.bot_id AND c.conversation_id = t.conversation_id
             ORDER BY t.sort_at DESC, t.conversation_id DESC",
        );
    }
    q.push(") page) counted WHERE before < ")
        .push_bind(budget(f.max_bytes))
        .push(" ORDER BY sort_at DESC, conversation_id DESC");
    let rows = q.build().fetch_all(pool).await?;
    let listed = rows
        .iter()
        .map(|r| {
            let columns = (|| {
                Ok::<_, sqlx::Error>((
                    r.try_get::<String, _>(0)?,
                    r.try_get::<i64, _>(1)?,
                    r.try_get::<String, _>(2)?,
                ))
            })();
            let (id, sort_at, state) =
                columns.map_err(|e| StoreError::corrupt("a conversation row", e))?;
            Ok(ListedConversation {
                bytes: state.len(),
                conversation: StoredConversation {
                    bot_id: bot_id.to_owned(),
                    conversation_id: id,
                    state: parse_state(&state)?,
                },
                sort_at: Timestamp::from_millis(sort_at),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ConversationList {
        listed,
        examined_to: horizon.map(|(at, id)| (Timestamp::from_millis(at), id)),
    })
}

pub(super) async fn event_page(
    pool: &PgPool,
    q: EventQuery<'_>,
) -> Result<Option<EventPage>, StoreError> {
    let (bot_id, conversation_id) = (q.bot_id, q.conversation_id);
    let purged: Option<(Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT events_purged_at, transcript_purged_at FROM conversations
         WHERE bot_id = $1 AND conversation_id = $2",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    let Some((events_purged_at, transcript_purged_at)) = purged else {
        return Ok(None);
    };
    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT seq, name, received_at, body FROM (
             SELECT seq, name, received_at, body,
                    sum(octet_length(body)) OVER (ORDER BY seq) - octet_length(body) AS before
             FROM (SELECT seq, name, received_at, body FROM events
                   WHERE bot_id = $1 AND conversation_id = $2 AND seq > $3
                     AND ($5::text IS NULL OR name = $5)
                   ORDER BY seq LIMIT $4) page) counted
         WHERE before < $6 ORDER BY seq",
    )
    .bind(bot_id)
    .bind(conversation_id)
    .bind(q.after.min(i64::MAX as u64) as i64)
    .bind(q.limit as i64)
    .bind(q.only)
    .bind(budget(q.max_bytes))
    .fetch_all(pool)
    .await?;
    Ok(Some(EventPage {
        events: rows
            .into_iter()
            .map(|(seq, name, at, body)| StoredEvent {
                seq: seq as u64,
                name,
                received_at: Timestamp::from_millis(at),
                body,
            })
            .collect(),
        events_purged_at: events_purged_at.map(Timestamp::from_millis),
        transcript_purged_at: transcript_purged_at.map(Timestamp::from_millis),
    }))
}

/// A page's byte budget as a bound for SQL: no budget is no bound.
fn budget(max_bytes: Option<usize>) -> i64 {
    max_bytes.map_or(i64::MAX, |b| b.min(i64::MAX as usize) as i64)
}
