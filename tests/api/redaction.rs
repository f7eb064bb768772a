//! Card numbers, emails and phone numbers never reach the disk: redacted in the request,
//! before the store sees it, on both stores; found in no byte of the SQLite files (the
//! database, its write-ahead log) and no row of the PostgreSQL schema.

use serde_json::{Value, json};

use crate::helpers::*;

const REDACT: &str = "redact = [\"card\", \"email\", \"phone\"]\n\n[[bots.redact_pattern]]\nname = \"member\"\nregex = 'MBR-\\d{6}'\n";

/// The originals, as sent and as their bare digits.
const SECRETS: [&str; 6] = [
    "4111 1111 1111 1111",
    "4111111111111111",
    "jane.doe@example.com",
    "+1 415 555 0100",
    "14155550100",
    "MBR-123456",
];

async fn converse(app: &TestApp, c: &str) {
    let message = json!({"botId": BOT, "conversationId": c, "author": {"type": "USER"},
        "query": "my card is 4111 1111 1111 1111, mail jane.doe@example.com, member MBR-123456"});
    let (status, body) = app
        .post(
            &format!("/agentai/api/v1/hooks/{BOT}"),
            "token",
            &token(),
            &message,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut end = seed_with(c);
    end["events"][0]["participant"]["customFields"]["callback"] = json!("+1 415 555 0100");
    assert_eq!(app.hook(&end).await.0, 200);
}

async fn check_record(app: &TestApp, c: &str) {
    let (_, record) = app.conversation(c).await;
    assert_eq!(
        record["redactions"],
        json!({"card": 1, "email": 1, "phone": 1, "member": 1}),
        "{record}"
    );
    let resp = app
        .client
        .get(format!(
            "{}/api/v1/bots/{BOT}/conversations/{c}/transcript",
            app.base
        ))
        .header("auth", token())
        .send()
        .await
        .unwrap();
    let transcript: Value = resp.json().await.unwrap();
    let text = transcript.to_string();
    assert!(
        text.contains("my card is [card], mail [email], member [member]"),
        "{text}"
    );
}

fn assert_absent(haystack: &[u8], place: &str) {
    for secret in SECRETS {
        assert!(
            !haystack
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{secret} is in {place}"
        );
    }
}

#[tokio::test]
async fn on_sqlite_no_byte_of_the_database_or_its_log_holds_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wrapup.db");
    let config = config_with_actions(&db, "", REDACT);
    let app = TestApp::build().config(&config).spawn().await;
    let c = unique("pii");
    converse(&app, &c).await;
    check_record(&app, &c).await;
    // While running (the write-ahead log holds the newest pages) and after the stop.
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_absent(&std::fs::read(&path).unwrap(), &path.display().to_string());
        files += 1;
    }
    assert!(files >= 2, "the database and its log");
    app.stop().await;
    assert_absent(&std::fs::read(&db).unwrap(), "the database after the stop");

    // The control: without `redact` the same conversation's card number is on disk, so
    // the scan above would have found it.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_db = plain_dir.path().join("wrapup.db");
    let plain = TestApp::build()
        .config(&config_with_actions(&plain_db, "", ""))
        .spawn()
        .await;
    converse(&plain, &c).await;
    plain.stop().await;
    let bytes = std::fs::read(&plain_db).unwrap();
    assert!(
        bytes
            .windows(SECRETS[0].len())
            .any(|w| w == SECRETS[0].as_bytes())
    );
}

