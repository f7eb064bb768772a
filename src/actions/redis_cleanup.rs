//! `redis_cleanup`: delete a conversation's live keys (the "state reset").
//!
//! A template with glob characters is a pattern, walked with SCAN and deleted with
//! UNLINK (never KEYS, which blocks the server); one without is deleted directly. The
//! substituted ids are glob-escaped, so a conversation id such as `*` matches itself only.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{AttemptResult, render};
use crate::config::ClientTls;
use crate::store::ClaimedJob;

/// One connection manager per server URL ([`super::PerDestination`]).
#[derive(Default)]
pub struct Connections {
    managers: super::PerDestination<ConnectionManager>,
}

impl Connections {
    async fn connection(
        &self,
        url: &str,
        tls: Option<&ClientTls>,
    ) -> Result<ConnectionManager, String> {
        let key = match tls {
            Some(t) => format!("{url}\n{}", t.identity()),
            None => url.to_owned(),
        };
        self.managers
            .get(&key, || async {
                let client = match tls {
                    // A rediss:// URL without a `tls` table uses the system's trust store.
                    None => redis::Client::open(url),
                    Some(tls) => redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates {
                            client_tls: tls.client.as_ref().map(|c| redis::ClientTlsConfig {
                                client_cert: c.cert_pem.clone(),
                                client_key: c.key_pem.clone(),
                            }),
                            root_cert: tls.ca_pem.clone(),
                        },
                    ),
                }
                .map_err(|e| format!("invalid Redis URL {}: {e}", super::masked(url)))?;
                // No retries of the first connect, and each bounded: a closed port is reported
                // as what it is, inside the attempt's timeout (later reconnects are the job's
                // own retries).
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(std::time::Duration::from_secs(1)));
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|e| format!("cannot connect to Redis at {}: {e}", super::masked(url)))
            })
            .await
    }

    pub async fn cleanup(
        &self,
        url: &str,
        tls: Option<&ClientTls>,
        templates: &[String],
        job: &ClaimedJob,
    ) -> AttemptResult {
        let mut conn = match self.connection(url, tls).await {
            Ok(c) => c,
            Err(e) => return AttemptResult::failed(e),
        };
        let mut deleted = 0u64;
        for template in templates {
            let result = if is_pattern(template) {
                let pattern = render(template, job, glob_escape);
                delete_matching(&mut conn, &pattern).await
            } else {
                let key = render(template, job, |v| v.to_owned());
                conn.unlink::<_, u64>(&key).await
            };
            match result {
                Ok(n) => deleted += n,
                Err(e) => return AttemptResult::failed(format!("{template}: {e}")),
            }
        }
        AttemptResult {
            next: super::Advice::Schedule,
            ok: true,
            status_code: None,
            error: None,
            response: Some(format!("deleted {deleted} keys")),
        }
    }
}

/// Walks the keys matching `pattern` with `SCAN MATCH … COUNT 1000` (never `KEYS`) and
/// unlinks them a thousand at a time.
async fn delete_matching(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<u64> {
    let mut unlinker = conn.clone();
    let options = redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(1000);
    let mut keys = conn.scan_options::<String>(options).await?;
    let (mut batch, mut deleted) = (Vec::with_capacity(1000), 0);
    while let Some(key) = keys.next_item().await {
        batch.push(key?);
        if batch.len() == 1000 {
            deleted += unlinker.unlink::<_, u64>(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        deleted += unlinker.unlink::<_, u64>(&batch).await?;
    }
    Ok(deleted)
}

/// A template is a pattern when its own text (outside the placeholders) has glob characters.
fn is_pattern(template: &str) -> bool {
    template
        .replace("{botId}", "")
        .replace("{conversationId}", "")
        .contains(['*', '?', '['])
}

fn glob_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_in_patterns_and_only_templates_make_patterns() {
        assert!(is_pattern("agentai:{botId}:{conversationId}:*"));
        assert!(!is_pattern("agentai:{botId}:{conversationId}"));
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
