//! The conversation record: what the read API returns and what post-conversation
//! actions send. camelCase like the vendor; times in RFC 3339.

use serde::Serialize;
use serde_json::Value;

use super::conversation::{Anomaly, Conversation};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    pub bot_id: String,
    pub conversation_id: String,
    pub status: &'static str,
    pub created_at: String,
    pub last_event_at: String,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub ended_by: Option<Value>,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub duplicate_ends: u64,
    pub event_count: u64,
    pub anomalies: Vec<Anomaly>,
}

impl ConversationRecord {
    pub fn new(bot_id: &str, conversation_id: &str, c: &Conversation) -> Self {
        Self {
            bot_id: bot_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            status: c.status.as_str(),
            created_at: c.created_at.to_rfc3339(),
            last_event_at: c.last_event_at.to_rfc3339(),
            ended_at: c.ended_at.map(|t| t.to_rfc3339()),
            end_reason: c.end_reason.clone(),
            ended_by: c.ended_by.clone(),
            experience: c.experience.clone(),
            language: c.language.clone(),
            duplicate_ends: c.duplicate_ends,
            event_count: c.event_count,
            anomalies: c.anomalies.clone(),
        }
    }
}
