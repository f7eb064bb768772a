//! The built-in extractive summary on six hand-written contact-center conversations
//! (`tests/fixtures/transcripts/`): for each, its named key facts appear in the summary,
//! the situation quotes the customer's problem, and the text stays within its bound.

use wrapup::domain::summary::{MAX_CHARS, Speaker, Turn, extractive};

#[test]
fn every_fixture_keeps_its_key_facts_within_the_length_bound() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcripts");
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let turns: Vec<Turn> = fixture["turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Turn {
                speaker: if t[0] == "customer" {
                    Speaker::Customer
                } else {
                    Speaker::Agent
                },
                text: t[1].as_str().unwrap().to_owned(),
            })
            .collect();
        let all: usize = turns.iter().map(|t| t.text.chars().count()).sum();
        let summary = extractive(&turns, &|| false).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        println!("== {name}\n{}\n", summary.text);
        for fact in fixture["facts"].as_array().unwrap() {
            let fact = fact.as_str().unwrap();
            assert!(
                summary.text.to_lowercase().contains(&fact.to_lowercase()),
                "{name}: {fact:?} is missing from\n{}",
                summary.text
            );
        }
        assert!(summary.text.chars().count() <= MAX_CHARS);
        // It selects: the sections hold less than the conversation said.
        let s = &summary.sections;
        let kept = [&s.situation, &s.action, &s.resolution, &s.satisfaction]
            .iter()
            .map(|x| x.chars().count())
            .sum::<usize>();
        println!("{name}: {kept} of {all} characters kept");
        assert!(kept * 100 < all * 90, "{name}: {kept} of {all}");
        for section in [&summary.sections.situation, &summary.sections.resolution] {
            assert!(!section.is_empty(), "{name}: {summary:?}");
        }
        // The situation opens with the customer's first statement of the problem.
        let opening = summary
            .sections
            .situation
            .split_inclusive(['.', '?', '!'])
            .next()
            .unwrap();
        assert!(turns[0].text.contains(opening), "{name}: {opening}");
        seen += 1;
    }
    assert_eq!(seen, 6);
}

