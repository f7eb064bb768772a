//! The conversation record built from the vendor's flows, the anomalies of misordered
//! ones, inactivity auto-end, the records API and retention.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

fn end_event() -> Value {
    seed()["events"][0].clone()
}

fn message(c: &str, author: &str, text: &str) -> Value {
    json!({"botId": BOT, "conversationId": c, "query": text, "agentId": "a1", "author": {"type": author},
           "source": "genesys", "experience": "voice", "language": "en", "sendUserMessage": false, "sendAgentMessage": false})
}

/// Sends each step as its own request, in order, and returns the record.
async fn run_flow(app: &TestApp, c: &str, steps: Vec<Value>) -> Value {
    for step in steps {
        let body = if step.get("query").is_some() {
            step
        } else {
            event_body(c, json!([step]))
        };
        let (status, answer) = app.hook(&body).await;
        assert_eq!(status, 200, "{answer}");
        // Each step 2 ms after the last, so every step has a time of its own.
        app.advance(Duration::from_millis(2));
    }
    app.conversation(c).await.1
}

/// Segments as (agent, transferType), and a check that handle times add up.
fn segments(record: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for agent in record["agents"].as_array().unwrap() {
        let mut total = 0;
        for s in agent["segments"].as_array().unwrap() {
            assert!(
                !s["endedAt"].is_null(),
                "segment left open after the end: {agent}"
            );
            total += millis(&s["endedAt"]) - millis(&s["startedAt"]);
            out.push((
                agent["identity"].as_str().unwrap().to_owned(),
                s["transferType"].as_str().unwrap().to_owned(),
            ));
        }
        assert_eq!(agent["handleTimeMs"], total, "{agent}");
    }
    out
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn the_vendors_flows_yield_their_segments_and_no_anomalies() {
    let app = TestApp::spawn().await;

    let c = unique("standard");
    let r = run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            message(&c, "USER", "hello"),
            message(&c, "AGENT", "hi, how can I help"),
            transfer("NA", "exit", "a1"),
            summary(),
            end_event(),
        ],
    )
    .await;
    assert_eq!(r["anomalies"], json!([]), "{r:#}");
    assert_eq!(segments(&r), pairs(&[("a1", "NA")]));
    assert_eq!(r["transfers"], json!({"cold": 0, "warm": 0, "redial": 0}));
    assert_eq!(r["messages"], json!({"user": 1, "agent": 1, "unknown": 0}));
    assert_eq!(r["summaryRequests"][0]["type"], "post");
    assert_eq!(r["summaryRequests"][0]["eventSeq"], 5);
    assert!(r["handleTimeMs"].is_null());
    assert_eq!(r["startedAt"], r["agents"][0]["segments"][0]["startedAt"]);
    assert_eq!(
        r["durationMs"],
        millis(&r["endedAt"]) - millis(&r["startedAt"])
    );

    let c = unique("cold");
    let r = run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            transfer("COLD", "exit", "a1"),
            transfer("COLD", "entry", "a2"),
            transfer("cold", "exit", "a2"),
            transfer("cold", "entry", "a3"),
            transfer("NA", "exit", "a3"),
            summary(),
            end_event(),
        ],
    )
    .await;
    assert_eq!(r["anomalies"], json!([]), "{r:#}");
    assert_eq!(
        segments(&r),
        pairs(&[("a1", "NA"), ("a2", "COLD"), ("a3", "COLD")])
    );
    assert_eq!(r["transfers"], json!({"cold": 2, "warm": 0, "redial": 0}));

    let c = unique("warm");
    let r = run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            transfer("WARM", "entry", "c1"),
            transfer("WARM", "entry", "c2"),
            transfer("WARM", "exit", "c1"),
            transfer("WARM", "exit", "c2"),
            transfer("NA", "exit", "a1"),
            summary(),
            end_event(),
        ],
    )
    .await;
    assert_eq!(r["anomalies"], json!([]), "{r:#}");
    assert_eq!(
        segments(&r),
        pairs(&[("a1", "NA"), ("c1", "WARM"), ("c2", "WARM")])
    );
    assert_eq!(r["transfers"], json!({"cold": 0, "warm": 2, "redial": 0}));
    // The consultants' time lies within the first agent's.
    let a1 = &r["agents"][0]["segments"][0];
    for c in [
        &r["agents"][1]["segments"][0],
        &r["agents"][2]["segments"][0],
    ] {
        assert!(
            millis(&c["startedAt"]) >= millis(&a1["startedAt"])
                && millis(&c["endedAt"]) <= millis(&a1["endedAt"])
        );
    }

    let c = unique("redial");
    let r = run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            transfer("NA", "exit", "a1"),
            transfer("redial", "entry", "a1"),
            transfer("NA", "exit", "a1"),
            summary(),
            end_event(),
        ],
    )
    .await;
    assert_eq!(r["anomalies"], json!([]), "{r:#}");
    assert_eq!(segments(&r), pairs(&[("a1", "NA"), ("a1", "redial")]));
    assert_eq!(r["transfers"], json!({"cold": 0, "warm": 0, "redial": 1}));
    assert_eq!(
        r["agents"].as_array().unwrap().len(),
        1,
        "a redial continues with the same agent"
    );
}

