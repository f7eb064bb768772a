//! Request bodies of the hooks endpoint, parsed once into typed values.
//!
//! Parsing works on an already-decoded `serde_json::Value` so that every refusal can
//! name the exact field path (`events[0].participant.identity is required`), and so
//! that each event's original JSON — unknown fields included — is kept for the log.
//! Lenient where the vendor's own clients are (SPEC.md, "What clients in the field
//! send"), strict where the vendor's documentation marks a field required.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// Names of the events accepted in `events[].name`.
pub const SUPPORTED_EVENTS: [&str; 3] = [
    "END_OF_CONVERSATION",
    "INTERNAL_TRANSFER_EVENT",
    "TRIGGER_SUMMARY_EVENT",
];

/// `transfertype`'s values (matched without regard to case, as every choice here).
pub const TRANSFER_TYPES: [(&str, TransferType); 4] = [
    ("NA", TransferType::Na),
    ("COLD", TransferType::Cold),
    ("WARM", TransferType::Warm),
    ("redial", TransferType::Redial),
];

/// `transition`'s values.
pub const TRANSITIONS: [(&str, Transition); 2] =
    [("entry", Transition::Entry), ("exit", Transition::Exit)];

/// A message's `author.type` values.
pub const AUTHOR_TYPES: [(&str, AuthorType); 2] =
    [("USER", AuthorType::User), ("AGENT", AuthorType::Agent)];

/// Size bounds applied while parsing; the body size itself is bounded by the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    /// `botId`, `conversationId`, participant identity and other identifiers.
    pub max_id_chars: usize,
    /// Free-text fields other than a message's `query`.
    pub max_text_chars: usize,
    /// A propagated message's `query`.
    pub max_query_chars: usize,
    /// Nesting of the body. What is stored is served again inside an events page three
    /// levels deeper, and JSON readers commonly stop at 128 levels.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_id_chars: 256,
            max_text_chars: 1024,
            max_query_chars: 64 * 1024,
            max_depth: 64,
        }
    }
}

/// Why a body was refused; renders as `<path> <problem>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{} {}", self.path, self.problem)
        }
    }
}

impl std::error::Error for ParseError {}

fn err(path: impl Into<String>, problem: impl Into<String>) -> ParseError {
    ParseError {
        path: path.into(),
        problem: problem.into(),
    }
}

/// One request to the hooks endpoint.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub bot_id: String,
    pub conversation_id: String,
    /// Event requests carry one or more events; a message-propagation request is
    /// represented as a single [`EventKind::Message`].
    pub events: Vec<Event>,
}

/// Kept for callers that want to know which shape the request had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    Events,
    Message,
}

impl HookRequest {
    pub fn body_kind(&self) -> RequestBody {
        match self.events.first().map(|e| &e.kind) {
            Some(EventKind::Message(_)) => RequestBody::Message,
            _ => RequestBody::Events,
        }
    }
}

/// An event as parsed, with the JSON it came as.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// The event's JSON as received (unknown fields included; message text and custom
    /// fields redacted), serialized once here rather than in the store's writer.
    pub raw: String,
    /// What redaction replaced in this event, by kind.
    pub redactions: super::pii::Redactions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    End(End),
    Transfer(Transfer),
    Summary(Summary),
    Message(Message),
}

/// Every [`EventKind::name`].
pub const EVENT_NAMES: [&str; 4] = [
    "END_OF_CONVERSATION",
    "INTERNAL_TRANSFER_EVENT",
    "TRIGGER_SUMMARY_EVENT",
    "MESSAGE",
];