/// A conversation of the billing fixture through the hooks API, with a trigger before the
/// end: the trigger's summary (interim, up to it) and the end's (final) are stored by jobs
/// from the outbox and read back from the records API.
#[tokio::test]
async fn a_trigger_and_the_end_each_get_one_summary_through_the_outbox() {
    use serde_json::json;

    use crate::helpers::*;

    let app = TestApp::build()
        .actions("redact = [\"card\"]\n\n[bots.summary]\n")
        .spawn()
        .await;
    let c = unique("summary");
    let hooks = format!("/agentai/api/v1/hooks/{BOT}");
    let say = |author: &str, text: &str| json!({"botId": BOT, "conversationId": c, "query": text, "author": {"type": author}});
    assert_eq!(
        app.hook(&event_body(&c, json!([transfer("NA", "entry", "agent1")])))
            .await
            .0,
        200
    );
    for (author, text) in [
        (
            "USER",
            "Hello. I was charged twice for invoice INV-20931 on card 4111 1111 1111 1111.",
        ),
        (
            "AGENT",
            "I can see two payments of 49.99 against invoice INV-20931.",
        ),
        ("AGENT", "I have issued a refund of 49.99 to your card."),
        ("USER", "Thank you, that's great."),
    ] {
        let (status, body) = app
            .post(&hooks, "token", &token(), &say(author, text))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
    let (status, body) = app
        .post(
            &hooks,
            "token",
            &token(),
            &say("USER", "One more thing: my new email."),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.end(&c).await.0, 200);

    let url = format!("{}/api/v1/bots/{BOT}/conversations/{c}/summaries", app.base);
    let summaries = eventually("both summaries are stored", || async {
        let resp = app
            .client
            .get(&url)
            .header("auth", token())
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        let list = body["summaries"].as_array().cloned().unwrap_or_default();
        (list.len() == 2).then_some(list)
    })
    .await;
    let interim = summaries.iter().find(|s| s["type"] == "interim").unwrap();
    let last = summaries.iter().find(|s| s["type"] == "final").unwrap();
    assert_eq!(interim["trigger"], "TRIGGER_SUMMARY_EVENT");
    assert_eq!(interim["status"], "COMPLETED");
    assert_eq!(interim["provider"], "extractive");
    assert_eq!(interim["messages"], 4, "up to the trigger: {interim}");
    assert_eq!(last["trigger"], "END_OF_CONVERSATION");
    assert_eq!(last["messages"], 5, "{last}");
    let text = interim["text"].as_str().unwrap();
    assert!(
        text.contains("INV-20931") && text.contains("refund"),
        "{text}"
    );
    // Made from the redacted transcript.
    assert!(text.contains("[card]") && !text.contains("4111"), "{text}");
    assert!(
        interim["sections"]["situation"]
            .as_str()
            .unwrap()
            .contains("charged twice")
    );

    // Two summary jobs, each done once.
    let jobs = app.settled_jobs(&c, 2).await;
    let mut names: Vec<&str> = jobs.iter().map(|j| j["action"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names[1], "summary@end");
    assert!(names[0].starts_with("summary@"), "{names:?}");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    let _ = say;

    // The console's conversation page shows them.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirects
        .post(format!("{}/console/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = app
        .client
        .get(format!("{}/console/bots/{BOT}/conversations/{c}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h2>Summaries</h2>"), "{page}");
    assert!(page.contains("interim") && page.contains("INV-20931"));
}

/// A NATS action gets `conversation.summarized` (its `Nats-Msg-Id` the delivery job's id)
/// when a trigger's summary is stored, and then `conversation.ended` with the summary in
/// its record.
#[tokio::test]
async fn a_nats_action_gets_the_summary_then_the_end_carrying_it() {
    use serde_json::{Value, json};

    use crate::helpers::*;

    let (stream, js, run) = test_stream("wrapuptest").await;
    let tail = format!(
        "[[bots.on_end]]\nkind = \"nats\"\nname = \"bus\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"wrapuptest.{run}.{{botId}}.{{event}}\"\n\n[bots.summary]\nat_end = false\n"
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("summary-nats");
    let hooks = format!("/agentai/api/v1/hooks/{BOT}");
    for text in [
        "My router R-7781 drops the connection every evening.",
        "I have reset the line and booked an engineer for Tuesday.",
    ] {
        let body = json!({"botId": BOT, "conversationId": c, "query": text});
        assert_eq!(app.post(&hooks, "token", &token(), &body).await.0, 200);
    }
    assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
    // The summary job, then its announcement.
    let jobs = app.settled_jobs(&c, 2).await;
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:#?}");
    let announce = jobs.iter().find(|j| j["kind"] == "nats").unwrap();
    assert_eq!(announce["action"], "bus@summary@3");
    assert_eq!(app.end(&c).await.0, 200);
    app.settled_jobs(&c, 3).await;

    let messages = stream_messages(&stream).await;
    assert_eq!(messages.len(), 2);
    let bodies: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(bodies[0]["type"], "conversation.summarized");
    // `{event}` in the subject: one subject per event.
    assert_eq!(
        messages[0].subject.as_str(),
        format!("wrapuptest.{run}.{BOT}.conversation.summarized")
    );
    assert_eq!(
        messages[1].subject.as_str(),
        format!("wrapuptest.{run}.{BOT}.conversation.ended")
    );
    let headers = messages[0].headers.as_ref().unwrap();
    assert_eq!(
        headers.get("Wrapup-Event").unwrap().as_str(),
        "conversation.summarized"
    );
    let id = messages[0]
        .headers
        .as_ref()
        .unwrap()
        .get("Nats-Msg-Id")
        .unwrap();
    assert_eq!(id.as_str(), announce["id"].as_str().unwrap());
    let summary = &bodies[0]["data"]["summary"];
    assert!(
        summary["text"].as_str().unwrap().contains("R-7781"),
        "{summary}"
    );
    assert_eq!(bodies[1]["type"], "conversation.ended");
    assert_eq!(bodies[1]["data"]["summaries"], json!([summary]));
    js.delete_stream(format!("WRAPUP_TEST_{run}"))
        .await
        .unwrap();
}

/// Summary deliveries are labelled by the action that sends them: a hundred summary
/// triggers add no series to `/metrics`, and the destinations view lists exactly the
/// configured actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_summary_triggers_add_no_metric_series_and_no_destination() {
    use std::time::Duration;

    use serde_json::json;

    use crate::helpers::*;

    let receiver = crate::receiver::Receiver::start().await;
    let tail = format!(
        "[[bots.on_end]]\nname = \"series-crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\n[bots.caps]\nsummary_requests = 200\n\n[bots.summary]\nat_end = false\n",
        receiver.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let hooks = format!("/agentai/api/v1/hooks/{BOT}");
    let series = || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        // The registry is the process's: other tests add their own series beside.
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wrapup_action_"))
            .filter_map(|l| l.split("action=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert!(!labels.iter().any(|a| a.contains('@')), "{labels:?}");
        text.lines()
            .filter(|l| l.starts_with("wrapup_action_") && l.contains("action=\"series-crm\""))
            .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_owned())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let say = |c: &str| json!({"botId": BOT, "conversationId": c, "query": "My parcel never arrived.", "author": {"type": "USER"}});
    // One trigger first: every series of a summary and of its delivery exists.
    let first = unique("series");
    assert_eq!(
        app.post(&hooks, "token", &token(), &say(&first)).await.0,
        200
    );
    assert_eq!(
        app.hook(&event_body(&first, json!([summary()]))).await.0,
        200
    );
    app.settled_jobs(&first, 2).await;
    let before = series().await;
    let c = unique("series");
    assert_eq!(app.post(&hooks, "token", &token(), &say(&c)).await.0, 200);
    for _ in 0..100 {
        assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
    }
    let jobs = eventually_within(Duration::from_secs(120), "200 jobs settle", || async {
        let jobs = app.jobs_of(&c).await;
        (jobs.len() == 200 && jobs.iter().all(|j| j["state"] == "succeeded")).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 200);
    let after = series().await;
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new series"
    );
    let (_, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
    let mine: Vec<(String, bool)> = stats["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["botId"] == BOT)
        .map(|d| {
            (
                d["action"].as_str().unwrap().to_owned(),
                d["configured"] == true,
            )
        })
        .collect();
    assert_eq!(
        mine,
        vec![
            ("series-crm".to_owned(), true),
            ("summary".to_owned(), true)
        ],
        "{stats}"
    );
}