#[tokio::test]
async fn each_kind_of_misordering_is_recorded_as_its_anomaly() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Vec<Value>, &str, u64)> = vec![
        (
            "end without NA exit",
            vec![transfer("NA", "entry", "a1"), end_event()],
            "end_without_na_exit",
            2,
        ),
        (
            "end without any agent",
            vec![end_event()],
            "end_without_agent",
            1,
        ),
        (
            "exit of an agent who never entered",
            vec![
                transfer("NA", "entry", "a1"),
                transfer("WARM", "exit", "ghost"),
            ],
            "exit_without_entry",
            2,
        ),
        (
            "second NA entry",
            vec![transfer("NA", "entry", "a1"), transfer("NA", "entry", "a2")],
            "repeated_na_entry",
            2,
        ),
        (
            "COLD entry while another agent is active",
            vec![
                transfer("NA", "entry", "a1"),
                transfer("COLD", "entry", "a2"),
            ],
            "cold_entry_while_agent_active",
            2,
        ),
        (
            "message before any agent",
            vec![json!("MESSAGE"), transfer("NA", "entry", "a1")],
            "message_before_agent_entry",
            1,
        ),
        (
            "summary while an agent is active",
            vec![transfer("NA", "entry", "a1"), summary()],
            "summary_before_na_exit",
            2,
        ),
        (
            "redial while the agent is active",
            vec![
                transfer("NA", "entry", "a1"),
                transfer("redial", "entry", "a1"),
            ],
            "redial_while_active",
            2,
        ),
        (
            "transfer before the start",
            vec![transfer("WARM", "entry", "c1")],
            "transfer_before_start",
            1,
        ),
        (
            "entry after the last NA exit",
            vec![
                transfer("NA", "entry", "a1"),
                transfer("NA", "exit", "a1"),
                transfer("COLD", "entry", "a2"),
            ],
            "entry_after_na_exit",
            3,
        ),
        (
            "NA exit while a consultant stays",
            vec![
                transfer("NA", "entry", "a1"),
                transfer("WARM", "entry", "c1"),
                transfer("NA", "exit", "a1"),
            ],
            "na_exit_with_agents_active",
            3,
        ),
    ];
    for (name, steps, code, seq) in cases {
        let c = unique("anomaly");
        let steps = steps
            .into_iter()
            .map(|s| {
                if s == json!("MESSAGE") {
                    message(&c, "USER", "anyone there?")
                } else {
                    s
                }
            })
            .collect();
        let r = run_flow(&app, &c, steps).await;
        let anomalies = r["anomalies"].as_array().unwrap();
        let found = anomalies.iter().find(|a| a["code"] == code);
        let found = found.unwrap_or_else(|| panic!("{name}: no {code} in {anomalies:#?}"));
        assert_eq!(found["eventSeq"], seq, "{name}");
        assert!(
            found["message"].as_str().unwrap().len() > 20,
            "{name}: say it plainly"
        );
    }
}

