//! `redis_cleanup`: delete a conversation's live keys (the "state reset").
//!
//! A template with glob characters is a pattern, walked with SCAN and deleted with
//! UNLINK (never KEYS, which blocks the server); one without is deleted directly. The
//! substituted ids are glob-escaped, so a conversation id such as `*` matches itself only.

use std::collections::HashMap;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use super::{AttemptResult, render};
use crate::store::ClaimedJob;

#[derive(Default)]
pub struct Connections {
    managers: Mutex<HashMap<String, ConnectionManager>>,
}

impl Connections {
    async fn connection(&self, url: &str) -> Result<ConnectionManager, String> {
        let mut managers = self.managers.lock().await;
        if let Some(m) = managers.get(url) {
            return Ok(m.clone());
        }
        let client = redis::Client::open(url)
            .map_err(|e| format!("invalid Redis URL {}: {e}", super::masked(url)))?;
        let manager = ConnectionManager::new(client)
            .await
            .map_err(|e| format!("cannot connect to Redis at {}: {e}", super::masked(url)))?;
        managers.insert(url.to_owned(), manager.clone());
        Ok(manager)
    }

    pub async fn cleanup(
        &self,
        url: &str,
        templates: &[String],
        job: &ClaimedJob,
    ) -> AttemptResult {
        let mut conn = match self.connection(url).await {
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
            ok: true,
            status_code: None,
            error: None,
            response: Some(format!("deleted {deleted} keys")),
        }
    }
}

async fn delete_matching(conn: &mut ConnectionManager, pattern: &str) -> redis::RedisResult<u64> {
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            deleted += conn.unlink::<_, u64>(&keys).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
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
