//! `/openapi.json` documents every public endpoint, and every documented operation is served.

use serde_json::Value;

use crate::helpers::*;

const EXPECTED: [(&str, &str); 24] = [
    ("post", "/agentai/api/v1/hooks/{botId}"),
    ("post", "/agentassist/api/v1/hooks/{botId}"),
    ("post", "/api/v1/hooks/{botId}"),
    ("get", "/api/v1/bots/{botId}/conversations"),
    ("get", "/api/v1/bots/{botId}/conversations/{conversationId}"),
    (
        "get",
        "/api/v1/bots/{botId}/conversations/{conversationId}/events",
    ),
    (
        "get",
        "/api/v1/bots/{botId}/conversations/{conversationId}/transcript",
    ),
    (
        "get",
        "/api/v1/bots/{botId}/conversations/{conversationId}/summaries",
    ),
    ("get", "/admin/v1/jobs"),
    ("get", "/admin/v1/jobs/{id}"),
    ("post", "/admin/v1/jobs/{id}/retry"),
    ("post", "/admin/v1/jobs/{id}/discard"),
    ("post", "/admin/v1/jobs/{id}/repoint"),
    ("post", "/admin/v1/bots/{botId}/jobs/retry"),
    ("post", "/admin/v1/jobs/retry"),
    ("post", "/admin/v1/jobs/repoint"),
    ("post", "/admin/v1/jobs/discard"),
    ("get", "/admin/v1/conversations"),
    ("get", "/admin/v1/destinations"),
    ("get", "/admin/v1/overview"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_document_lists_every_endpoint_and_every_listed_operation_is_served() {
    let app = TestApp::spawn().await;
    let (status, doc) = into_json(app.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    for (method, path) in &documented {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{botId}", BOT)
                .replace("{conversationId}", "c")
                .replace("{id}", "job_x")
        );
        let req = match method.as_str() {
            "post" => app.client.post(url),
            _ => app.client.get(url),
        };
        let (status, body) = into_json(req.header("token", token()).send().await.unwrap()).await;
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404 || body["message"] != "no such endpoint",
            "{method} {path} is documented but not routed"
        );
    }
}

/// Issue 25, item 2: every operation an app's token reaches can answer 429 (its
/// `rate_limit`), and the document says so for each.
#[tokio::test]
async fn every_rate_limited_operation_documents_its_429() {
    let app = TestApp::spawn().await;
    let (_, doc) = into_json(app.get("/openapi.json").await).await;
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !(path.starts_with("/api/v1/") || path.starts_with("/agentai/")) {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if op["responses"].get("429").is_none() {
                missing.push(format!("{method} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "no 429 documented: {missing:?}");
}

#[tokio::test]
async fn the_document_describes_the_bodies() {
    let app = TestApp::spawn().await;
    let (_, doc) = into_json(app.get("/openapi.json").await).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ConversationRecord",
        "AgentRecord",
        "Anomaly",
        "HookBody",
        "EndEvent",
        "ErrorBody",
        "StatusOk",
        "JobView",
        "AttemptRecord",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let record = &schemas["ConversationRecord"]["properties"];
    for field in [
        "startedAt",
        "durationMs",
        "agents",
        "transfers",
        "messages",
        "summaryRequests",
        "anomalies",
        "duplicateEnds",
    ] {
        assert!(
            record.get(field).is_some(),
            "ConversationRecord lacks {field}"
        );
    }
    let security: Vec<&Value> = doc["paths"]["/agentai/api/v1/hooks/{botId}"]["post"]["security"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(security.len(), 3, "auth, token and bearer");
}

/// The events wrapup sends are documented as OpenAPI 3.1 `webhooks`, with the summary's
/// fields, and an end's record documents its `summaries`.
#[tokio::test]
async fn the_events_sent_are_documented_as_webhooks() {
    let app = TestApp::spawn().await;
    let (_, doc) = into_json(app.get("/openapi.json").await).await;
    for (event, schema) in [
        ("conversation.ended", "ConversationEnded"),
        ("conversation.summarized", "ConversationSummarized"),
    ] {
        let post = &doc["webhooks"][event]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{event}: {post:#}"
        );
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        let props = &doc["components"]["schemas"][schema]["properties"];
        assert!(
            props["type"].is_object() && props["data"].is_object(),
            "{props:#}"
        );
    }
    let summary = &doc["components"]["schemas"]["StoredSummary"]["properties"];
    for field in [
        "summaryId",
        "trigger",
        "type",
        "status",
        "failureCode",
        "provider",
        "model",
        "generationTimeMs",
        "text",
        "sections",
        "messageRange",
        "createdAt",
    ] {
        assert!(summary[field].is_object(), "{field}: {summary:#}");
    }
    let data = &doc["components"]["schemas"]["SummarizedData"]["properties"];
    assert!(
        data["botId"].is_object() && data["summary"].is_object(),
        "{data:#}"
    );
    let record = &doc["components"]["schemas"]["ConversationRecord"]["properties"];
    assert!(record["summaries"].is_object(), "{record:#}");
}
