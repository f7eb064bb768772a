//! The redaction corpus (`tests/corpus/redaction.txt`: contact-center utterances from
//! several countries, each with its expected redaction) sent through HTTP on both stores:
//! every message and custom field is stored exactly as expected, and no original is in any
//! stored byte (the SQLite files, every PostgreSQL row), any webhook delivered
//! (`conversation.ended`, `conversation.summarized`) or any summary.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

mod utterances {
    include!("../corpus/parse.rs");
}

const LINES_PER_CONVERSATION: usize = 60;

fn tail(receiver: &Receiver) -> String {
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"test-webhook-key-0123456789abcdef",
    );
    format!(
        "redact = [\"card\", \"email\", \"phone\", \"iban\", \"ssn\"]\n\n[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_{key}\"\n\n[bots.summary]\n",
        receiver.url
    )
}

/// Sends the corpus (a message per line; every line again in the end's custom fields), a
/// summary trigger and the end per conversation; checks what is stored; returns the
/// originals.
async fn send_and_check(app: &TestApp) -> Vec<String> {
    let corpus = utterances::lines(include_str!("../corpus/redaction.txt"));
    assert!(corpus.len() >= 300, "{}", corpus.len());
    let hooks = format!("/agentai/api/v1/hooks/{BOT}");
    let mut wrong = Vec::new();
    for (n, chunk) in corpus.chunks(LINES_PER_CONVERSATION).enumerate() {
        let c = unique(&format!("corpus{n}"));
        for (i, line) in chunk.iter().enumerate() {
            let author = if i % 2 == 0 { "USER" } else { "AGENT" };
            let message = json!({"botId": BOT, "conversationId": c, "author": {"type": author}, "query": line.input});
            let (status, body) = app.post(&hooks, "token", &token(), &message).await;
            assert_eq!(status, 200, "{}: {body}", line.input);
        }
        assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
        let mut end = seed_with(&c);
        end["events"][0]["participant"]["customFields"]["lines"] =
            chunk.iter().map(|l| l.input.clone()).collect();
        assert_eq!(app.hook(&end).await.0, 200);
        // The summaries (trigger, end), the end's webhook and two conversation.summarized.
        let jobs = app.settled_jobs(&c, 5).await;
        assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");

        let resp = app
            .client
            .get(format!(
                "{}/api/v1/bots/{BOT}/conversations/{c}/events?limit=1000",
                app.base
            ))
            .header("auth", token())
            .send()
            .await
            .unwrap();
        let log: Value = resp.json().await.unwrap();
        let events = log["events"].as_array().unwrap();
        let messages: Vec<&Value> = events.iter().filter(|e| e["name"] == "MESSAGE").collect();
        let ended = events
            .iter()
            .find(|e| e["name"] == "END_OF_CONVERSATION")
            .unwrap();
        let fields = &ended["event"]["participant"]["customFields"]["lines"];
        for (i, line) in chunk.iter().enumerate() {
            let stored = messages[i]["event"]["query"].as_str().unwrap_or_default();
            if stored != line.want {
                wrong.push(format!(
                    "{}\n   want {}\n   got  {stored}",
                    line.input, line.want
                ));
            }
            assert_eq!(fields[i], line.want.as_str(), "in customFields");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} lines:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    corpus.into_iter().flat_map(|l| l.secrets).collect()
}

/// Each original as sent and, for numbers, as its bare digits (as a model or a receiver
/// might reassemble it) unless the kept text holds those digits anyway (`(01) 234 5678`
/// is in tracking number `1Z999AA10123456784`).
fn forms(secrets: &[String]) -> Vec<String> {
    let kept: String = utterances::lines(include_str!("../corpus/redaction.txt"))
        .into_iter()
        .map(|l| l.want)
        .collect();
    let mut out = Vec::new();
    for s in secrets {
        out.push(s.clone());
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 9 && !kept.contains(&digits) {
            out.push(digits);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One automaton for every form: a byte-by-byte scan per form of a database file is
/// minutes in a debug build.
fn assert_absent(haystack: &[u8], forms: &[String], place: &str) {
    let any = regex::bytes::Regex::new(
        &forms
            .iter()
            .map(|f| regex::escape(f))
            .collect::<Vec<_>>()
            .join("|"),
    )
    .unwrap();
    if let Some(m) = any.find(haystack) {
        panic!("{} is in {place}", String::from_utf8_lossy(m.as_bytes()));
    }
}

fn check_deliveries(receiver: &Receiver, forms: &[String]) {
    let deliveries = receiver.deliveries();
    let conversations = utterances::lines(include_str!("../corpus/redaction.txt"))
        .len()
        .div_ceil(LINES_PER_CONVERSATION);
    // One conversation.ended and two conversation.summarized each.
    assert_eq!(deliveries.len(), conversations * 3);
    for d in &deliveries {
        assert_absent(&d.body, forms, "a webhook's body");
    }
}

#[tokio::test]
async fn the_corpus_is_redacted_in_every_stored_byte_and_delivery_on_sqlite() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wrapup.db");
    let app = TestApp::build()
        .config(&config_with_actions(&db, "", &tail(&receiver)))
        .spawn()
        .await;
    let forms = forms(&send_and_check(&app).await);
    check_deliveries(&receiver, &forms);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_absent(
            &std::fs::read(&path).unwrap(),
            &forms,
            &path.display().to_string(),
        );
    }
    app.stop().await;
    assert_absent(
        &std::fs::read(&db).unwrap(),
        &forms,
        "the database after the stop",
    );
}

#[tokio::test]
async fn the_corpus_is_redacted_in_every_row_and_delivery_on_postgres() {
    let receiver = Receiver::start().await;
    let (store, schema) = pg_store("wrapup_corpus", 4);
    let app = TestApp::build()
        .config(&config_for_store(&store, "", &tail(&receiver)))
        .spawn()
        .await;
    let forms = forms(&send_and_check(&app).await);
    check_deliveries(&receiver, &forms);
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    for (table, rows) in pg_tables_as_text(&pool, &schema).await {
        assert_absent(rows.as_bytes(), &forms, &table);
    }
    app.stop().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
