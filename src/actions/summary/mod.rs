//! `summary`: the job a `TRIGGER_SUMMARY_EVENT` (or, with `at_end`, the end) schedules in
//! the transaction that stores it. It reads the conversation's messages (already redacted
//! when the bot redacts) up to its trigger, has its provider summarize them, and stores the
//! summary under the job's id: a job that runs again after a crash stores it once.
//!
//! A COMPLETED summary schedules, in the transaction that stores it, one
//! `conversation.summarized` delivery per webhook and NATS action of the bot (named
//! `<action>@<summary job>`). A summary that cannot be made is stored FAILED with a
//! `failureCode` once retrying cannot help (a malformed answer, a refusal) or once the
//! attempts run out (timeouts, 429, 5xx); its job is then dead, and an operator's retry
//! that succeeds replaces the FAILED summary.

pub mod openai;

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Advice, AttemptResult};
use crate::config::SummaryProvider;
use crate::domain::Timestamp;
use crate::domain::ingest::{ActionRef, Jobs};
use crate::domain::pii::Redactor;
use crate::domain::summary::{
    COMPLETED, FAILED, MessageRange, Sections, Speaker, StoredSummary, Turn, extractive,
};
use crate::store::{ClaimedJob, EventQuery, NewSummary, Store};

/// The most messages a summary reads (a conversation's caps bound it anyway).
const MAX_MESSAGES: usize = 10_000;
const PAGE: usize = 1_000;

/// What one summary job needs besides the job.
pub struct Summarize<'a> {
    pub store: &'a dyn Store,
    pub provider: &'a SummaryProvider,
    pub http: &'a reqwest::Client,
    /// The bot's webhook and NATS actions: each gets a `conversation.summarized`.
    pub deliveries: &'a [ActionRef],
    /// The bot's redaction: the transcript was redacted when stored, but what a model is
    /// sent is built anew (lines joined) and what it answers may restate what was
    /// removed, so both pass through it again.
    pub redact: Option<&'a Redactor>,
}

/// `text` redacted by `redact` (when it has rules).
pub fn redacted(redact: Option<&Redactor>, text: &str) -> String {
    match redact.filter(|r| !r.is_empty()) {
        Some(r) => r
            .text(text, &mut Default::default())
            .unwrap_or_else(|| text.to_owned()),
        None => text.to_owned(),
    }
}

/// A summary made.
pub struct Made {
    pub text: String,
    pub sections: Sections,
    pub model: Option<String>,
    /// What the provider said, for the attempt record (truncated).
    pub note: Option<String>,
}

/// A summary not made, and whether trying again may help.
pub struct Failure {
    /// The stored summary's `failureCode`.
    pub code: &'static str,
    /// For the attempt record.
    pub error: String,
    pub status_code: Option<u16>,
    pub response: Option<String>,
    /// `Some`: a later attempt may succeed (with the provider's `Retry-After` when it
    /// sent one); `None`: the same request would fail the same way.
    pub retry: Option<Advice>,
}

/// The failure code of a conversation with no message to summarize (as Amazon Connect
/// Contact Lens names it).
const NO_CONTENT: &str = "INSUFFICIENT_CONVERSATION_CONTENT";

