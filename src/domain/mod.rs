//! The pure core: request payloads parsed into typed values, and the conversation
//! lifecycle as a plain function of (state, event).
//!
//! Nothing here does IO or knows about HTTP, SQL or async. Every store calls
//! [`conversation::Conversation::apply`] so the rules live in one place.

pub mod conversation;
pub mod payload;
pub mod record;
pub mod strict_json;
pub mod time;

pub use conversation::{Anomaly, Applied, Conversation, EndedAfter, Status};
pub use payload::{Event, EventKind, HookRequest, Limits, ParseError, RequestBody};
pub use record::ConversationRecord;
pub use time::Timestamp;
