//! The OpenAPI 3.1 document. Paths come from the `#[utoipa::path]` attribute on each
//! handler, registered together with the route (utoipa-axum), so the document and the
//! routes cannot drift apart. The types below only describe bodies built as JSON
//! elsewhere; the hooks body's schema comes from its parser's module
//! (`domain::payload::schema`), with the running configuration's limits.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wrapup",
        description = "Self-hosted Agent AI hooks API: ends every conversation exactly once, durably, and runs the bot's post-conversation actions.",
        license(name = "MIT")
    ),
    modifiers(&Security, &Events),
    components(schemas(ConversationEnded, ConversationSummarized)),
    tags(
        (name = "hooks", description = "The endpoint contact-center platforms post conversation events to"),
        (name = "records", description = "Conversations, their event logs and transcripts"),
        (name = "admin", description = "Post-conversation action jobs"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "auth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("auth"))),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("token"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `conversation.ended`: what webhook actions POST (signed per Standard Webhooks) and
/// NATS actions publish when a conversation ends. The same bytes on every attempt.
#[derive(ToSchema)]
#[allow(dead_code)] // a description of `actions::envelope`'s JSON
pub struct ConversationEnded {
    /// `conversation.ended`
    #[schema(rename = "type", example = "conversation.ended")]
    kind: String,
    /// When the job was scheduled (the end), RFC 3339.
    timestamp: String,
    /// The record as it stood at the end; its `summaries` are those COMPLETED by then.
    data: crate::domain::ConversationRecord,
}

/// `conversation.summarized`: what webhook and NATS actions get when a summary is
/// COMPLETED (a FAILED one is not announced), with the same headers and id rules as
/// `conversation.ended`: `webhook-id` (NATS: `Nats-Msg-Id`) is the delivery job's id,
/// the same on every attempt.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConversationSummarized {
    /// `conversation.summarized`
    #[schema(rename = "type", example = "conversation.summarized")]
    kind: String,
    /// When the summary was stored, RFC 3339.
    timestamp: String,
    data: SummarizedData,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SummarizedData {
    bot_id: String,
    conversation_id: String,
    summary: crate::domain::summary::StoredSummary,
}

/// The events wrapup sends, as OpenAPI 3.1 `webhooks`.
struct Events;

impl Modify for Events {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::{
            ContentBuilder, HttpMethod, ObjectBuilder, PathItem, PathsBuilder, Ref,
            ResponseBuilder, Type,
        };
        let header = |name: &str, about: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(utoipa::openapi::Required::True)
                .description(Some(about))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let event = |schema: &str, summary: &str| {
            OperationBuilder::new()
                .summary(Some(summary))
                .description(Some("Webhook actions receive it as a POST signed per Standard Webhooks; NATS actions publish the same JSON to their subject with `Nats-Msg-Id` set to the delivery's id. Answer 2xx to acknowledge; other statuses are retried per the action's `retry` (410 or the action's `give_up_on`: never)."))
                .parameter(header("webhook-id", "The delivery's id (a job id): the same on every attempt, so a receiver can drop repeats"))
                .parameter(header("webhook-timestamp", "Unix seconds of this attempt"))
                .parameter(header("webhook-signature", "`v1,<base64 HMAC-SHA256 of \"id.timestamp.body\">` with the action's `whsec_` secret"))
                .request_body(Some(
                    RequestBodyBuilder::new()
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(schema)))
                                .build(),
                        )
                        .required(Some(utoipa::openapi::Required::True))
                        .build(),
                ))
                .response("2XX", ResponseBuilder::new().description("Acknowledged"))
                .build()
        };
        openapi.webhooks = Some(
            PathsBuilder::new()
                .path(
                    "conversation.ended",
                    PathItem::new(
                        HttpMethod::Post,
                        event("ConversationEnded", "A conversation ended"),
                    ),
                )
                .path(
                    "conversation.summarized",
                    PathItem::new(
                        HttpMethod::Post,
                        event("ConversationSummarized", "A summary was made"),
                    ),
                )
                .build(),
        );
    }
}

/// `{"STATUS": "OK"}`, exactly as the vendor answers.
#[derive(Serialize, ToSchema)]
pub struct StatusOk {
    #[serde(rename = "STATUS")]
    #[schema(example = "OK")]
    pub status: &'static str,
}

impl StatusOk {
    pub fn ok() -> Self {
        Self { status: "OK" }
    }
}

/// Every refusal: the vendor's error shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: u16,
    /// What is wrong and where, e.g. `events[0].participant.identity is required`.
    pub message: String,
}

/// A request to the hooks endpoint: events, or one propagated message. Its schema is
/// written by [`crate::domain::payload::schema`] from the parser's own tables and limits
/// (swapped in by [`super::openapi_json`]); this type only names it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HookBody(Value);
