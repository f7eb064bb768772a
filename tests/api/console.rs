//! The console in a real browser: Debian's Chromium driven over WebDriver (chromedriver),
//! against a real server. Each test saves screenshots under `target/console/`; the
//! README's pictures are copied from there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::Receiver;

/// Browsers at once (each is a Chromium; the machine has two cores).
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

struct Driver {
    port: u16,
    _child: Child,
}

/// One chromedriver for the test process, on a free port.
fn driver() -> u16 {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver runs (Debian: apt-get install chromium chromium-driver; .ci/run installs them)");
            crate::helpers::wait_for_port(port, "chromedriver");
            Driver { port, _child: child }
        })
        .port
}

/// Waits until `element` is stale: the page that held it was replaced.
async fn gone(element: &fantoccini::elements::Element, what: &str) {
    crate::helpers::eventually(what, || async {
        element.text().await.is_err().then_some(())
    })
    .await;
}

pub struct Browser {
    pub client: Client,
    pub base: String,
    session: String,
    _permit: tokio::sync::SemaphorePermit<'static>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(base: &str) -> Browser {
        let permit = BROWSERS.acquire().await.unwrap();
        let profile = tempfile::tempdir().unwrap();
        let port = driver();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        let session = client.session_id().await.unwrap().unwrap();
        Browser {
            client,
            base: base.to_owned(),
            session,
            _permit: permit,
            _profile: profile,
        }
    }

    pub async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        out
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Signs in and waits for the page that follows (the overview, or the refusal).
    pub async fn sign_in(&self, token: &str) {
        self.go("/console/login").await;
        let before = self
            .client
            .find(Locator::Css("section.login"))
            .await
            .unwrap();
        let field = self.client.find(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("section.login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The old page's element goes stale once the next page has loaded.
        self.client
            .wait()
            .for_element(Locator::Css("main"))
            .await
            .unwrap();
        gone(&before, "a page follows the sign-in").await;
    }

    /// Clicks and waits for the next page to load.
    pub async fn click_and_wait(&self, css: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        let html = self.client.find(Locator::Css("html")).await.unwrap();
        el.click().await.unwrap();
        gone(&html, &format!("a page follows the click on {css}")).await;
    }

    /// Saves the page as `target/console/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The browser's console messages at level SEVERE since the last call.
    pub async fn console_errors(&self) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}/se/log",
            driver(),
            self.session
        );
        let resp: Value = client()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].to_string())
            .collect()
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A server with the console on and the demo bot's actions in `tail`.
async fn console_app(tail: &str) -> TestApp {
    TestApp::build().actions(tail).spawn().await
}

