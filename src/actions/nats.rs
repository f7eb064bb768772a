//! `nats`: publish the record to a JetStream subject; done on the stream's ack.
//!
//! `Nats-Msg-Id` is the job id, so a retried publish inside the stream's duplicate
//! window is dropped by the stream instead of stored twice.

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;

use super::{AttemptResult, envelope, event_type, render};
use crate::config::ClientTls;
use crate::store::ClaimedJob;

/// One client per server URL ([`super::PerDestination`]).
#[derive(Default)]
pub struct Connections {
    clients: super::PerDestination<jetstream::Context>,
}

impl Connections {
    async fn context(
        &self,
        url: &str,
        tls: Option<&ClientTls>,
    ) -> Result<jetstream::Context, String> {
        let key = match tls {
            Some(t) => format!("{url}\n{}", t.identity()),
            None => url.to_owned(),
        };
        self.clients
            .get(&key, || async {
                let mut options = async_nats::ConnectOptions::new();
                if let Some(tls) = tls {
                    options = options.require_tls(true);
                    if let Some(ca) = &tls.ca_file {
                        options = options.add_root_certificates(ca.clone());
                    }
                    if let Some(c) = &tls.client {
                        options =
                            options.add_client_certificate(c.cert_file.clone(), c.key_file.clone());
                    }
                }
                let client = options
                    .connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", super::masked(url)))?;
                Ok(jetstream::new(client))
            })
            .await
    }

    pub async fn publish(
        &self,
        url: &str,
        tls: Option<&ClientTls>,
        subject: &str,
        job: &ClaimedJob,
    ) -> AttemptResult {
        let ctx = match self.context(url, tls).await {
            Ok(ctx) => ctx,
            Err(e) => return AttemptResult::failed(e),
        };
        // `{event}` first: the ids put in afterwards cannot bring a placeholder of their own.
        let subject = render(
            &subject.replace("{event}", event_type(job)),
            job,
            subject_token,
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", job.id.as_str());
        headers.insert("Wrapup-Event", event_type(job));
        let body = envelope(job).to_string();
        let ack = match ctx
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
        {
            Ok(ack) => ack,
            // The same record would never fit: dead at once, with the reason.
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return AttemptResult {
                    next: super::Advice::Never,
                    ..AttemptResult::failed(format!(
                        "publish to {subject} failed: {e}; the record is larger than the NATS server's max_payload, so the job is dead"
                    ))
                };
            }
            Err(e) => return AttemptResult::failed(format!("publish to {subject} failed: {e}")),
        };
        match ack.await {
            Ok(ack) => AttemptResult {
                next: super::Advice::Schedule,
                ok: true,
                status_code: None,
                error: None,
                response: Some(format!(
                    "stream {} seq {}{}",
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate { " (duplicate)" } else { "" }
                )),
            },
            Err(e) => AttemptResult::failed(format!(
                "no acknowledgement from a stream for {subject}: {e}"
            )),
        }
    }
}

/// Values put into a subject must stay one token: `.`, spaces and wildcards become `_`.
fn subject_token(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}