pub async fn run(s: Summarize<'_>, job: &ClaimedJob, now: Timestamp) -> AttemptResult {
    let trigger_seq = trigger_of(&job.action);
    let (turns, range) = match transcript(s.store, job, trigger_seq).await {
        Ok(t) => t,
        Err(e) => return AttemptResult::failed(e),
    };
    let messages = turns.len();
    let started = std::time::Instant::now();
    let outcome = if turns.is_empty() {
        Err(Failure {
            code: NO_CONTENT,
            error: "the conversation has no message to summarize".into(),
            status_code: None,
            response: None,
            retry: None,
        })
    } else {
        match s.provider {
            // CPU work, bounded (see `extractive`), off the async workers.
            SummaryProvider::Extractive => {
                match tokio::task::spawn_blocking(move || extractive(&turns)).await {
                    Ok(e) => Ok(Made {
                        text: e.text,
                        sections: e.sections,
                        model: None,
                        note: None,
                    }),
                    Err(e) => Err(Failure {
                        code: "INTERNAL_ERROR",
                        error: format!("summarizing failed: {e}"),
                        status_code: None,
                        response: None,
                        retry: Some(Advice::Schedule),
                    }),
                }
            }
            SummaryProvider::OpenAi(o) => openai::summarize(s.http, o, &turns, s.redact).await,
        }
    };
    // What a provider made passes the bot's redaction too: a model may restate a number
    // it was given in pieces, without the spaces, or spelled out around `at` and `dot`.
    let outcome = outcome.map(|m| Made {
        text: redacted(s.redact, &m.text),
        sections: Sections {
            situation: redacted(s.redact, &m.sections.situation),
            action: redacted(s.redact, &m.sections.action),
            resolution: redacted(s.redact, &m.sections.resolution),
            satisfaction: redacted(s.redact, &m.sections.satisfaction),
        },
        ..m
    });
    let generation_ms = started.elapsed().as_millis() as u64;
    // Retryable and attempts left: nothing is stored; the job runs again.
    if let Err(f) = &outcome
        && let Some(advice) = f.retry
        && job.attempt < job.max_attempts
    {
        return AttemptResult {
            ok: false,
            status_code: f.status_code,
            error: Some(super::truncate(&f.error, 1024)),
            response: f.response.clone(),
            next: advice,
        };
    }
    let model = match s.provider {
        SummaryProvider::Extractive => None,
        SummaryProvider::OpenAi(o) => Some(o.model.clone()),
    };
    let (status, failure_code, text, sections) = match &outcome {
        Ok(m) => (COMPLETED, None, m.text.as_str(), Some(&m.sections)),
        Err(f) => (FAILED, Some(f.code), "", None),
    };
    let summary = StoredSummary {
        summary_id: job.id.clone(),
        trigger: if trigger_seq.is_some() {
            "TRIGGER_SUMMARY_EVENT"
        } else {
            "END_OF_CONVERSATION"
        },
        kind: if trigger_seq.is_some() {
            "interim"
        } else {
            "final"
        },
        status,
        failure_code,
        provider: s.provider.name(),
        model: outcome
            .as_ref()
            .ok()
            .and_then(|m| m.model.clone())
            .or(model),
        generation_time_ms: generation_ms,
        text: text.to_owned(),
        sections: sections.cloned(),
        message_range: range.map(|(from_seq, to_seq)| MessageRange { from_seq, to_seq }),
        messages,
        created_at: now.to_rfc3339(),
    };
    // Plain strings and numbers: serializing cannot fail.
    let body = serde_json::to_string(&summary).unwrap_or_default();
    // Only a summary made is announced.
    let deliveries = (outcome.is_ok() && !s.deliveries.is_empty()).then(|| Jobs {
        payload: json!({
            "botId": job.bot_id,
            "conversationId": job.conversation_id,
            "summary": &summary,
        })
        .to_string(),
        actions: s
            .deliveries
            .iter()
            .map(|a| ActionRef {
                name: format!("{}@{}", a.name, job.action),
                ..a.clone()
            })
            .collect::<Arc<[_]>>(),
    });
    let stored = s
        .store
        .put_summary(NewSummary {
            bot_id: job.bot_id.clone(),
            conversation_id: job.conversation_id.clone(),
            summary_id: job.id.clone(),
            at: now,
            body,
            deliveries,
        })
        .await;
    match (stored, outcome) {
        (Err(e), _) => AttemptResult::failed(format!("storing the summary failed: {e}")),
        (Ok(stored), Ok(made)) => AttemptResult {
            next: Advice::Schedule,
            ok: true,
            status_code: None,
            error: None,
            response: Some(format!(
                "{} ({messages} messages{})",
                if stored {
                    "summary stored"
                } else {
                    "summary already stored"
                },
                made.note.map(|n| format!("; {n}")).unwrap_or_default()
            )),
        },
        // Nothing to summarize: done, and the FAILED summary says so.
        (Ok(_), Err(f)) if f.code == NO_CONTENT => AttemptResult {
            next: Advice::Schedule,
            ok: true,
            status_code: None,
            error: None,
            response: Some(format!("stored FAILED ({NO_CONTENT}): {}", f.error)),
        },
        // Stored FAILED: the job is dead (an operator may retry it).
        (Ok(_), Err(f)) => AttemptResult {
            ok: false,
            status_code: f.status_code,
            error: Some(super::truncate(
                &format!("{} (summary stored FAILED, {})", f.error, f.code),
                1024,
            )),
            response: f.response,
            next: Advice::Never,
        },
    }
}

/// The event number of a summary job's trigger: `summary@7` (also once re-pointed,
/// `summary (re-pointed from summary@7)`); `None` for the end's (`summary@end`).
fn trigger_of(name: &str) -> Option<u64> {
    let at = name.rsplit("summary@").next()?;
    let digits = at.find(|c: char| !c.is_ascii_digit()).unwrap_or(at.len());
    at[..digits].parse().ok()
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_trigger_is_read_from_the_job_name_even_once_re_pointed() {
        assert_eq!(super::trigger_of("summary@7"), Some(7));
        assert_eq!(super::trigger_of("summary@end"), None);
        assert_eq!(
            super::trigger_of("summary (re-pointed from summary (re-pointed from summary@12))"),
            Some(12)
        );
        assert_eq!(
            super::trigger_of("summary (re-pointed from summary@end)"),
            None
        );
    }
}