fn message(conversation: &str, text: &str, author: &str) -> Value {
    json!({"botId": BOT, "conversationId": conversation, "query": text, "author": {"type": author}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_a_wrong_token_accepts_the_right_one_and_sign_out_ends_it() {
    let app = console_app("").await;
    let b = Browser::open(&app.base).await;
    b.go("/console").await;
    assert_eq!(
        b.path().await,
        "/console/login",
        "not signed in: sent to sign in"
    );
    b.sign_in("not-the-admin-token-at-all").await;
    assert_eq!(b.text("p.error").await, "That token is not valid.");
    b.screenshot("login-refused").await;
    let errors = b.console_errors().await;
    assert!(
        errors.len() == 1 && errors[0].contains("401"),
        "only the refused sign-in: {errors:?}"
    );
    // The same refusal is a 401, with nothing about why.
    let resp = app
        .client
        .post(format!("{}/console/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    b.sign_in(ADMIN_TOKEN).await;
    assert_eq!(b.path().await, "/console");
    assert_eq!(b.text("h1").await, "Overview");
    b.screenshot("overview-empty").await;
    let cookie = b.client.get_named_cookie("wrapup_console").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Strict));

    b.click_and_wait("form.signout button").await;
    assert_eq!(b.path().await, "/console/login");
    b.go("/console/jobs").await;
    assert_eq!(
        b.path().await,
        "/console/login",
        "signed out: sent to sign in again"
    );
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filtered_by_agent_and_by_anomaly_shows_exactly_the_matching_conversations() {
    let app = console_app("").await;
    let p = unique("ui");
    let (alice, bob) = (format!("{p}-alice"), format!("{p}-bob"));
    let c: Vec<String> = (0..4).map(|i| format!("{p}-c{i}")).collect();
    let flows = [
        vec![transfer("NA", "entry", &alice)],
        vec![transfer("NA", "entry", &bob)],
        // A second NA entry: anomaly repeated_na_entry.
        vec![
            transfer("NA", "entry", &alice),
            transfer("NA", "entry", &bob),
        ],
        vec![transfer("NA", "entry", &bob), transfer("NA", "exit", &bob)],
    ];
    for (c, events) in c.iter().zip(flows) {
        assert_eq!(app.hook(&event_body(c, json!(events))).await.0, 200);
    }
    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go(&format!("/console/conversations?bot={BOT}&agent={alice}"))
        .await;
    assert_eq!(
        b.texts("#conversations tbody td:first-child a").await,
        [c[2].clone(), c[0].clone()]
    );
    b.screenshot("conversations").await;
    // Through the form, as a person would: the anomaly filter.
    b.go("/console/conversations").await;
    let form = b.client.form(Locator::Css("form.filters")).await.unwrap();
    form.set_by_name("bot", BOT).await.unwrap();
    form.set_by_name("anomaly", "repeated_na_entry")
        .await
        .unwrap();
    b.click_and_wait("form.filters button[type=submit]").await;
    assert_eq!(
        b.texts("#conversations tbody td:first-child a").await,
        [c[2].clone()]
    );
    // The search box finds an id across bots.
    b.go("/console/conversations").await;
    let search = b.client.form(Locator::Css("form.search")).await.unwrap();
    search.set_by_name("q", &c[3]).await.unwrap();
    b.click_and_wait("form.search button[type=submit]").await;
    assert_eq!(
        b.texts("table.data tbody td:nth-child(2) a").await,
        [c[3].clone()]
    );
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

/// Issue 25, item 11: the conversations page opens on every bot, newest first (it opened
/// on the first configured bot, empty when the traffic was on another), and "Older →"
/// walks every bot's conversations once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_opens_on_every_bot_newest_first_and_pages_through_each_once() {
    let app = console_app("").await;
    let p = unique("every");
    let other_token = sign(
        jsonwebtoken::Algorithm::HS256,
        OTHER_SECRET,
        json!({"appId": OTHER_APP}),
    );
    // 60 conversations, alternating bots, each a millisecond after the one before.
    let mut sent = Vec::new();
    for i in 0..60 {
        let c = format!("{p}-{i:02}");
        let (bot, token) = if i % 3 == 0 {
            (OTHER_BOT, other_token.clone())
        } else {
            (BOT, token())
        };
        let mut body = event_body(&c, json!([transfer("NA", "entry", "a1")]));
        body["botId"] = json!(bot);
        let (status, _) = app
            .post(
                &format!("/agentai/api/v1/hooks/{bot}"),
                "token",
                &token,
                &body,
            )
            .await;
        assert_eq!(status, 200);
        app.advance(std::time::Duration::from_millis(1));
        sent.push((bot.to_owned(), c));
    }
    sent.reverse(); // newest first
    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go("/console/conversations").await;
    let first = b.texts("#conversations tbody td:nth-child(2) a").await;
    let bots = b.texts("#conversations tbody td:first-child").await;
    assert_eq!(first.len(), 50);
    let expected: Vec<String> = sent.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(first, expected[..50]);
    let expected_bots: Vec<String> = sent.iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(bots, expected_bots[..50]);
    b.screenshot("conversations-every-bot").await;
    b.click_and_wait(".pager a").await;
    let second = b.texts("#conversations tbody td:nth-child(2) a").await;
    assert_eq!(second, expected[50..]);
    assert!(b.texts(".pager a").await.is_empty(), "nothing older");
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_page_shows_one_timeline_row_per_agent_and_the_transcript_in_order() {
    // Summaries from a model: the trigger's answer is malformed (FAILED), the end's good.
    let chat = crate::chat::ChatServer::start().await;
    chat.script(vec![crate::chat::Reply::Content("no JSON here".into())]);
    let app = console_app(&format!(
        "[bots.summary]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"test-model\"\nretry = {{ max_attempts = 1 }}\n",
        chat.base_url
    ))
    .await;
    let c = unique("detail");
    let steps = vec![
        json!([transfer("NA", "entry", "ana")]),
        json!([
            transfer("COLD", "exit", "ana"),
            transfer("COLD", "entry", "ben")
        ]),
        json!([transfer("WARM", "entry", "cy")]),
    ];
    for s in steps {
        assert_eq!(app.hook(&event_body(&c, s)).await.0, 200);
    }
    let texts = [
        "Hello, my order 4411 never arrived",
        "Let me check that for you",
        "Thanks!",
    ];
    for (i, t) in texts.iter().enumerate() {
        let author = if i == 1 { "AGENT" } else { "USER" };
        assert_eq!(app.hook(&message(&c, t, author)).await.0, 200);
    }
    assert_eq!(app.hook(&event_body(&c, json!([summary()]))).await.0, 200);
    // The end waits for the trigger's summary: both jobs would otherwise race for the
    // model's first (malformed) answer.
    eventually("the trigger's summary is stored", || async {
        let (_, r) = app.conversation(&c).await;
        (r["summaries"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;
    assert_eq!(app.end(&c).await.0, 200);
    eventually("both summaries are stored", || async {
        let (_, r) = app.conversation(&c).await;
        (r["summaries"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await;

    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go(&format!("/console/bots/{BOT}/conversations/{c}"))
        .await;
    assert_eq!(b.text("#conversation-id").await, c);
    assert_eq!(
        b.texts("section.summary .badge").await,
        ["failed", "completed"]
    );
    let failed = b.text("section.summary code").await;
    assert_eq!(failed, "INVALID_SUMMARY");
    let sections = b.texts("section.summary dd").await;
    assert_eq!(
        sections[0],
        "The customer asked for help. The agent refunded 49.99."
    );
    assert_eq!(sections[1], "The customer asked for help.", "{sections:?}");
    b.client
        .execute(
            "document.querySelector('section.summary').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    b.screenshot("conversation-summaries").await;
    b.client
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
    assert_eq!(
        b.texts("#timeline .agent-name").await,
        ["ana", "ben", "cy"],
        "one row per agent"
    );
    assert_eq!(
        b.client
            .find_all(Locator::Css("#timeline rect.seg.cold"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        b.client
            .find_all(Locator::Css("#timeline rect.seg.warm"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(b.texts("#transcript .text").await, texts);
    let sides: Vec<String> = {
        let mut v = Vec::new();
        for e in b
            .client
            .find_all(Locator::Css("#transcript li"))
            .await
            .unwrap()
        {
            v.push(e.attr("class").await.unwrap().unwrap_or_default());
        }
        v
    };
    assert_eq!(sides, ["msg customer", "msg agent", "msg customer"]);
    // An anomaly links to its event in the log.
    let link = b.client.find(Locator::Css("#anomalies a")).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    assert!(href.starts_with("#event-"), "{href}");
    b.client
        .find(Locator::Css(&href))
        .await
        .expect("the anomaly's event is in the log");
    b.screenshot("conversation").await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_and_ids_render_as_text_with_no_dialog_and_no_console_error() {
    let app = console_app("").await;
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let id = format!("{}-\"quoted'&<b>bold</b>", unique("x"));
    assert_eq!(
        app.hook(&event_body(
            &id,
            json!([transfer("NA", "entry", "<i>agent</i>")])
        ))
        .await
        .0,
        200
    );
    assert_eq!(app.hook(&message(&id, hostile, "USER")).await.0, 200);
    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go(&format!("/console/conversations?bot={BOT}")).await;
    let link = b
        .client
        .find(Locator::Css("#conversations tbody td:first-child a"))
        .await
        .unwrap();
    assert_eq!(link.text().await.unwrap(), id, "the id is shown as text");
    link.click().await.unwrap();
    assert_eq!(b.text("#conversation-id").await, id);
    assert_eq!(b.texts("#transcript .text").await, [hostile]);
    assert_eq!(b.texts("#timeline .agent-name").await, ["<i>agent</i>"]);
    assert!(b.client.get_alert_text().await.is_err(), "no dialog opened");
    assert!(
        b.client
            .find_all(Locator::Css("main img, main script, main b, main i"))
            .await
            .unwrap()
            .is_empty(),
        "no element was made from the text"
    );
    b.screenshot("hostile").await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_retried_from_the_jobs_page_is_delivered_and_shows_succeeded() {
    let receiver = Receiver::start().await;
    receiver.always(Some(500));
    let tail = format!(
        "[[bots.on_end]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\nretry = {{ max_attempts = 1 }}\n",
        receiver.url
    );
    let app = console_app(&tail).await;
    let c = unique("retry");
    app.end(&c).await;
    let job = app.settled_jobs(&c, 1).await.remove(0);
    assert_eq!(job["state"], "dead");
    let id = job["id"].as_str().unwrap().to_owned();
    // A second dead job, to be given up.
    let given_up = unique("discard");
    app.end(&given_up).await;
    let gone = app.settled_jobs(&given_up, 1).await.remove(0);
    assert_eq!(gone["state"], "dead");
    let gone = gone["id"].as_str().unwrap().to_owned();
    receiver.always(None);

    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go("/console/jobs?state=dead").await;
    b.screenshot("jobs").await;
    b.client
        .find(Locator::Css(&format!("#jobs input[value=\"{id}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click_and_wait("#jobs-form button:not(.danger)").await;
    assert_eq!(b.text("p.notice").await, "Retried 1 job.");
    app.settled_jobs(&c, 1).await;
    eventually("the receiver has the delivery", || async {
        (receiver.deliveries().len() == 3).then_some(())
    })
    .await;

    // The other is discarded from the same page: given up for good, never delivered.
    b.go("/console/jobs?state=dead").await;
    b.client
        .find(Locator::Css(&format!("#jobs input[value=\"{gone}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click_and_wait("#jobs-form button.danger").await;
    assert_eq!(b.text("p.notice").await, "Discarded 1 job.");
    assert_eq!(app.jobs_of(&given_up).await[0]["state"], "discarded");
    assert_eq!(b.text("#jobs-form p.empty").await, "No job matches.");
    // Nothing selected: said so, nothing done.
    b.go(&format!("/console/jobs?bot={BOT}")).await;
    b.click_and_wait("#jobs-form button.danger").await;
    assert_eq!(
        b.text("p.notice").await,
        "Select at least one dead or orphaned job."
    );
    b.go(&format!("/console/jobs?bot={BOT}&action=crm")).await;
    let mut badges = b.texts("#jobs tbody .badge").await;
    badges.sort();
    assert_eq!(badges, ["discarded", "succeeded"]);
    b.go(&format!("/console/bots/{BOT}/conversations/{c}"))
        .await;
    assert_eq!(
        b.texts("section.job .attempts .badge").await,
        ["failed", "succeeded"]
    );
    b.go("/console/destinations").await;
    let row = b.texts("#destinations tbody tr").await;
    assert!(
        row.len() == 1 && row[0].contains("crm") && row[0].contains("33.3 %"),
        "{row:?}"
    );
    b.screenshot("destinations").await;
    // The overview counts the end once its instance has flushed (every two seconds).
    eventually("the overview shows the end", || async {
        b.go("/console").await;
        let ends = b.text("figure.chart:nth-child(2) .max").await;
        (ends != "max 0.0").then_some(())
    })
    .await;
    b.screenshot("overview").await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_csrf_token_is_refused_and_pages_carry_the_security_headers() {
    let app = console_app("").await;
    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    let cookie = b.client.get_named_cookie("wrapup_console").await.unwrap();
    let session = format!("wrapup_console={}", cookie.value());
    b.go("/console/jobs").await;
    let csrf = b
        .client
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    b.close().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post_form = |route: &'static str, body: String| {
        let (http, session, base) = (http.clone(), session.clone(), app.base.clone());
        async move {
            http.post(format!("{base}/console/jobs/{route}"))
                .header("cookie", &session)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // A form's way back stays a console page: dot segments and backslashes fall back to
    // the jobs page.
    for back in [
        "/console/../../evil",
        "/console/..%5C..%5Cevil",
        "/console/%2e%2e/evil",
        "/console\\..\\evil",
    ] {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &csrf)
            .append_pair("back", back)
            .finish();
        let resp = post_form("discard", body).await;
        assert_eq!(resp.status(), 303, "{back}");
        assert_eq!(
            resp.headers()["location"],
            "/console/jobs?empty=1",
            "{back}"
        );
    }
    // Signed in, but without (or with a wrong) CSRF token: refused, nothing done.
    for body in [
        "mode=selected&ids=job_x",
        "mode=selected&ids=job_x&csrf=forged",
    ] {
        for route in ["retry", "discard", "repoint"] {
            let resp = post_form(route, body.to_owned()).await;
            assert_eq!(resp.status(), 403, "{route}: {body}");
        }
    }
    let resp = http
        .post(format!("{}/console/logout", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "sign-out needs the token too");
    let resp = http
        .get(format!("{}/console", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    // A cookie signed with another key, or expired, is no session.
    let resp = http
        .get(format!("{}/console", app.base))
        .header("cookie", "wrapup_console=forged.value")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn without_an_admin_token_the_console_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_text(&dir.path().join("wrapup.db"), "").replace("[admin]", "[not_admin]");
    let config: String = config
        .lines()
        .filter(|l| !l.contains("token_env") && !l.contains("[not_admin]"))
        .collect::<Vec<_>>()
        .join("\n");
    let app = TestApp::build().dir(dir).config(&config).spawn().await;
    for path in ["/console", "/console/login", "/console/jobs"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    let resp = app
        .client
        .post(format!("{}/console/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=anything-at-all-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// A client whose connections come from `ip` (a loopback address), following no redirect.
fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Issue 23, item 5: the sign-in limit is per client address. Ten wrong tokens from one
/// address get it 429; an operator at another address still signs in with the right one.
#[tokio::test]
async fn wrong_tokens_from_one_address_do_not_lock_out_another() {
    let app = TestApp::spawn().await;
    let post = |client: reqwest::Client, token: &'static str| {
        let url = format!("{}/console/login", app.base);
        async move {
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let attacker = from([127, 0, 0, 2]);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            post(attacker.clone(), "wrong-token-0123456789")
                .await
                .as_u16(),
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Another address: the right token signs in (a redirect to the console).
    let operator = post(from([127, 0, 0, 1]), ADMIN_TOKEN).await;
    assert!(operator.is_redirection(), "{operator}");
}

/// Issue 23, item 5: behind a proxy listed in `server.trusted_proxies`, the sign-in limit
/// is per client the proxy forwarded for; from anyone else, `X-Forwarded-For` is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_the_sign_in_limit_is_per_forwarded_client() {
    let app = TestApp::build()
        .server("trusted_proxies = [\"127.0.0.2\"]")
        .spawn()
        .await;
    let post = |client: &reqwest::Client, forwarded: &str, token: &str| {
        client
            .post(format!("{}/console/login", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", forwarded)
            .body(format!("token={token}"))
            .send()
    };
    let proxy = from([127, 0, 0, 2]);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        // The attacker writes an address of its own in front; the proxy appends the real one.
        let resp = post(
            &proxy,
            "203.0.113.50, 198.51.100.66",
            "wrong-token-0123456789",
        );
        statuses.push(resp.await.unwrap().status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Another client through the same proxy signs in.
    let operator = post(&proxy, "198.51.100.7", ADMIN_TOKEN).await.unwrap();
    assert!(operator.status().is_redirection(), "{}", operator.status());
    // Not a trusted proxy: a different X-Forwarded-For per try does not escape the limit.
    let direct = from([127, 0, 0, 3]);
    let mut statuses = Vec::new();
    for i in 0..12 {
        let resp = post(&direct, &format!("192.0.2.{i}"), "wrong-token-0123456789");
        statuses.push(resp.await.unwrap().status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_destination_is_marked_paused_on_the_destinations_page() {
    let receiver = Receiver::start().await;
    receiver.always(Some(503));
    let tail = format!(
        "[[bots.on_end]]\nname = \"crm\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\nretry = {{ max_attempts = 5, initial_delay = \"100ms\", max_delay = \"100ms\" }}\n[workers]\npause_after = 2\npause_for = \"1h\"\n",
        receiver.url
    );
    let app = console_app(&tail).await;
    for _ in 0..3 {
        app.end(&unique("paused")).await;
    }
    eventually("crm is paused", || async {
        let (_, stats) = app.admin(reqwest::Method::GET, "/destinations").await;
        stats["destinations"]
            .as_array()
            .and_then(|d| {
                d.iter()
                    .find(|d| d["action"] == "crm" && d["paused"] == true)
            })
            .map(|_| ())
    })
    .await;
    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go("/console/destinations").await;
    assert_eq!(
        b.texts("#destinations tbody .badge.paused").await,
        ["paused"]
    );
    let title = b
        .client
        .find(Locator::Css("#destinations .badge.paused"))
        .await
        .unwrap()
        .attr("title")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        title.contains("failed attempts in a row") && title.contains("next probe in"),
        "{title}"
    );
    b.screenshot("destination-paused").await;
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    b.close().await;
}

/// An action's dead jobs re-pointed in bulk from the jobs page: a window that holds none
/// says so and changes nothing; the whole backlog then goes to the other action, each job
/// delivered once under its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_dead_jobs_are_re_pointed_in_bulk_from_the_jobs_page() {
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    old.always(Some(500));
    let hook = |name: &str, url: &str| {
        format!(
            "[[bots.on_end]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"whsec_dGVzdC13ZWJob29rLWtleS0wMTIzNDU2Nzg5YWJjZGVm\"\nretry = {{ max_attempts = 1 }}\n"
        )
    };
    let app = console_app(&format!(
        "{}{}",
        hook("legacy", &old.url),
        hook("crm", &new.url)
    ))
    .await;
    let ids: Vec<String> = (0..3).map(|_| unique("bulkrp")).collect();
    let mut dead = Vec::new();
    for c in &ids {
        assert_eq!(app.end(c).await.0, 200);
        let jobs = app.settled_jobs(c, 2).await;
        let legacy = jobs.iter().find(|j| j["action"] == "legacy").unwrap();
        assert_eq!(legacy["state"], "dead", "{jobs:?}");
        dead.push(legacy["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(new.deliveries().len(), 3);

    let b = Browser::open(&app.base).await;
    b.sign_in(ADMIN_TOKEN).await;
    b.go(&format!("/console/jobs?state=dead&bot={BOT}&action=legacy"))
        .await;
    let fill = |css: &'static str, value: &'static str| {
        let client = b.client.clone();
        async move {
            client
                .execute(
                    &format!("document.querySelector('{css}').value = arguments[0]"),
                    vec![json!(value)],
                )
                .await
                .unwrap();
        }
    };
    // A window before every job: nothing matches, nothing moves.
    fill("#repoint input[name=to]", "crm").await;
    fill("#repoint input[name=until]", "2000-01-01T00:00").await;
    b.screenshot("jobs-repoint").await;
    b.click_and_wait("#repoint button").await;
    assert_eq!(b.text("p.notice").await, "Re-pointed 0 jobs.");
    assert_eq!(
        b.texts("#jobs tbody .badge").await,
        ["dead", "dead", "dead"]
    );
    // The whole backlog.
    fill("#repoint input[name=to]", "crm").await;
    b.click_and_wait("#repoint button").await;
    assert_eq!(b.text("p.notice").await, "Re-pointed 3 jobs.");
    eventually("the re-pointed jobs are delivered to crm", || async {
        (new.deliveries().len() == 6).then_some(())
    })
    .await;
    for id in &dead {
        let (_, job) = app
            .admin(reqwest::Method::GET, &format!("/jobs/{id}"))
            .await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let ids_seen: Vec<String> = new.deliveries().iter().map(|d| d.id()).collect();
    for id in &dead {
        assert_eq!(
            ids_seen.iter().filter(|s| *s == id).count(),
            1,
            "{id} in {ids_seen:?}"
        );
    }
    assert_eq!(b.console_errors().await, Vec::<String>::new());
    // An action that does not exist: a clear refusal naming the field (a 400 page).
    b.go(&format!("/console/jobs?state=dead&bot={BOT}&action=legacy"))
        .await;
    fill("#repoint input[name=to]", "nowhere").await;
    b.click_and_wait("#repoint button").await;
    let said = b.text("body").await;
    assert!(said.contains("to: bot"), "{said}");
    b.screenshot("jobs-repoint-refused").await;
    b.close().await;
}
