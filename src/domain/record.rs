//! The conversation record: what the read API returns and what post-conversation
//! actions send. camelCase like the vendor; times in RFC 3339.

use serde::Serialize;
use serde_json::Value;

use super::conversation::{Anomaly, Conversation, Fields, MessageCounts, Transfers};
use super::payload::TransferType;
use super::time::Timestamp;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRecord {
    pub bot_id: String,
    pub conversation_id: String,
    /// `active` or `ended`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub created_at: String,
    /// The first NA entry; null if no agent ever entered.
    pub started_at: Option<String>,
    pub last_event_at: String,
    pub ended_at: Option<String>,
    /// From `startedAt` (else `createdAt`) to `endedAt` (else `lastEventAt`).
    pub duration_ms: i64,
    pub end_reason: Option<String>,
    /// The end's participant; `{"identity":"wrapup","type":"system"}` for an inactivity end.
    #[schema(value_type = Option<Object>)]
    pub ended_by: Option<Value>,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub duplicate_ends: u64,
    pub event_count: u64,
    pub agents: Vec<AgentRecord>,
    pub transfers: Transfers,
    pub messages: MessageCounts,
    pub summary_requests: Vec<SummaryRecord>,
    pub anomalies: Vec<Anomaly>,
    #[serde(skip_serializing_if = "is_zero")]
    pub anomalies_dropped: u64,
    /// What the bot's `redact` rules replaced in the stored events, by kind (absent when
    /// nothing was).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub redactions: super::pii::Redactions,
    /// The conversation's summaries (as `GET …/summaries` shows them): every one when a
    /// conversation is read; in an end's payload, those COMPLETED by the end; absent from
    /// list pages. Always the last field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<super::summary::StoredSummary>>)]
    pub summaries: Option<Vec<Box<serde_json::value::RawValue>>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub identity: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub custom_fields: Fields,
    pub segments: Vec<SegmentRecord>,
    /// The time of all segments; open ones count up to the last event.
    pub handle_time_ms: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRecord {
    pub transfer_type: TransferType,
    pub started_at: String,
    pub ended_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryRecord {
    pub language: String,
    pub locale: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub requested_at: String,
    pub event_seq: u64,
}

impl ConversationRecord {
    pub fn new(bot_id: &str, conversation_id: &str, c: &Conversation) -> Self {
        let until = c.ended_at.unwrap_or(c.last_event_at);
        let from = c.started_at.unwrap_or(c.created_at);
        Self {
            bot_id: bot_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            status: c.status.as_str(),
            created_at: c.created_at.to_rfc3339(),
            started_at: c.started_at.map(Timestamp::to_rfc3339),
            last_event_at: c.last_event_at.to_rfc3339(),
            ended_at: c.ended_at.map(Timestamp::to_rfc3339),
            duration_ms: (until.millis() - from.millis()).max(0),
            end_reason: c.end_reason.clone(),
            ended_by: c.ended_by.clone(),
            experience: c.experience.clone(),
            language: c.language.clone(),
            duplicate_ends: c.duplicate_ends,
            event_count: c.event_count,
            agents: c
                .agents
                .iter()
                .map(|a| AgentRecord {
                    identity: a.identity.clone(),
                    name: a.name.clone(),
                    custom_fields: a.custom_fields.clone(),
                    segments: a
                        .segments
                        .iter()
                        .map(|s| SegmentRecord {
                            transfer_type: s.transfer_type,
                            started_at: s.started_at.to_rfc3339(),
                            ended_at: s.ended_at.map(Timestamp::to_rfc3339),
                        })
                        .collect(),
                    handle_time_ms: a.handle_time_ms(until),
                })
                .collect(),
            transfers: c.transfers,
            messages: c.messages,
            summary_requests: c
                .summary_requests
                .iter()
                .map(|s| SummaryRecord {
                    language: s.language.clone(),
                    locale: s.locale.clone(),
                    kind: s.kind.clone(),
                    requested_at: s.requested_at.to_rfc3339(),
                    event_seq: s.event_seq,
                })
                .collect(),
            anomalies: c.anomalies.clone(),
            anomalies_dropped: c.anomalies_dropped,
            redactions: c.redactions.clone(),
            summaries: None,
        }
    }
}
