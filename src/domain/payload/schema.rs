//! The hooks body as JSON Schema (OpenAPI 3.1), written from the parser's own tables and
//! [`Limits`]: the published contract is exactly as strict as [`parse_request`] (the test
//! suite has Schemathesis generate bodies from it in positive mode, and every one must be
//! accepted). Where JSON Schema cannot say what the parser does, the schema is the
//! stricter of the two and says the rest in a description:
//! - choices (`transfertype`, `transition`, `author.type`, `"true"`/`"false"`) are
//!   listed as written; the parser takes any case, and surrounding blanks;
//! - a body with both `events` and `query` is refused (400 naming `query`), as the
//!   `oneOf` says; `query: null` is no message;
//! - `events` may hold transfers and summary triggers before an end (`[transfer, end]`)
//!   but nothing after it; JSON Schema cannot say where in an array an item may be, so
//!   the schema allows ends alone, or the other events alone.
//!
//! Unknown fields are allowed everywhere (the vendor's clients send them; they are kept in
//! the event log).

use serde_json::{Value, json};

use super::{AUTHOR_TYPES, Limits, SUPPORTED_EVENTS, TRANSFER_TYPES, TRANSITIONS};

/// No NUL anywhere (the parser refuses one in any string).
const NO_NUL: &str = "^[^\\u0000]*$";
/// No NUL, and one character that is not blank: the parser trims with Unicode's
/// White_Space (which has U+0085; ECMAScript's and Python's `\s` cover the rest).
const NOT_BLANK: &str = "^[^\\u0000]*[^\\s\\u0000\\u0085][^\\u0000]*$";

/// The names of a parser table's choices.
fn names<T>(table: &[(&'static str, T)]) -> Vec<&'static str> {
    table.iter().map(|(n, _)| *n).collect()
}

/// The hooks body's schemas, by component name; `HookBody` is the request body.
pub fn components(l: &Limits) -> Vec<(&'static str, Value)> {
    let required = |max: usize| json!({"type": "string", "maxLength": max, "pattern": NOT_BLANK});
    let optional =
        |max: usize| json!({"type": ["string", "null"], "maxLength": max, "pattern": NO_NUL});
    let id = required(l.max_id_chars);
    let text = required(l.max_text_chars);
    let choice = |names: &[&str], any_case: &str| json!({"type": "string", "enum": names, "description": format!("{any_case} (any case is accepted)")});
    let boolean = json!({
        "anyOf": [{"type": "boolean"}, {"type": "null"}, {"type": "string", "enum": ["true", "false"]}],
        "description": "true or false; the strings \"true\" and \"false\" (any case) too, as the vendor's clients send them"
    });
    let name = |event: &str| json!({"type": "string", "const": event});
    let r = |component: &str| json!({"$ref": format!("#/components/schemas/{component}")});
    debug_assert_eq!(SUPPORTED_EVENTS.len(), 3);
    vec![
        (
            "HookBody",
            json!({
                "description": "Events, or one propagated message (not both).",
                "oneOf": [r("HookEvents"), r("HookMessage")]
            }),
        ),
        (
            "HookEvents",
            json!({
                "type": "object",
                "required": ["botId", "conversationId", "events"],
                "properties": {
                    "botId": {"description": "The bot in the path", "type": "string", "maxLength": l.max_id_chars, "pattern": NOT_BLANK, "example": "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx"},
                    "conversationId": {"type": "string", "maxLength": l.max_id_chars, "pattern": NOT_BLANK, "example": "atesta-mlxxxxxx"},
                    "events": {
                        "description": "Processed in order; stored together or not at all. Events before an END_OF_CONVERSATION in the same request are taken too ([transfer, end]), but none after it (400): JSON Schema cannot say where in an array an item may be, so this schema says the stricter: transfers and summary triggers, or ends.",
                        "type": "array",
                        "minItems": 1,
                        "maxItems": l.max_events,
                        "anyOf": [
                            {"items": {"oneOf": [r("TransferEvent"), r("SummaryEvent")]}},
                            {"items": r("EndEvent")}
                        ]
                    },
                    "query": {"type": "null", "description": "Not with events"}
                }
            }),
        ),
        (
            "EndEvent",
            json!({
                "type": "object",
                "required": ["name", "reason", "language", "experience", "participant"],
                "properties": {
                    "name": name("END_OF_CONVERSATION"),
                    "reason": {"type": "string", "maxLength": l.max_text_chars, "pattern": NOT_BLANK, "example": "agent_initiated"},
                    "language": {"type": "string", "maxLength": l.max_id_chars, "pattern": NOT_BLANK, "example": "en"},
                    "experience": {"type": "string", "maxLength": l.max_id_chars, "pattern": NOT_BLANK, "example": "voice"},
                    "participant": r("Participant")
                }
            }),
        ),
        (
            "TransferEvent",
            json!({
                "type": "object",
                "required": ["name", "transfertype", "transition", "experience", "participant"],
                "properties": {
                    "name": name("INTERNAL_TRANSFER_EVENT"),
                    "transfertype": choice(&names(&TRANSFER_TYPES), "NA, COLD, WARM or redial"),
                    "transition": choice(&names(&TRANSITIONS), "entry or exit"),
                    "isExtAD": boolean,
                    "language": optional(l.max_id_chars),
                    "experience": id,
                    "participant": r("Participant"),
                    "reason": optional(l.max_text_chars)
                }
            }),
        ),
        (
            "SummaryEvent",
            json!({
                "type": "object",
                "required": ["name", "data"],
                "properties": {
                    "name": name("TRIGGER_SUMMARY_EVENT"),
                    "data": {
                        "type": "object",
                        "required": ["language", "locale", "type"],
                        "properties": {"language": id, "locale": id, "type": id}
                    }
                }
            }),
        ),
        (
            "Participant",
            json!({
                "type": "object",
                "required": ["identity", "name", "type"],
                "properties": {
                    "identity": id,
                    "name": text,
                    "type": {"type": "string", "maxLength": l.max_id_chars, "pattern": NOT_BLANK, "example": "agent"},
                    "customFields": {"type": ["object", "null"], "description": "Any keys (agentEmail, queueId, queueName, …), kept as they came"}
                }
            }),
        ),
        (
            "HookMessage",
            json!({
                "type": "object",
                "description": "A propagated message; only query (with the ids) is required.",
                "required": ["botId", "conversationId", "query"],
                "properties": {
                    "botId": id,
                    "conversationId": id,
                    "query": {"type": "string", "maxLength": l.max_query_chars, "pattern": NO_NUL},
                    "events": {"type": "null", "description": "Not with query"},
                    "agentId": optional(l.max_id_chars),
                    "author": {
                        "type": ["object", "null"],
                        "required": ["type"],
                        "properties": {"type": choice(&names(&AUTHOR_TYPES), "USER or AGENT")}
                    },
                    "source": optional(l.max_id_chars),
                    "experience": optional(l.max_id_chars),
                    "language": optional(l.max_id_chars),
                    "sendUserMessage": boolean,
                    "sendAgentMessage": boolean
                }
            }),
        ),
    ]
}
