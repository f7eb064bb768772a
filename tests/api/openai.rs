//! `provider = "openai"` against a real HTTP server speaking the Chat Completions
//! protocol (`chat::ChatServer`): the request's shape (no raw card number leaves), a
//! COMPLETED summary and its `conversation.summarized` delivery, the end's payload
//! carrying it, a timeout, a 429 with `Retry-After`, 500s until the attempts run out
//! (FAILED, then an operator's retry replaces it), and malformed answers (FAILED at once).

use std::time::Duration;

use serde_json::{Value, json};

use crate::chat::{ChatServer, Reply, sections_json};
use crate::helpers::*;
use crate::receiver::Receiver;

const CARD: &str = "4111 1111 1111 1111";

/// The demo bot with card redaction, a webhook (when `hook` is given) and an `openai`
/// summary with `timeout` and `retry`.
fn tail(chat: &ChatServer, hook: Option<&Receiver>, timeout: &str, retry: &str) -> String {
    let webhook = hook.map_or(String::new(), |r| {
        format!(
            "[[bots.on_end]]\nkind = \"webhook\"\nname = \"crm\"\nurl = \"{}\"\nsecret = \"{}\"\ntimeout = \"2s\"\nretry = {{ max_attempts = 3, initial_delay = \"100ms\", max_delay = \"400ms\" }}\n\n",
            r.url,
            whsec()
        )
    });
    format!(
        "redact = [\"card\"]\n\n{webhook}[bots.summary]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"test-model\"\napi_key_env = \"{OPENAI_KEY_ENV}\"\ntimeout = \"{timeout}\"\nmax_tokens = 300\nat_end = false\nretry = {retry}\n",
        chat.base_url
    )
}

/// A server with `tail`, on SQLite or (in a schema of its own) on PostgreSQL; the schema
/// is dropped by [`finish`].
async fn spawn(tail: &str, postgres: bool) -> (TestApp, Option<String>) {
    if !postgres {
        return (TestApp::build().actions(tail).spawn().await, None);
    }
    let (store, schema) = pg_store("wrapup_openai", 4);
    let app = TestApp::build()
        .config(&config_for_store(&store, "", tail))
        .spawn()
        .await;
    (app, Some(schema))
}

