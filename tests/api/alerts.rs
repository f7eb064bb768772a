//! Issue 25, item 6: every rule of `examples/alerts.yml` fires on the condition it names,
//! and not before. A real server (its own process, on PostgreSQL through a relay the test
//! can freeze) is driven into each condition — a dead job, a paused destination, an
//! orphaned job, a job waiting over ten minutes, refused tokens, a store that hangs, ends
//! that stop — and scraped; promtool evaluates the file's rules on those scrapes.
//!
//! What is not real: time. The scrapes are taken seconds apart and given to promtool one
//! minute apart (a rule's `for` and rate windows are minutes), each phase's last scrape
//! held for the minutes a rule waits; the `up` series, which Prometheus itself makes, is
//! 1 (every scrape answered); a dead job's time of death is moved 11 minutes back in the
//! store, as eleven minutes would have; "last week" for the traffic rule is the scrapes of
//! an earlier phase placed a week before a fresh instance's.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::json;

use crate::crash::{hangup, serve_env, wait_for_log};
use crate::helpers::*;

const INSTANCE: &str = "wrapup-1";

/// One scrape: each series (with the `job` and `instance` labels Prometheus adds) and its
/// value.
type Scrape = BTreeMap<String, String>;

fn alerts_file() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alerts.yml")).unwrap()
}

/// The metric names the rules read.
fn rule_metrics(rules: &str) -> BTreeSet<String> {
    rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wrapup_"))
        .map(str::to_owned)
        .collect()
}

/// The alert names, in the file's order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The rules without their annotations (text for people: promtool would compare them
/// too), everything else as written.
fn without_annotations(rules: &str) -> String {
    let mut out = String::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skip_deeper_than {
            if line.trim().is_empty() || indent > at {
                continue;
            }
            skip_deeper_than = None;
        }
        if line.trim_start().starts_with("annotations:") {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

async fn scrape(base: &str, names: &BTreeSet<String>) -> Scrape {
    let text = metrics_text(base).await;
    let added = format!("job=\"wrapup\",instance=\"{INSTANCE}\"");
    let mut scrape: Scrape = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| names.contains(series.split('{').next().unwrap_or_default()))
        .map(|(series, value)| {
            let labelled = match series.strip_suffix('}') {
                Some(open) => format!("{open},{added}}}"),
                None => format!("{series}{{{added}}}"),
            };
            (labelled, value.to_owned())
        })
        .collect();
    scrape.insert(format!("up{{{added}}}"), "1".into());
    scrape
}

fn value(scrape: &Scrape, starts: &str) -> f64 {
    scrape
        .iter()
        .find(|(k, _)| k.starts_with(starts))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// promtool's `input_series`: one sample a minute, `_` where a scrape lacks the series.
fn input_series(timeline: &[Option<&Scrape>]) -> String {
    let all: BTreeSet<&String> = timeline.iter().flatten().flat_map(|s| s.keys()).collect();
    let mut out = String::new();
    for series in all {
        let values: Vec<&str> = timeline
            .iter()
            .map(|s| s.and_then(|s| s.get(series)).map_or("_", String::as_str))
            .collect();
        out.push_str(&format!(
            "      - series: '{series}'\n        values: '{}'\n",
            values.join(" ")
        ));
    }
    out
}

/// One `alert_rule_test` entry: at `minute`, `alert` is firing with exactly these label
/// sets (none: not firing).
fn expect(minute: usize, alert: &str, firing: &[&[(&str, &str)]]) -> String {
    let mut out =
        format!("      - eval_time: {minute}m\n        alertname: {alert}\n        exp_alerts:");
    if firing.is_empty() {
        out.push_str(" []\n");
    }
    for labels in firing {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: '{v}'")).collect();
        out.push_str(&format!(
            "\n          - exp_labels: {{{}}}",
            labels.join(", ")
        ));
    }
    out.push('\n');
    out
}

fn promtool() -> &'static str {
    let found = Command::new("promtool").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "promtool runs (Debian: apt-get install prometheus; .ci/run installs it)"
    );
    "promtool"
}