impl EventKind {
    /// The name written to the event log and used in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::End(_) => "END_OF_CONVERSATION",
            EventKind::Transfer(_) => "INTERNAL_TRANSFER_EVENT",
            EventKind::Summary(_) => "TRIGGER_SUMMARY_EVENT",
            EventKind::Message(_) => "MESSAGE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub identity: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub custom_fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct End {
    pub reason: String,
    pub language: String,
    pub experience: String,
    pub participant: Participant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub enum TransferType {
    #[serde(rename = "NA")]
    Na,
    #[serde(rename = "COLD")]
    Cold,
    #[serde(rename = "WARM")]
    Warm,
    #[serde(rename = "redial")]
    Redial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Entry,
    Exit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub transfer_type: TransferType,
    pub transition: Transition,
    pub is_ext_ad: Option<bool>,
    pub language: Option<String>,
    pub experience: String,
    pub participant: Participant,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub language: String,
    pub locale: String,
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorType {
    User,
    Agent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub query: String,
    pub agent_id: Option<String>,
    pub author: Option<AuthorType>,
    pub source: Option<String>,
    pub experience: Option<String>,
    pub language: Option<String>,
    pub send_user_message: Option<bool>,
    pub send_agent_message: Option<bool>,
    /// Documented fields the client left out (bare messages from the vendor's widget).
    pub missing: Vec<&'static str>,
}

/// How deep `v` nests arrays and objects, counting no further than `stop`.
fn depth(v: &Value, stop: usize) -> usize {
    if stop == 0 {
        return 0;
    }
    match v {
        Value::Array(items) => 1 + items.iter().map(|i| depth(i, stop - 1)).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(|i| depth(i, stop - 1)).max().unwrap_or(0),
        _ => 0,
    }
}

/// The path of the first string or key holding a NUL, anywhere in the body (unknown
/// fields and `customFields` included): a NUL breaks whatever reads the text later (C
/// strings, PostgreSQL's `jsonb`, which once stopped a bot's retention for good).
fn nul_at(v: &Value, path: String) -> Option<String> {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                Some(at(&k.replace('\0', "\\u0000")))
            } else {
                nul_at(item, at(k))
            }
        }),
        _ => None,
    }
}

