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
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::{Advice, AttemptResult};
use crate::config::SummaryProvider;
use crate::domain::Timestamp;
use crate::domain::ingest::{ActionRef, Jobs};
use crate::domain::outbox::JobEvent;
use crate::domain::pii::Redactor;
use crate::domain::summary::{
    COMPLETED, FAILED, MessageRange, Sections, Speaker, StoredSummary, Transcript, Window,
    extractive,
};
use crate::store::{ClaimedJob, EventQuery, NewSummary, Store};

/// The most messages a summary reads (a conversation's caps bound it anyway).
const MAX_MESSAGES: usize = 10_000;
const PAGE: usize = 1_000;
/// The most bytes of events one page of the transcript brings (a page holds at least one).
const PAGE_BYTES: usize = 1 << 20;

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
    let trigger_seq = job.trigger;
    let (transcript, messages, range) = match transcript(s.store, job, trigger_seq).await {
        Ok(t) => t,
        Err(e) => return AttemptResult::failed(e),
    };
    let started = std::time::Instant::now();
    let outcome = if transcript.turns.is_empty() {
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
                // When the attempt times out this future is dropped, and the guard tells
                // the blocking work to stop at its next step.
                let stop = Arc::new(AtomicBool::new(false));
                let _guard = StopOnDrop(stop.clone());
                let turns = transcript.turns;
                let work = tokio::task::spawn_blocking(move || {
                    extractive(&turns, &|| stop.load(Ordering::Relaxed))
                });
                match work.await {
                    Ok(None) => Err(Failure {
                        code: "TIMEOUT",
                        error: "summarizing was stopped".into(),
                        status_code: None,
                        response: None,
                        retry: Some(Advice::Schedule),
                    }),
                    Ok(Some(e)) => Ok(Made {
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
            SummaryProvider::OpenAi(o) => openai::summarize(s.http, o, &transcript, s.redact).await,
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
        // What the provider says it is, as any text it sends.
        model: m.model.map(|model| redacted(s.redact, &model)),
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
                event: JobEvent::Summarized,
                trigger: job.trigger,
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

/// The conversation's messages up to `until` (every one when `None`), read a page of at
/// most [`PAGE_BYTES`] at a time into a [`Window`] (so at most 256 KiB of them are held),
/// with how many there were and the event numbers of the first and last.
async fn transcript(
    store: &dyn Store,
    job: &ClaimedJob,
    until: Option<u64>,
) -> Result<(Transcript, usize, Option<(u64, u64)>), String> {
    let mut window = Window::default();
    let mut messages = 0;
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
                max_bytes: Some(PAGE_BYTES),
            })
            .await
            .map_err(|e| format!("reading the transcript failed: {e}"))?
            .ok_or("the conversation is gone")?;
        if page.events.is_empty() {
            break;
        }
        for e in page.events {
            after = e.seq;
            if until.is_some_and(|u| e.seq > u) || messages >= MAX_MESSAGES {
                break 'pages;
            }
            let Ok(body) = serde_json::from_str::<Value>(&e.body) else {
                continue;
            };
            let text = body["query"].as_str().unwrap_or_default();
            if text.trim().is_empty() {
                continue;
            }
            let speaker = match body["author"]["type"].as_str() {
                Some("AGENT") => Speaker::Agent,
                _ => Speaker::Customer,
            };
            range = Some((range.map_or(e.seq, |r| r.0), e.seq));
            messages += 1;
            window.push(speaker, text);
        }
    }
    Ok((window.finish(), messages, range))
}

/// Sets its flag when dropped: the attempt that owned it is over.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