#[tokio::test]
async fn on_postgres_no_row_holds_the_originals() {
    let (store, schema) = pg_store("wrapup_pii", 4);
    let config = config_for_store(&store, "", REDACT);
    let app = TestApp::build().config(&config).spawn().await;
    let c = unique("pii");
    converse(&app, &c).await;
    check_record(&app, &c).await;
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    for (table, rows) in pg_tables_as_text(&pool, &schema).await {
        assert_absent(rows.as_bytes(), &table);
    }
    app.stop().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

#[test]
fn redaction_settings_are_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let check = |tail: &str| -> String {
        let text = config_with_actions(&dir.path().join("w.db"), "", tail);
        write_config(dir.path(), &text);
        let file = wrapup::config::parse(&text).unwrap();
        match wrapup::config::validate(&file, dir.path(), |k| {
            (k == ADMIN_TOKEN_ENV).then(|| ADMIN_TOKEN.to_owned())
        }) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(check(REDACT), "");
    let e = check("redact = [\"card\", \"passport\"]\n");
    assert!(e.contains("redact[1]") && e.contains("passport"), "{e}");
    let e = check("[[bots.redact_pattern]]\nname = \"x\"\nregex = \"(unclosed\"\n");
    assert!(e.contains("redact_pattern[0].regex"), "{e}");
    for pattern in ["a*", "\\\\b", "x\\\\b|\\\\b"] {
        let e = check(&format!(
            "[[bots.redact_pattern]]\nname = \"x\"\nregex = \"{pattern}\"\n"
        ));
        assert!(e.contains("empty"), "{pattern}: {e}");
    }
    let e = check("[[bots.redact_pattern]]\nname = \"card\"\nregex = \"x\"\n");
    assert!(e.contains("redact_pattern[0].name"), "{e}");
}

/// The first high finding: an SSN in Arabic-Indic digits panicked the handler (a byte
/// slice inside a two-byte digit). Now every script is read, and nothing is dropped.
#[tokio::test]
async fn numbers_in_any_script_keys_and_numbers_are_redacted_and_never_crash_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let tail = "redact = [\"card\", \"email\", \"phone\", \"iban\", \"ssn\"]\n";
    let config = config_with_actions(&dir.path().join("w.db"), "", tail);
    let app = TestApp::build().config(&config).spawn().await;
    let c = unique("scripts");
    for query in [
        "SSN ١٢٣-٤٥-٦٧٨٩ thanks",
        "SSN １２３－４５－６７８９",
        "My IBAN is DE89 3704 0044 0532 0130 00 thanks",
        "it's 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        "call me on 0412 345 678",
    ] {
        let message =
            json!({"botId": BOT, "conversationId": c, "author": {"type": "USER"}, "query": query});
        let (status, body) = app
            .post(
                &format!("/agentai/api/v1/hooks/{BOT}"),
                "token",
                &token(),
                &message,
            )
            .await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    let mut end = seed_with(&c);
    end["events"][0]["participant"]["customFields"] = json!({
        "accountNumber": 4111111111111111u64,
        "jane.doe@example.com": "x",
        "caller": {"identity": "4012 8888 8888 1881"},
    });
    assert_eq!(app.hook(&end).await.0, 200);
    let (_, record) = app.conversation(&c).await;
    assert_eq!(
        record["redactions"],
        json!({"ssn": 2, "iban": 1, "card": 3, "phone": 1, "email": 1}),
        "{record}"
    );
    let resp = app
        .client
        .get(format!(
            "{}/api/v1/bots/{BOT}/conversations/{c}/events",
            app.base
        ))
        .header("auth", token())
        .send()
        .await
        .unwrap();
    let events = resp.text().await.unwrap();
    for kept in [
        "SSN [ssn] thanks",
        "My IBAN is [iban] thanks",
        "it's [card]",
        "call me on [phone]",
        "\"accountNumber\":\"[card]\"",
        "\"[email]\":\"x\"",
        "\"identity\":\"[card]\"",
    ] {
        assert!(events.contains(kept), "{kept} in {events}");
    }
    for secret in [
        "٦٧٨٩",
        "６７８９",
        "0130 00",
        "1 1 1 1",
        "345 678",
        "4111111111111111",
        "jane.doe",
        "1881",
    ] {
        assert!(!events.contains(secret), "{secret} in {events}");
    }
    app.stop().await;
}