#[tokio::test]
async fn the_end_closes_open_segments_at_the_end_time() {
    let app = TestApp::spawn().await;
    let c = unique("close");
    let r = run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            transfer("WARM", "entry", "c1"),
            end_event(),
        ],
    )
    .await;
    for agent in r["agents"].as_array().unwrap() {
        assert_eq!(agent["segments"][0]["endedAt"], r["endedAt"]);
    }
}

#[tokio::test]
async fn a_silent_conversation_is_ended_by_the_server_and_its_webhook_fires_once() {
    let receiver = Receiver::start().await;
    let tail = format!(
        "inactivity_timeout = \"4h\"\n[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\n",
        receiver.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let c = unique("silent");
    app.hook(&event_body(&c, json!([transfer("NA", "entry", "a1")])))
        .await;
    assert_eq!(app.conversation(&c).await.1["status"], "active");
    // Four silent hours pass.
    app.advance(Duration::from_secs(4 * 3600 + 1));
    let record = eventually("the sweeper ends the silent conversation", || async {
        let (_, r) = app.conversation(&c).await;
        (r["status"] == "ended").then_some(r)
    })
    .await;
    assert_eq!(record["endReason"], "inactivity_timeout");
    assert_eq!(
        record["endedBy"],
        json!({"identity": "wrapup", "type": "system"})
    );
    assert!(
        millis(&record["endedAt"]) - millis(&record["lastEventAt"]) <= 0,
        "the end is the last event"
    );
    assert!(
        record["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["code"] == "ended_by_inactivity")
    );
    let jobs = app.settled_jobs(&c, 1).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    let body: Value = serde_json::from_slice(&deliveries[0].body).unwrap();
    assert_eq!(body["data"]["endReason"], "inactivity_timeout");
    let (_, events) = into_json(
        app.client
            .get(format!(
                "{}/api/v1/bots/{BOT}/conversations/{c}/events",
                app.base
            ))
            .header("token", token())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events["events"][1]["name"], "INACTIVITY_TIMEOUT");

    // A later client end is a duplicate, not a second end.
    assert_eq!(app.end(&c).await.0, 200);
    let (_, again) = app.conversation(&c).await;
    assert_eq!(
        (again["duplicateEnds"].clone(), again["endReason"].clone()),
        (json!(1), json!("inactivity_timeout"))
    );
    // The repeated end scheduled nothing: the one job there is has delivered once.
    assert_eq!(app.jobs_of(&c).await.len(), 1);
    assert_eq!(receiver.deliveries().len(), 1);
}

#[tokio::test]
async fn client_ends_racing_the_sweeper_yield_one_end_each() {
    let receiver = Receiver::start().await;
    let tail = format!(
        "inactivity_timeout = \"1h\"\n[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\n",
        receiver.url
    );
    let app = TestApp::build().actions(&tail).spawn().await;
    let ids: Vec<String> = (0..60).map(|_| unique("race-sweep")).collect();
    for c in &ids {
        app.hook(&event_body(c, json!([transfer("NA", "entry", "a1")])))
            .await;
    }
    // The hour passes: the sweeper wakes and starts ending them while the clients' ends
    // for the same conversations arrive.
    app.advance(Duration::from_secs(3601));
    let answers: Vec<_> = futures::stream::iter(ids.iter())
        .map(|c| async { app.end(c).await.0 })
        .buffer_unordered(60)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 200));
    let (mut by_client, mut by_sweeper) = (0, 0);
    for c in &ids {
        let jobs = app.settled_jobs(c, 1).await;
        assert_eq!(jobs.len(), 1);
        let (_, r) = app.conversation(c).await;
        match r["endReason"].as_str().unwrap() {
            "agent_initiated" => {
                by_client += 1;
                assert_eq!(r["duplicateEnds"], 0);
            }
            "inactivity_timeout" => {
                by_sweeper += 1;
                assert_eq!(r["duplicateEnds"], 1);
            }
            other => panic!("{other}"),
        }
    }
    let delivered: Vec<String> = receiver
        .deliveries()
        .iter()
        .map(|d| {
            serde_json::from_slice::<Value>(&d.body).unwrap()["data"]["conversationId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(delivered.len(), 60, "one webhook per conversation");
    assert_eq!(delivered.iter().collect::<HashSet<_>>().len(), 60);
    eprintln!("60 races: {by_client} ended by the client first, {by_sweeper} by the sweeper first");
}

#[tokio::test]
async fn listing_ten_thousand_conversations_page_by_page_returns_each_once() {
    let app = TestApp::spawn().await;
    let ids: Vec<String> = (0..10_000).map(|i| format!("list-{i:05}")).collect();
    let statuses: Vec<u16> = futures::stream::iter(ids.iter())
        .map(|c| async { app.end(c).await.0.as_u16() })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));

    let mut seen = Vec::with_capacity(10_000);
    let mut last_end = i64::MAX;
    let path = format!("/api/v1/bots/{BOT}/conversations?limit=500&status=ended");
    let (all, pages) = pages(&app.base, &path, Auth::Token(&token()), "conversations").await;
    for r in all {
        let end = millis(&r["endedAt"]);
        assert!(end <= last_end, "newest first");
        last_end = end;
        seen.push(r["conversationId"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 10_000, "in {pages} pages");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        10_000,
        "no conversation twice"
    );
    assert!(pages <= 21);
}

#[tokio::test]
async fn the_list_filters_by_status_and_time() {
    let app = TestApp::spawn().await;
    let active = unique("f-active");
    app.hook(&event_body(&active, json!([transfer("NA", "entry", "a1")])))
        .await;
    let ended = unique("f-ended");
    app.end(&ended).await;
    let get = |q: String| {
        let app = &app;
        async move {
            let url = format!("{}/api/v1/bots/{BOT}/conversations?{q}", app.base);
            into_json(
                app.client
                    .get(url)
                    .header("auth", token())
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let ids = |v: &Value| -> Vec<String> {
        v["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["conversationId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&get("status=active".into()).await.1),
        vec![active.clone()]
    );
    assert_eq!(
        ids(&get("status=ended".into()).await.1),
        vec![ended.clone()]
    );
    assert_eq!(
        ids(&get("from=2999-01-01T00:00:00Z".into()).await.1),
        Vec::<String>::new()
    );
    assert_eq!(ids(&get("to=2000-01-01T00:00:00Z".into()).await.1).len(), 0);
    assert_eq!(
        ids(&get("from=2000-01-01T00:00:00Z&limit=10".into()).await.1).len(),
        2
    );
    assert_eq!(get("status=paused".into()).await.0, 400);
    assert_eq!(get("from=yesterday".into()).await.0, 400);
    assert_eq!(get("cursor=%%%".into()).await.0, 400);
    assert_eq!(get("limit=0".into()).await.0, 400);
}

#[tokio::test]
async fn the_event_log_and_transcript_come_back_in_order_as_sent() {
    let app = TestApp::spawn().await;
    let c = unique("log");
    let mut entry = transfer("NA", "entry", "a1");
    entry["fromThirdParty"] = json!(true);
    run_flow(
        &app,
        &c,
        vec![
            entry,
            message(&c, "USER", "my card is lost"),
            json!({"botId": BOT, "conversationId": c, "agentId": "a1", "query": "bare one"}),
            message(&c, "AGENT", "I will block it"),
            transfer("NA", "exit", "a1"),
            end_event(),
        ],
    )
    .await;
    let get = |what: &str| {
        let url = format!("{}/api/v1/bots/{BOT}/conversations/{c}/{what}", app.base);
        let req = app.client.get(url).header("token", token());
        async move { into_json(req.send().await.unwrap()).await }
    };
    let (status, log) = get("events").await;
    assert_eq!(status, 200);
    let names: Vec<_> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "INTERNAL_TRANSFER_EVENT",
            "MESSAGE",
            "MESSAGE",
            "MESSAGE",
            "INTERNAL_TRANSFER_EVENT",
            "END_OF_CONVERSATION"
        ]
    );
    assert_eq!(
        log["events"][0]["event"]["fromThirdParty"], true,
        "unknown fields are kept"
    );
    assert_eq!(log["events"][5]["seq"], 6);

    let (_, page) = get("events?after=2&limit=2").await;
    let seqs: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!((seqs, page["nextAfter"].clone()), (vec![3, 4], json!(4)));

    let (_, t) = get("transcript").await;
    let lines: Vec<_> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["authorType"].clone(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (json!("USER"), "my card is lost".to_owned()),
            (Value::Null, "bare one".to_owned()),
            (json!("AGENT"), "I will block it".to_owned())
        ]
    );
    assert_eq!(t["messages"][0]["agentId"], "a1");
    assert_eq!(t["messages"][0]["source"], "genesys");
    assert_eq!(get("transcript?after=x").await.0, 400);
    let url = format!("{}/api/v1/bots/{BOT}/conversations/nope/events", app.base);
    assert_eq!(
        app.client
            .get(url)
            .header("token", token())
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn retention_purges_transcripts_and_logs_but_keeps_the_record() {
    let app = TestApp::build()
        .actions("retention = { transcript = \"30d\", events = \"90d\" }\n")
        .spawn()
        .await;
    let c = unique("retain");
    run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            message(&c, "USER", "secret account number 1234"),
            transfer("NA", "exit", "a1"),
            end_event(),
        ],
    )
    .await;
    let get = |what: &'static str| {
        let url = format!("{}/api/v1/bots/{BOT}/conversations/{c}/{what}", app.base);
        let req = app.client.get(url).header("token", token());
        async move { into_json(req.send().await.unwrap()).await.1 }
    };
    assert_eq!(
        get("transcript").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Thirty days pass: the transcript goes, the log stays.
    app.advance(Duration::from_secs(30 * 86_400 + 1));
    eventually("the transcript is purged", || async {
        (!get("transcript").await["transcriptPurgedAt"].is_null()).then_some(())
    })
    .await;
    assert_eq!(get("transcript").await["messages"], json!([]));
    let log = get("events").await;
    assert_eq!(
        log["events"].as_array().unwrap().len(),
        3,
        "only the messages went: {log}"
    );
    assert!(!log.to_string().contains("1234"));
    // Ninety days: the log goes too.
    app.advance(Duration::from_secs(60 * 86_400));
    eventually("the log is purged", || async {
        (!get("events").await["eventsPurgedAt"].is_null()).then_some(())
    })
    .await;
    assert_eq!(get("events").await["events"], json!([]));
    let (_, r) = app.conversation(&c).await;
    assert_eq!(
        (
            r["status"].clone(),
            r["messages"]["user"].clone(),
            r["eventCount"].clone()
        ),
        (json!("ended"), json!(1), json!(4))
    );
}

/// Issue 25, item 11: a transcript's retention reaches every copy of its text — the
/// summaries that quote it, and those summaries in the payloads of the conversation's
/// jobs (an end's record carries the summaries made by then, a `conversation.summarized`
/// its summary), dead ones included. Checked by reading every row of every table.
#[tokio::test]
async fn retention_removes_the_transcripts_text_from_every_table_on_sqlite() {
    retention_reaches_every_copy(false).await;
}

#[tokio::test]
async fn retention_removes_the_transcripts_text_from_every_table_on_postgres() {
    retention_reaches_every_copy(true).await;
}

/// A receiver that refuses every delivery (422) and quotes it back in its answer, which
/// wrapup keeps (its first 512 bytes) with the attempt; its URL.
async fn echoing_receiver() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            // The summaries' text, first: what an echoing receiver keeps.
                            let quoted = body
                                .find("\"text\"")
                                .map_or(body, |i| &body[i..])
                                .to_owned();
                            let answer = format!(
                                "HTTP/1.1 422 Unprocessable Entity\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{quoted}",
                                quoted.len()
                            );
                            let _ = stream.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

async fn retention_reaches_every_copy(postgres: bool) {
    const PHRASE: &str = "zebraquartz";
    let echo = echoing_receiver().await;
    let tail = format!(
        "retention = {{ transcript = \"30d\" }}\n[[bots.on_end]]\nkind = \"webhook\"\nname = \"crm\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 1 }}\n\n[[bots.on_end]]\nkind = \"webhook\"\nname = \"echo\"\nurl = \"{echo}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {{ max_attempts = 1 }}\n\n[bots.summary]\nprovider = \"extractive\"\n"
    );
    let tail = tail.as_str();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wrapup.db");
    let (store, schema) = pg_store("wrapup_retain", 4);
    let config = if postgres {
        config_for_store(&store, "", tail)
    } else {
        config_with_actions(&db, "", tail)
    };
    let app = TestApp::build().dir(dir).config(&config).spawn().await;
    let c = unique("retain-all");
    run_flow(
        &app,
        &c,
        vec![
            transfer("NA", "entry", "a1"),
            message(
                &c,
                "USER",
                &format!("The {PHRASE} invoice was charged twice on my card."),
            ),
            message(
                &c,
                "AGENT",
                &format!("I refunded the second {PHRASE} charge today."),
            ),
            summary(),
        ],
    )
    .await;
    let summaries = |app: &TestApp| {
        let url = format!("{}/api/v1/bots/{BOT}/conversations/{c}/summaries", app.base);
        let req = app.client.get(url).header("token", token());
        async move { into_json(req.send().await.unwrap()).await.1 }
    };
    eventually("the interim summary is made", || async {
        let s = summaries(&app).await;
        s["summaries"]
            .as_array()
            .filter(|l| l.iter().any(|x| x["status"] == "COMPLETED"))
            .map(|_| ())
    })
    .await;
    let (status, _) = app.hook(&event_body(&c, json!([end_event()]))).await;
    assert_eq!(status, 200);
    // The end's job (carrying the interim summary), the summary's delivery and the final
    // summary's delivery all die at the closed port.
    eventually("the deliveries are dead", || async {
        let jobs = app.jobs_of(&c).await;
        let dead = jobs.iter().filter(|j| j["state"] == "dead").count();
        (dead >= 6).then_some(())
    })
    .await;
    let scan = || async {
        if postgres {
            let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
            let tables = pg_tables_as_text(&pool, &schema).await;
            pool.close().await;
            tables
        } else {
            sqlite_tables_as_text(&db)
        }
    };
    let holding = |tables: &[(String, String)]| -> Vec<String> {
        tables
            .iter()
            .filter(|(_, rows)| rows.contains(PHRASE))
            .map(|(t, _)| t.clone())
            .collect()
    };
    let before = holding(&scan().await);
    for table in ["events", "summaries"] {
        assert!(before.iter().any(|t| t == table), "{before:?}");
    }
    assert!(
        before.iter().any(|t| t == "job_payloads" || t == "jobs"),
        "the payloads quote it before: {before:?}"
    );
    assert!(
        before.iter().any(|t| t == "attempts"),
        "the echoing receiver's answer quotes it before: {before:?}"
    );

    app.advance(Duration::from_secs(30 * 86_400 + 1));
    eventually("the transcript is purged", || async {
        let (_, r) = app.conversation(&c).await;
        let url = format!(
            "{}/api/v1/bots/{BOT}/conversations/{c}/transcript",
            app.base
        );
        let t = into_json(
            app.client
                .get(url)
                .header("token", token())
                .send()
                .await
                .unwrap(),
        )
        .await
        .1;
        (r["status"] == "ended" && !t["transcriptPurgedAt"].is_null()).then_some(())
    })
    .await;
    let after = holding(&scan().await);
    assert!(after.is_empty(), "the text is still in {after:?}");
    app.stop().await;
    if postgres {
        let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
