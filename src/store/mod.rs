//! Persistence behind one trait, so the HTTP layer never sees SQL.
//!
//! A store applies a whole request atomically: the request's events, the
//! conversation's new state and (for apps that enforce JTI) the used `jti` commit in
//! one transaction or not at all, and `ingest` returns only after that commit is
//! durable. The lifecycle rules come from [`crate::domain::Conversation::apply`].

pub mod sqlite;

use async_trait::async_trait;
use thiserror::Error;

use crate::auth::JtiUse;
use crate::config::{StoreSettings, StoreUrl};
use crate::domain::{Conversation, Event, Timestamp};

/// One request's worth of events for one conversation.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub bot_id: String,
    pub conversation_id: String,
    pub events: Vec<Event>,
    /// Recorded in the same transaction; a `jti` already recorded makes the request a replay.
    pub jti: Option<JtiUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed durably.
    Accepted {
        stored: u32,
        duplicate_ends: u32,
        /// This request ended the conversation.
        ended: bool,
    },
    /// A non-end event for a conversation that had ended; nothing was stored.
    EndedAlready { ended_at: Timestamp },
    /// The token's `jti` was used before; nothing was stored.
    Replay,
}

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConversation {
    pub bot_id: String,
    pub conversation_id: String,
    pub state: Conversation,
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// Too many requests are waiting for the writer; try again shortly.
    #[error("the store is overloaded")]
    Overloaded,
    /// The store could not commit or answer (disk full, read-only, database down, shut down).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies and durably commits one request.
    async fn ingest(&self, ingest: Ingest) -> Result<IngestOutcome, StoreError>;

    /// Records a `jti` for a request that stores nothing (reads); false if it was used before.
    async fn consume_jti(&self, jti: JtiUse) -> Result<bool, StoreError>;

    async fn conversation(
        &self,
        bot_id: &str,
        conversation_id: &str,
    ) -> Result<Option<StoredConversation>, StoreError>;

    /// Succeeds when the store can take writes and answer reads.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commits what is queued and stops; later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Opens the store named by the configuration's URL.
pub async fn open(settings: &StoreSettings) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    match &settings.url {
        StoreUrl::Sqlite(path) => Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open(path, settings).await?,
        )),
    }
}
