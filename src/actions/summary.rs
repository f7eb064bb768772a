//! `summary`: the job a `TRIGGER_SUMMARY_EVENT` (or, with `at_end`, the end) schedules in
//! the transaction that stores it. It reads the conversation's messages (already redacted
//! when the bot redacts) up to its trigger, summarizes them, and stores the summary under
//! the job's id: a job that runs again after a crash stores the same summary once.

use serde_json::{Value, json};

use super::AttemptResult;
use crate::domain::Timestamp;
use crate::domain::summary::{Speaker, Turn, extractive};
use crate::store::{ClaimedJob, EventQuery, Store};

/// The most messages a summary reads (a conversation's caps bound it anyway).
const MAX_MESSAGES: usize = 10_000;
const PAGE: usize = 1_000;

pub async fn run(
    store: &dyn Store,
    provider: &str,
    job: &ClaimedJob,
    now: Timestamp,
) -> AttemptResult {
    let trigger_seq = job
        .action
        .strip_prefix("summary@")
        .and_then(|at| at.parse::<u64>().ok());
    let started = std::time::Instant::now();
    let (turns, range) = match transcript(store, job, trigger_seq).await {
        Ok(t) => t,
        Err(e) => return AttemptResult::failed(e),
    };
    // CPU work, bounded (see `extractive`), off the async workers.
    let (extract, turns) =
        match tokio::task::spawn_blocking(move || (extractive(&turns), turns)).await {
            Ok(done) => done,
            Err(e) => return AttemptResult::failed(format!("summarizing failed: {e}")),
        };
    let body = json!({
        "summaryId": job.id,
        "trigger": if trigger_seq.is_some() { "TRIGGER_SUMMARY_EVENT" } else { "END_OF_CONVERSATION" },
        "type": if trigger_seq.is_some() { "interim" } else { "final" },
        "status": "COMPLETED",
        "failureCode": Value::Null,
        "provider": provider,
        "model": Value::Null,
        "generationTimeMs": started.elapsed().as_millis() as u64,
        "text": extract.text,
        "sections": extract.sections,
        "messageRange": range.map(|(from, to)| json!({"fromSeq": from, "toSeq": to})),
        "messages": turns.len(),
        "createdAt": now.to_rfc3339(),
    });
    match store
        .put_summary(
            &job.bot_id,
            &job.conversation_id,
            &job.id,
            now,
            &body.to_string(),
        )
        .await
    {
        Ok(stored) => AttemptResult {
            next: super::Advice::Schedule,
            ok: true,
            status_code: None,
            error: None,
            response: Some(if stored {
                format!("summary stored ({} messages)", turns.len())
            } else {
                "summary already stored".into()
            }),
        },
        Err(e) => AttemptResult::failed(format!("storing the summary failed: {e}")),
    }
}

/// The conversation's messages up to `until` (every one when `None`), as turns, with the
/// event numbers of the first and last.
async fn transcript(
    store: &dyn Store,
    job: &ClaimedJob,
    until: Option<u64>,
) -> Result<(Vec<Turn>, Option<(u64, u64)>), String> {
    let mut turns = Vec::new();
    let mut range: Option<(u64, u64)> = None;
    let mut after = 0;
    'pages: loop {
        let page = store
            .events(EventQuery {
                bot_id: &job.bot_id,
                conversation_id: &job.conversation_id,
                only: Some("MESSAGE"),
                after,
                limit: PAGE,
                max_bytes: None,
            })
            .await
            .map_err(|e| format!("reading the transcript failed: {e}"))?
            .ok_or("the conversation is gone")?;
        let n = page.events.len();
        for e in page.events {
            after = e.seq;
            if until.is_some_and(|u| e.seq > u) || turns.len() >= MAX_MESSAGES {
                break 'pages;
            }
            let Ok(body) = serde_json::from_str::<Value>(&e.body) else {
                continue;
            };
            let text = body["query"].as_str().unwrap_or_default().to_owned();
            if text.trim().is_empty() {
                continue;
            }
            let speaker = match body["author"]["type"].as_str() {
                Some("AGENT") => Speaker::Agent,
                _ => Speaker::Customer,
            };
            range = Some((range.map_or(e.seq, |r| r.0), e.seq));
            turns.push(Turn { speaker, text });
        }
        if n < PAGE {
            break;
        }
    }
    Ok((turns, range))
}
