//! `webhook`: POST the record, signed per the Standard Webhooks specification.

use reqwest::header::{HeaderName, HeaderValue};

use super::{AttemptResult, envelope, error_chain, truncate};
use crate::domain::Timestamp;
use crate::store::ClaimedJob;

/// Bytes of a receiver's answer kept with the attempt.
const RESPONSE_KEPT: usize = 1024;

/// Where and how one webhook action delivers.
pub struct Target<'a> {
    pub url: &'a reqwest::Url,
    /// The decoded `whsec_` key.
    pub key: &'a [u8],
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Statuses after which the job is dead at once.
    pub give_up_on: &'a [u16],
}

pub async fn deliver(
    client: &reqwest::Client,
    target: &Target<'_>,
    job: &ClaimedJob,
    now: Timestamp,
) -> AttemptResult {
    let Target {
        url,
        key,
        headers,
        give_up_on,
    } = *target;
    let body = envelope(job).to_string().into_bytes();
    let timestamp = now.millis() / 1000;
    // Standard Webhooks: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The body is
    // serde_json's output, so UTF-8, which is all `sign` can refuse.
    let signature = match standardwebhooks::Webhook::from_bytes(key.to_vec())
        .and_then(|signer| signer.sign(&job.id, timestamp, &body))
    {
        Ok(signature) => signature,
        Err(e) => return AttemptResult::failed(format!("cannot sign the payload: {e}")),
    };
    let mut req = client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", &job.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    match req.body(body).send().await {
        Ok(mut resp) => {
            let status = resp.status();
            let next = advice(status, resp.headers(), give_up_on);
            // Only the start of the answer is kept: read no more than that of it.
            let mut head = Vec::new();
            let mut cut = None;
            while head.len() <= RESPONSE_KEPT {
                match resp.chunk().await {
                    Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(e) => {
                        cut = Some(error_chain(&e.without_url()));
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&head[..head.len().min(RESPONSE_KEPT + 4)]);
            let mut response = truncate(&text, RESPONSE_KEPT);
            if let Some(cut) = cut {
                // The status counts; the record says the answer did not arrive whole.
                response.push_str(&format!(" [the answer was cut off: {cut}]"));
            }
            AttemptResult {
                ok: status.is_success(),
                status_code: Some(status.as_u16()),
                error: (!status.is_success()).then(|| match next {
                    super::Advice::Never => format!("the receiver answered {status}: it will not take this delivery; the job is dead"),
                    _ => format!("the receiver answered {status}"),
                }),
                response: Some(response),
                next,
            }
        }
        // The error's own text would repeat the URL with its credentials and query.
        Err(e) => AttemptResult::failed(format!(
            "request to {} failed: {}",
            super::masked(url.as_str()),
            error_chain(&e.without_url())
        )),
    }
}

/// What a receiver's answer says of trying again: never again on a status of the action's
/// `give_up_on` (410 Gone by default); `Retry-After` (seconds) on a 429 or 503.
fn advice(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    give_up_on: &[u16],
) -> super::Advice {
    match status.as_u16() {
        s if give_up_on.contains(&s) => super::Advice::Never,
        429 | 503 => super::retry_after(headers).unwrap_or_default(),
        _ => super::Advice::Schedule,
    }
}