/// Parses a decoded body for the bot named in the path.
///
/// Checks every event before returning, so that a request is refused whole or
/// accepted whole. `path_bot` is compared with the body's `botId`.
pub fn parse_request(
    body: &Value,
    path_bot: &str,
    limits: &Limits,
) -> Result<HookRequest, ParseError> {
    if depth(body, limits.max_depth + 1) > limits.max_depth {
        return Err(err(
            "",
            format!(
                "the body nests deeper than {} levels of arrays and objects",
                limits.max_depth
            ),
        ));
    }
    if let Some(path) = nul_at(body, String::new()) {
        return Err(err(
            path,
            "holds a NUL character (\\u0000), which is never text; nothing was stored",
        ));
    }
    let top = Obj::root(body)?;
    let bot_id = top.req_str("botId", limits.max_id_chars)?;
    if bot_id != path_bot {
        return Err(err(
            "botId",
            format!("\"{bot_id}\" in the body does not match the bot \"{path_bot}\" in the path"),
        ));
    }
    let conversation_id = top.req_str("conversationId", limits.max_id_chars)?;

    let given = |key: &str| top.map.get(key).is_some_and(|v| !v.is_null());
    if given("events") && given("query") {
        // The contract's oneOf: an event request or a message propagation. Taking the
        // events would drop the message without a word.
        return Err(err(
            "query",
            "must not be given with events: a request carries events, or one message (query), not both",
        ));
    }
    let events = match top.map.get("events") {
        Some(Value::Null) | None => match top.map.get("query") {
            Some(_) => vec![Event {
                kind: EventKind::Message(parse_message(&top, limits)?),
                raw: body.to_string(),
                redactions: Default::default(),
            }],
            None => {
                return Err(err(
                    "events",
                    "is required (or query, for a message-propagation request)",
                ));
            }
        },
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(err("events", "must not be empty"));
            }
            if items.len() > limits.max_events {
                return Err(err(
                    "events",
                    format!(
                        "has {} events; at most {} are allowed in one request",
                        items.len(),
                        limits.max_events
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_event(item, format!("events[{i}]"), limits))
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(other) => {
            return Err(err(
                "events",
                format!("must be an array (got {})", type_name(other)),
            ));
        }
    };

    Ok(HookRequest {
        bot_id,
        conversation_id,
        events,
    })
}

fn parse_event(value: &Value, path: String, limits: &Limits) -> Result<Event, ParseError> {
    let obj = Obj::at(value, path)?;
    let name = obj.req_str("name", limits.max_id_chars)?;
    let kind = match name.as_str() {
        "END_OF_CONVERSATION" => EventKind::End(End {
            reason: obj.req_str("reason", limits.max_text_chars)?,
            language: obj.req_str("language", limits.max_id_chars)?,
            experience: obj.req_str("experience", limits.max_id_chars)?,
            participant: parse_participant(&obj, limits)?,
        }),
        "INTERNAL_TRANSFER_EVENT" => EventKind::Transfer(Transfer {
            transfer_type: obj.req_enum("transfertype", &TRANSFER_TYPES)?,
            transition: obj.req_enum("transition", &TRANSITIONS)?,
            is_ext_ad: obj.opt_bool("isExtAD")?,
            language: obj.opt_str("language", limits.max_id_chars)?,
            experience: obj.req_str("experience", limits.max_id_chars)?,
            participant: parse_participant(&obj, limits)?,
            reason: obj.opt_str("reason", limits.max_text_chars)?,
        }),
        "TRIGGER_SUMMARY_EVENT" => {
            let data = obj.req_obj("data")?;
            EventKind::Summary(Summary {
                language: data.req_str("language", limits.max_id_chars)?,
                locale: data.req_str("locale", limits.max_id_chars)?,
                kind: data.req_str("type", limits.max_id_chars)?,
            })
        }
        other => {
            return Err(err(
                obj.field_path("name"),
                format!(
                    "\"{}\" is not a supported event (supported: {})",
                    truncate(other, 64),
                    SUPPORTED_EVENTS.join(", ")
                ),
            ));
        }
    };
    Ok(Event {
        kind,
        raw: value.to_string(),
        redactions: Default::default(),
    })
}

fn parse_participant(event: &Obj<'_>, limits: &Limits) -> Result<Participant, ParseError> {
    let p = event.req_obj("participant")?;
    let custom_fields = match p.map.get("customFields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(err(
                p.field_path("customFields"),
                format!("must be an object (got {})", type_name(other)),
            ));
        }
    };
    Ok(Participant {
        identity: p.req_str("identity", limits.max_id_chars)?,
        name: p.req_str("name", limits.max_text_chars)?,
        kind: p.req_str("type", limits.max_id_chars)?,
        custom_fields,
    })
}

fn parse_message(top: &Obj<'_>, limits: &Limits) -> Result<Message, ParseError> {
    let query = top.req_str_allow_empty("query", limits.max_query_chars)?;
    let author = match top.map.get("author") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let a = top.req_obj("author")?;
            Some(a.req_enum("type", &AUTHOR_TYPES)?)
        }
    };
    let source = top.opt_str("source", limits.max_id_chars)?;
    let experience = top.opt_str("experience", limits.max_id_chars)?;
    let language = top.opt_str("language", limits.max_id_chars)?;
    let mut missing = Vec::new();
    for (field, present) in [
        ("author", author.is_some()),
        ("source", source.is_some()),
        ("experience", experience.is_some()),
        ("language", language.is_some()),
    ] {
        if !present {
            missing.push(field);
        }
    }
    Ok(Message {
        query,
        agent_id: top.opt_str("agentId", limits.max_id_chars)?,
        author,
        source,
        experience,
        language,
        send_user_message: top.opt_bool("sendUserMessage")?,
        send_agent_message: top.opt_bool("sendAgentMessage")?,
        missing,
    })
}

mod obj;
pub mod schema;

use obj::{Obj, truncate, type_name};

#[cfg(test)]
mod tests;