#[test]
fn the_alert_rules_are_valid_and_docs_monitoring_lists_the_same_rules() {
    let check = Command::new(promtool())
        .args(["check", "rules"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alerts.yml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let rules = alerts_file();
    let names: BTreeSet<String> = alert_names(&rules).into_iter().collect();
    assert!(names.len() >= 9, "{names:?}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/monitoring.md"))
        .unwrap();
    let in_doc: BTreeSet<String> = doc
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.starts_with("Wrapup") && w.len() > "Wrapup".len())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        in_doc, names,
        "docs/monitoring.md names other rules than the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_rule_fires_on_its_condition_and_not_before() {
    let promtool = promtool();
    let rules = alerts_file();
    let names = rule_metrics(&rules);
    let relay = Relay::start("127.0.0.1:5432").await;
    let schema = format!("wrapup_alerts_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "url = \"postgres://postgres@127.0.0.1:{}/test\"\nschema = \"{schema}\"\npool_size = 4\nstatement_timeout = \"2s\"",
        relay.port
    );
    let hook = |name: &str, retry: &str| {
        format!(
            "[[bots.on_end]]\nkind = \"webhook\"\nname = \"{name}\"\nurl = \"http://127.0.0.1:1/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry = {retry}\n"
        )
    };
    // `dead` gives up at its first failure; `flaky` and `gone` retry fast, so two
    // failures in a row pause them; a reload then removes `gone`, orphaning its job.
    let config_with = |gone: bool| {
        let mut tail = String::from("inactivity_timeout = \"2s\"\n");
        tail += &hook("dead", "{ max_attempts = 1 }");
        tail += &hook(
            "flaky",
            "{ max_attempts = 50, initial_delay = \"50ms\", max_delay = \"50ms\" }",
        );
        if gone {
            tail += &hook(
                "gone",
                "{ max_attempts = 50, initial_delay = \"50ms\", max_delay = \"50ms\" }",
            );
        }
        tail += "\n[workers]\npause_after = 2\npause_for = \"1h\"\norphan_after = \"1s\"\n";
        config_for_store(&store, "request_timeout = \"2s\"", &tail)
    };
    let config = write_config(dir.path(), &config_with(true));
    let (server, started, logs) = serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let client = client();
    let post = |bot: &str, token: String, body: serde_json::Value| {
        let request = client
            .post(format!("{base}/agentai/api/v1/hooks/{bot}"))
            .header("token", token)
            .json(&body);
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // A fresh instance.
    let fresh = scrape(&base, &names).await;

    // "Last week": ends on the other bot (it has no actions), 30 between scrapes.
    let other = |c: &str| {
        (
            sign(
                jsonwebtoken::Algorithm::HS256,
                OTHER_SECRET,
                json!({"appId": OTHER_APP}),
            ),
            {
                let mut body = seed_with(c);
                body["botId"] = json!(OTHER_BOT);
                body
            },
        )
    };
    let mut last_week = Vec::new();
    for _ in 0..10 {
        let sent = futures::future::join_all((0..30).map(|_| {
            let (token, body) = other(&unique("week"));
            post(OTHER_BOT, token, body)
        }))
        .await;
        assert!(sent.iter().all(|s| *s == 200), "{sent:?}");
        last_week.push(scrape(&base, &names).await);
    }

    // Refused tokens: 100 wrong signatures between scrapes.
    let wrong = sign(
        jsonwebtoken::Algorithm::HS256,
        "not-the-secret-of-this-app-0123",
        json!({"appId": HS256_APP}),
    );
    let mut refusing = Vec::new();
    for _ in 0..20 {
        let sent = futures::future::join_all(
            (0..100).map(|_| post(BOT, wrong.clone(), seed_with(&unique("refused")))),
        )
        .await;
        assert!(sent.iter().all(|s| *s == 401), "{sent:?}");
        refusing.push(scrape(&base, &names).await);
    }

    // Jobs: one end; its `dead` job dies, `flaky` and `gone` are paused.
    assert_eq!(post(BOT, token(), seed_with(&unique("jobs"))).await, 200);
    let paused =
        |action: &str| format!("wrapup_destination_paused{{bot=\"{BOT}\",action=\"{action}\"");
    eventually("a dead job, and flaky and gone paused", || async {
        let s = scrape(&base, &names).await;
        (value(&s, "wrapup_jobs{kind=\"webhook\",state=\"dead\"") >= 1.0
            && value(&s, &paused("flaky")) == 1.0
            && value(&s, &paused("gone")) == 1.0)
            .then_some(())
    })
    .await;
    std::fs::write(&config, config_with(false)).unwrap();
    hangup(&server);
    wait_for_log(&logs, "configuration reloaded", 0).await;
    eventually("gone's job orphaned", || async {
        let s = scrape(&base, &names).await;
        (value(&s, "wrapup_jobs{kind=\"webhook\",state=\"orphaned\"") >= 1.0).then_some(())
    })
    .await;
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let moved = sqlx::query(&format!(
        "UPDATE {schema}.jobs SET due_at = due_at - 660000 WHERE state = 'dead'"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(moved.rows_affected(), 1);
    // The reload tried every paused destination again: `flaky` pauses again.
    let jobs = eventually(
        "flaky paused again, the dead job 11 minutes old",
        || async {
            let s = scrape(&base, &names).await;
            (value(&s, &paused("flaky")) == 1.0
                && value(&s, "wrapup_jobs_oldest_waiting_age_seconds") > 600.0)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(
        value(&jobs, &paused("gone")),
        0.0,
        "a removed action is not paused"
    );

    // The store hangs: every end is refused with a 5xx, and the scrape says not ready.
    relay.freeze(true);
    let mut down = Vec::new();
    for _ in 0..10 {
        let sent = futures::future::join_all(
            (0..5).map(|_| post(BOT, token(), seed_with(&unique("down")))),
        )
        .await;
        assert!(sent.iter().all(|s| *s >= 500), "{sent:?}");
        down.push(scrape(&base, &names).await);
    }
    relay.freeze(false);
    assert_eq!(value(&down[9], "wrapup_store_up"), 0.0);
    drop(server);

    // The timeline, a scrape a minute: healthy 0–19, tokens refused 20–39, jobs 40–54,
    // the store down 55–64.
    let mut timeline: Vec<Option<&Scrape>> = vec![Some(&fresh); 20];
    timeline.extend(refusing.iter().map(Some));
    timeline.extend(std::iter::repeat_n(Some(&jobs), 15));
    timeline.extend(down.iter().map(Some));
    let warning: &[(&str, &str)] = &[("severity", "warning")];
    let critical_here: &[(&str, &str)] = &[("instance", INSTANCE), ("severity", "critical")];
    let mut checks = String::new();
    for alert in alert_names(&rules) {
        checks += &expect(19, &alert, &[]);
    }
    checks += &expect(
        39,
        "WrapupTokensRefused",
        &[&[("bot", BOT), ("severity", "warning")]],
    );
    for alert in [
        "WrapupDeadJobs",
        "WrapupOrphanedJobs",
        "WrapupDestinationPaused",
        "WrapupOldestDueJob",
        "WrapupNotReady",
        "WrapupStoreDown",
        "WrapupServerErrors",
    ] {
        checks += &expect(39, alert, &[]);
    }
    checks += &expect(54, "WrapupDeadJobs", &[warning]);
    checks += &expect(54, "WrapupOrphanedJobs", &[warning]);
    checks += &expect(
        54,
        "WrapupDestinationPaused",
        &[&[("bot", BOT), ("action", "flaky"), ("severity", "warning")]],
    );
    checks += &expect(54, "WrapupOldestDueJob", &[warning]);
    for alert in ["WrapupNotReady", "WrapupStoreDown", "WrapupServerErrors"] {
        checks += &expect(54, alert, &[]);
    }
    checks += &expect(64, "WrapupNotReady", &[critical_here]);
    checks += &expect(64, "WrapupStoreDown", &[critical_here]);
    checks += &expect(64, "WrapupServerErrors", &[&[("severity", "critical")]]);

    // Ends: last week's ten scrapes, then a week later a fresh (restarted) instance whose
    // ends stopped. It fires for the bot that had traffic once its `for` has passed.
    let ended = |s: &Scrape| -> Scrape {
        s.iter()
            .filter(|(k, _)| k.starts_with("wrapup_conversations_ended_total{"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let week: Vec<Scrape> = last_week.iter().map(ended).collect();
    let restarted = ended(&fresh);
    let mut traffic: Vec<Option<&Scrape>> = week.iter().map(Some).collect();
    traffic.resize(7 * 24 * 60, None);
    traffic.extend(std::iter::repeat_n(Some(&restarted), 70));
    let a_week = 7 * 24 * 60;
    let mut traffic_checks = expect(a_week + 20, "WrapupTrafficDrop", &[]);
    traffic_checks += &expect(
        a_week + 35,
        "WrapupTrafficDrop",
        &[&[("bot", OTHER_BOT), ("severity", "warning")]],
    );

    let tests = format!(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n{checks}  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n{traffic_checks}",
        input_series(&timeline),
        input_series(&traffic),
    );
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("rules.yml"), without_annotations(&rules)).unwrap();
    std::fs::write(work.path().join("tests.yml"), &tests).unwrap();
    let out = Command::new(promtool)
        .args(["test", "rules", "tests.yml"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every rule of the file was made to fire.
    for alert in alert_names(&rules) {
        assert!(
            checks.contains(&format!("alertname: {alert}\n        exp_alerts:\n"))
                || traffic_checks.contains(&format!("alertname: {alert}\n        exp_alerts:\n")),
            "{alert} is never expected to fire"
        );
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