async fn finish(app: TestApp, schema: Option<String>) {
    app.stop().await;
    if let Some(schema) = schema {
        let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
}

const FAST: &str = "{ max_attempts = 3, initial_delay = \"100ms\", max_delay = \"400ms\" }";

/// An agent joins, the customer and the agent speak (a card number among it), and the
/// customer's platform asks for a summary.
async fn converse(app: &TestApp, c: &str) {
    let hooks = format!("/agentai/api/v1/hooks/{BOT}");
    let entry = event_body(c, json!([transfer("NA", "entry", "agent1")]));
    assert_eq!(app.hook(&entry).await.0, 200);
    for (author, text) in [
        (
            "USER",
            format!("I was charged twice for invoice INV-20931 on card {CARD}."),
        ),
        (
            "AGENT",
            "I see two payments of 49.99; I refunded one.".into(),
        ),
        ("USER", "Thank you!".into()),
    ] {
        let body =
            json!({"botId": BOT, "conversationId": c, "query": text, "author": {"type": author}});
        let (status, answer) = app.post(&hooks, "token", &token(), &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(app.hook(&event_body(c, json!([summary()]))).await.0, 200);
}

async fn summaries(app: &TestApp, c: &str) -> Vec<Value> {
    let (status, body) = app.conversation(c).await;
    assert_eq!(status, 200, "{body}");
    body["summaries"].as_array().cloned().unwrap_or_default()
}

/// Waits for the conversation's summary job to be in `state`.
async fn summary_job(app: &TestApp, c: &str, state: &str) -> Value {
    eventually(&format!("the summary job is {state}"), || async {
        app.jobs_of(c)
            .await
            .into_iter()
            .find(|j| j["kind"] == "summary" && j["state"] == state)
    })
    .await
}

async fn job(app: &TestApp, id: &str) -> Value {
    let (status, body) = app
        .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_summary_from_a_chat_completions_server_is_stored_announced_and_carried_by_the_end() {
    summarized_announced_and_carried(false).await;
}

#[tokio::test]
async fn on_postgres_a_summary_is_stored_announced_and_carried_by_the_end() {
    summarized_announced_and_carried(true).await;
}

async fn summarized_announced_and_carried(postgres: bool) {
    let chat = ChatServer::start().await;
    let hook = Receiver::start().await;
    // On PostgreSQL the limit goes under OpenAI's current name (`max_tokens_field`).
    let mut config = tail(&chat, Some(&hook), "5s", FAST);
    let field = if postgres {
        config = config.replace(
            "max_tokens = 300\n",
            "max_tokens = 300\nmax_tokens_field = \"max_completion_tokens\"\n",
        );
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let (app, schema) = spawn(&config, postgres).await;
    let c = unique("openai");
    chat.script(vec![sections_json(
        "The customer was charged twice for invoice INV-20931 on card [card].",
    )]);
    converse(&app, &c).await;
    summary_job(&app, &c, "succeeded").await;

    // The request: the protocol's shape, the key, the redacted transcript.
    let requests = chat.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["authorization"], format!("Bearer {OPENAI_KEY}"));
    assert_eq!(body["model"], "test-model");
    assert_eq!(body[field], 300);
    let other = ["max_tokens", "max_completion_tokens"]
        .into_iter()
        .find(|f| *f != field);
    assert!(body.get(other.unwrap()).is_none(), "{body}");
    assert_eq!(body["response_format"]["type"], "json_object");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("\"situation\"")
    );
    assert_eq!(messages[1]["role"], "user");
    let transcript = messages[1]["content"].as_str().unwrap();
    assert!(
        transcript.contains("Customer: I was charged twice for invoice INV-20931 on card [card].")
            && transcript.contains("Agent: I see two payments of 49.99")
            && transcript.contains("Customer: Thank you!"),
        "{transcript}"
    );
    let raw = serde_json::to_string(&requests[0].1).unwrap();
    assert!(
        !raw.contains("4111") && !raw.contains(&CARD.replace(' ', "")),
        "no raw card number leaves: {raw}"
    );

    // Stored COMPLETED, with the answer's sections and model, on the record too.
    let list = summaries(&app, &c).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    let s = &list[0];
    assert_eq!(s["status"], "COMPLETED");
    assert_eq!(s["failureCode"], Value::Null);
    assert_eq!(s["provider"], "openai");
    assert_eq!(s["model"], "test-model-2026");
    assert_eq!(s["trigger"], "TRIGGER_SUMMARY_EVENT");
    assert_eq!(s["type"], "interim");
    assert_eq!(s["messages"], 3);
    assert!(s["generationTimeMs"].as_u64().is_some());
    assert_eq!(s["sections"]["resolution"], "A refund of 49.99 was issued.");
    assert!(
        s["text"]
            .as_str()
            .unwrap()
            .contains("INV-20931 on card [card]")
    );

    // `conversation.summarized` to the webhook: signed, its id the delivery job's.
    let delivered = eventually("the summary is announced", || async {
        hook.deliveries().into_iter().find(|d| {
            serde_json::from_slice::<Value>(&d.body).unwrap()["type"] == "conversation.summarized"
        })
    })
    .await;
    let verifier = standardwebhooks::Webhook::new(&whsec()).unwrap();
    verifier
        .verify(&delivered.body, &delivered.headers)
        .expect("the signature verifies");
    let event: Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(event["data"]["conversationId"], c.as_str());
    assert_eq!(event["data"]["botId"], BOT);
    assert_eq!(event["data"]["summary"], *s);
    let jobs = app.jobs_of(&c).await;
    let delivery = jobs
        .iter()
        .find(|j| j["id"] == delivered.id().as_str())
        .expect("the delivery is a job");
    assert!(
        delivery["action"]
            .as_str()
            .unwrap()
            .starts_with("crm@summary@"),
        "{delivery}"
    );

    // The end's payload carries the summary completed before it.
    assert_eq!(app.end(&c).await.0, 200);
    let ended = eventually("the end is delivered", || async {
        hook.deliveries().into_iter().find(|d| {
            serde_json::from_slice::<Value>(&d.body).unwrap()["type"] == "conversation.ended"
        })
    })
    .await;
    let ended: Value = serde_json::from_slice(&ended.body).unwrap();
    assert_eq!(ended["data"]["summaries"], json!([s]));
    // Exactly one announcement, one summary request.
    let jobs = app.settled_jobs(&c, 3).await;
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    assert_eq!(chat.requests().len(), 1);
    assert_eq!(hook.deliveries().len(), 2);
    finish(app, schema).await;
}

#[tokio::test]
async fn a_timeout_is_retried_and_the_next_answer_is_stored() {
    let chat = ChatServer::start().await;
    let app = TestApp::build()
        .actions(&tail(&chat, None, "1s", FAST))
        .spawn()
        .await;
    let c = unique("openai-slow");
    chat.script(vec![Reply::Slow(
        Duration::from_secs(4),
        Box::new(sections_json("Too late.")),
    )]);
    converse(&app, &c).await;
    let done = summary_job(&app, &c, "succeeded").await;
    let log = job(&app, done["id"].as_str().unwrap()).await;
    let attempts = log["attemptLog"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{log:#}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{log:#}"
    );
    let list = summaries(&app, &c).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "COMPLETED");
    assert_eq!(
        list[0]["sections"]["situation"],
        "The customer asked for help."
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let chat = ChatServer::start().await;
    let retry = "{ max_attempts = 3, initial_delay = \"100ms\", max_delay = \"1m\" }";
    let app = TestApp::build()
        .actions(&tail(&chat, None, "5s", retry))
        .spawn()
        .await;
    let c = unique("openai-429");
    chat.script(vec![Reply::Status(429, Some(30))]);
    converse(&app, &c).await;
    let waiting = eventually("the first attempt is recorded", || async {
        let jobs = app.jobs_of(&c).await;
        let j = jobs.into_iter().find(|j| j["kind"] == "summary")?;
        (j["attempts"] == 1 && j["state"] == "pending").then_some(j)
    })
    .await;
    let log = job(&app, waiting["id"].as_str().unwrap()).await;
    let attempt = &log["attemptLog"][0];
    assert_eq!(attempt["statusCode"], 429, "{log:#}");
    let started = chrono_millis(attempt["startedAt"].as_str().unwrap());
    let due = chrono_millis(log["dueAt"].as_str().unwrap());
    assert!(
        (29_000..=32_000).contains(&(due - started)),
        "due {} ms after the attempt",
        due - started
    );
    assert!(summaries(&app, &c).await.is_empty());
    app.advance(Duration::from_secs(31));
    summary_job(&app, &c, "succeeded").await;
    assert_eq!(summaries(&app, &c).await[0]["status"], "COMPLETED");
    assert_eq!(chat.requests().len(), 2);
}

fn chrono_millis(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
}

#[tokio::test]
async fn server_errors_until_the_attempts_run_out_store_a_failed_summary_that_a_retry_replaces() {
    failed_then_replaced(false).await;
}

#[tokio::test]
async fn on_postgres_a_failed_summary_is_replaced_by_a_retry_that_succeeds() {
    failed_then_replaced(true).await;
}

async fn failed_then_replaced(postgres: bool) {
    let chat = ChatServer::start().await;
    let hook = Receiver::start().await;
    let retry = "{ max_attempts = 2, initial_delay = \"100ms\", max_delay = \"200ms\" }";
    let (app, schema) = spawn(&tail(&chat, Some(&hook), "5s", retry), postgres).await;
    let c = unique("openai-500");
    chat.always(Some(Reply::Status(500, None)));
    converse(&app, &c).await;
    let dead = summary_job(&app, &c, "dead").await;
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["lastError"]
            .as_str()
            .unwrap()
            .contains("PROVIDER_ERROR"),
        "{dead}"
    );
    let list = summaries(&app, &c).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "FAILED");
    assert_eq!(list[0]["failureCode"], "PROVIDER_ERROR");
    assert_eq!(list[0]["text"], "");
    assert_eq!(list[0]["sections"], Value::Null);
    // A FAILED summary is not announced.
    assert!(hook.deliveries().is_empty());

    // A summary job cannot be re-pointed to a webhook (it would send a record that is
    // not an end's): a conflict with the job (the action exists); to the bot's summary it
    // can.
    let id = dead["id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/admin/v1/jobs/{id}/repoint"),
            "bearer",
            ADMIN_TOKEN,
            &json!({"action": "crm"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("\"summary\""),
        "{body}"
    );

    // The server recovers; an operator retries the dead job (by id on one store, on the
    // other as every dead job of the bot's `summary`): COMPLETED replaces FAILED, and now
    // it is announced.
    chat.always(None);
    let retry = if postgres {
        json!({"bot": BOT, "action": "summary", "since": "2020-01-01T00:00:00Z"})
    } else {
        json!({"ids": [id]})
    };
    let (status, body) = app
        .post("/admin/v1/jobs/retry", "bearer", ADMIN_TOKEN, &retry)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 1, "{body}");
    eventually_within(
        Duration::from_secs(10),
        "the retried summary is COMPLETED",
        || async {
            let list = summaries(&app, &c).await;
            (list.len() == 1 && list[0]["status"] == "COMPLETED").then_some(())
        },
    )
    .await;
    eventually("the summary is announced", || async {
        (hook.deliveries().len() == 1).then_some(())
    })
    .await;
    assert_eq!(chat.requests().len(), 3);
    finish(app, schema).await;
}

#[tokio::test]
async fn malformed_answers_are_failed_at_once_with_their_failure_code() {
    let chat = ChatServer::start().await;
    let app = TestApp::build()
        .actions(&tail(&chat, None, "5s", FAST))
        .spawn()
        .await;
    for (reply, code) in [
        (Reply::Raw("{\"choices\": [".into()), "INVALID_RESPONSE"),
        (Reply::Raw("{\"choices\": []}".into()), "INVALID_RESPONSE"),
        (
            Reply::Content("The customer was charged twice.".into()),
            "INVALID_SUMMARY",
        ),
        (
            Reply::Content("{\"situation\": [\"a list\"]}".into()),
            "INVALID_SUMMARY",
        ),
        (Reply::Status(401, None), "PROVIDER_REFUSED"),
    ] {
        let c = unique("openai-bad");
        chat.script(vec![reply.clone()]);
        converse(&app, &c).await;
        let dead = summary_job(&app, &c, "dead").await;
        assert_eq!(dead["attempts"], 1, "{reply:?}: {dead}");
        let list = summaries(&app, &c).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["status"], "FAILED", "{reply:?}");
        assert_eq!(list[0]["failureCode"], code, "{reply:?}");
    }
    // Still serving: the next conversation is summarized.
    let c = unique("openai-good");
    converse(&app, &c).await;
    summary_job(&app, &c, "succeeded").await;
    assert_eq!(summaries(&app, &c).await[0]["status"], "COMPLETED");
}

#[tokio::test]
async fn a_conversation_without_messages_is_failed_without_asking_the_model() {
    let chat = ChatServer::start().await;
    let app = TestApp::build()
        .actions(&tail(&chat, None, "5s", FAST))
        .spawn()
        .await;
    let c = unique("openai-empty");
    assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
    summary_job(&app, &c, "succeeded").await;
    let list = summaries(&app, &c).await;
    assert_eq!(list[0]["status"], "FAILED");
    assert_eq!(list[0]["failureCode"], "INSUFFICIENT_CONVERSATION_CONTENT");
    assert!(chat.requests().is_empty());
}

/// What a hostile or broken provider cannot do: put a card number it restated into a
/// stored summary, have its echo of the API key recorded, turn a large error page into a
/// failure for good, or (on PostgreSQL, whose text cannot hold NUL) keep a job from
/// recording its attempt.
#[tokio::test]
async fn a_hostile_provider_cannot_leak_the_key_or_a_card_number_or_stall_a_job() {
    let chat = ChatServer::start().await;
    let (app, schema) = spawn(&tail(&chat, None, "5s", FAST), true).await;
    let c = unique("openai-hostile");
    chat.script(vec![Reply::StatusBody(
        401,
        format!("{{\"you_sent\": \"Bearer {OPENAI_KEY}\"}}"),
    )]);
    converse(&app, &c).await;
    let dead = summary_job(&app, &c, "dead").await;
    let shown = job(&app, dead["id"].as_str().unwrap()).await.to_string();
    assert!(!shown.contains(OPENAI_KEY), "{shown}");
    assert!(shown.contains("Bearer ***"), "{shown}");

    // A 2 MiB error page, then a NUL in an error: retried, recorded; then a model that
    // restates the card number it was given as a redaction marker, without spaces.
    let c = unique("openai-hostile");
    chat.script(vec![
        Reply::StatusBody(503, "<html>".repeat(350_000)),
        Reply::StatusBody(500, "{\"error\": \"bad\u{0}thing\"}".into()),
        sections_json("The card 4111111111111111 was charged twice; mail jane@example.com."),
    ]);
    converse(&app, &c).await;
    let done = summary_job(&app, &c, "succeeded").await;
    let log = job(&app, done["id"].as_str().unwrap()).await;
    let attempts = log["attemptLog"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{log:#}");
    assert_eq!(attempts[0]["statusCode"], 503);
    assert_eq!(attempts[1]["statusCode"], 500);
    assert!(attempts[1]["response"].as_str().unwrap().contains("bad"));
    let list = summaries(&app, &c).await;
    let situation = list[0]["sections"]["situation"].as_str().unwrap();
    assert_eq!(
        situation,
        "The card [card] was charged twice; mail jane@example.com."
    );
    assert!(!list[0]["text"].as_str().unwrap().contains("4111"));
    finish(app, schema).await;
}
