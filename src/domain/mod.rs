//! The pure core: request payloads parsed into typed values, the conversation lifecycle
//! as a plain function of (state, event), and the *plan* of every write.
//!
//! Nothing here does IO or knows about HTTP, SQL or async. Every store writes what
//! [`ingest::plan`] and [`ingest::plan_expiry`] decide, so the rules live in one place.

pub mod caps;
pub mod conversation;
pub mod ingest;
pub mod outbox;
pub mod payload;
pub mod pii;
pub mod record;
pub mod retry;
pub mod strict_json;
pub mod summary;
pub mod tags;
pub mod time;

pub use conversation::{Anomaly, Applied, Conversation, EndedAfter, Status};
pub use payload::{Event, EventKind, HookRequest, Limits, ParseError, RequestBody};
pub use record::ConversationRecord;
pub use time::Timestamp;

/// A token's `jti` to record with the request it came with: a `jti` already recorded for
/// the app makes the request a replay, and nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JtiUse {
    pub client_id: String,
    pub jti: String,
    pub expires_at: Option<Timestamp>,
}
