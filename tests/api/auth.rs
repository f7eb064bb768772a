//! Who may post: DESIGN.md's 401/403 rows and the field variations of SPEC.md.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::helpers::*;

async fn post_with(app: &TestApp, header: &str, token: &str) -> (u16, Value) {
    let (status, body) = app
        .post(
            &format!("/agentai/api/v1/hooks/{BOT}"),
            header,
            token,
            &seed_with(&unique("auth")),
        )
        .await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_request_without_a_token_gets_401() {
    let app = TestApp::spawn().await;
    let (status, body) = post_with(&app, "", "").await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"],
        "a JWT is required in header auth, token or Authorization: Bearer"
    );
}

#[tokio::test]
async fn unreadable_forged_and_wrong_algorithm_tokens_get_401() {
    let app = TestApp::spawn().await;
    let now = now_secs();
    let cases = [
        ("garbage", "not.a.jwt".to_owned()),
        ("two parts", "abc.def".to_owned()),
        (
            "wrong secret",
            sign(
                Algorithm::HS256,
                "another-secret-0123456789abcdef",
                json!({"appId": HS256_APP}),
            ),
        ),
        (
            "HS512 on an HS256 app",
            sign(Algorithm::HS512, HS256_SECRET, json!({"appId": HS256_APP})),
        ),
        (
            "HS256 on an HS512 app",
            sign(Algorithm::HS256, HS512_SECRET, json!({"appId": HS512_APP})),
        ),
        (
            "unknown app",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": "cs-nobody"}),
            ),
        ),
        (
            "misspelled appid",
            sign(Algorithm::HS256, HS256_SECRET, json!({"appid": HS256_APP})),
        ),
        ("alg none", handmade_none(json!({"appId": HS256_APP}))),
        (
            "RS public key used as an HS secret",
            handmade_hs256(
                &std::fs::read_to_string(fixtures().join("test-only-rs256-public.pem")).unwrap(),
                &json!({"alg": "HS256", "typ": "JWT"}),
                &json!({"appId": RS256_APP}),
            ),
        ),
        (
            "expired (seconds)",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": HS256_APP, "exp": now - 3600}),
            ),
        ),
        (
            "expired (milliseconds)",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": HS256_APP, "exp": (now - 3600) * 1000}),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": HS256_APP, "nbf": now + 3600}),
            ),
        ),
        (
            "issued in the future (ms)",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": HS256_APP, "iat": (now + 3600) * 1000}),
            ),
        ),
        ("oversized", "a".repeat(9000)),
    ];
    for (name, token) in cases {
        let (status, body) = post_with(&app, "token", &token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["code"], 401, "{name}");
    }
}

fn handmade_none(claims: Value) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        e.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        e.encode(claims.to_string())
    )
}

#[tokio::test]
async fn tokens_as_the_vendors_clients_make_them_are_accepted() {
    let app = TestApp::spawn().await;
    let now = now_secs();
    let cases = [
        (
            "documented payload",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"sub": "1234567890", "appId": HS256_APP}),
            ),
        ),
        (
            "SDK style, client id in iss",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"iss": HS256_APP, "sub": "u", "aud": "https://idproxy.kore.com/authorize", "botId": BOT, "isAnonymous": "false"}),
            ),
        ),
        (
            "widget times in milliseconds",
            sign(
                Algorithm::HS256,
                HS256_SECRET,
                json!({"appId": HS256_APP, "iat": now * 1000, "exp": (now + 3600) * 1000}),
            ),
        ),
        (
            "HS512 app",
            sign(Algorithm::HS512, HS512_SECRET, json!({"appId": HS512_APP})),
        ),
        (
            "RS256 app",
            sign_rs256(json!({"sub": "1", "appId": RS256_APP, "exp": now + 60})),
        ),
    ];
    for (name, token) in cases {
        let (status, body) = post_with(&app, "auth", &token).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
}

#[tokio::test]
async fn the_same_token_in_several_headers_is_fine_but_different_ones_are_refused() {
    let app = TestApp::spawn().await;
    let url = format!("{}/agentai/api/v1/hooks/{BOT}", app.base);
    let t = token();
    let resp = app
        .client
        .post(&url)
        .header("auth", &t)
        .header("token", &t)
        .bearer_auth(&t)
        .json(&seed_with(&unique("h")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let other = sign(Algorithm::HS512, HS512_SECRET, json!({"appId": HS512_APP}));
    let resp = app
        .client
        .post(&url)
        .header("auth", &t)
        .header("token", &other)
        .json(&seed_with(&unique("h")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn a_valid_token_for_an_app_not_mapped_to_the_bot_gets_403() {
    let app = TestApp::spawn().await;
    let (status, body) = post_with(
        &app,
        "token",
        &sign(Algorithm::HS256, OTHER_SECRET, json!({"appId": OTHER_APP})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = post_with(
        &app,
        "token",
        &sign(
            Algorithm::HS256,
            HS256_SECRET,
            json!({"iss": HS256_APP, "botId": OTHER_BOT}),
        ),
    )
    .await;
    assert_eq!(status, 403, "a botId claim naming another bot");
    // Reads follow the same rules.
    let resp = app
        .client
        .get(format!("{}/api/v1/bots/{BOT}/conversations/x", app.base))
        .header(
            "auth",
            sign(Algorithm::HS256, OTHER_SECRET, json!({"appId": OTHER_APP})),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        app.client
            .get(format!("{}/api/v1/bots/{BOT}/conversations/x", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn a_reused_jti_is_refused_also_after_a_restart() {
    let mut app = TestApp::spawn().await;
    let jti_token = |jti: &str| {
        sign(
            Algorithm::HS256,
            JTI_SECRET,
            json!({"appId": JTI_APP, "jti": jti}),
        )
    };
    let (status, body) = post_with(
        &app,
        "token",
        &sign(Algorithm::HS256, JTI_SECRET, json!({"appId": JTI_APP})),
    )
    .await;
    assert_eq!(
        (status, body["message"].clone()),
        (401, json!("this app enforces JTI; a jti claim is required"))
    );

    let first = jti_token(&unique("jti"));
    assert_eq!(post_with(&app, "token", &first).await.0, 200);
    let (status, body) = post_with(&app, "token", &first).await;
    assert_eq!(
        (status, body["message"].clone()),
        (401, json!("this token's jti has already been used"))
    );
    app.restart().await;
    assert_eq!(
        post_with(&app, "token", &first).await.0,
        401,
        "replay after restart"
    );
    assert_eq!(
        post_with(&app, "token", &jti_token(&unique("jti"))).await.0,
        200
    );
}

#[tokio::test]
async fn a_refused_request_does_not_use_up_its_jti() {
    let app = TestApp::spawn().await;
    let token = sign(
        Algorithm::HS256,
        JTI_SECRET,
        json!({"appId": JTI_APP, "jti": unique("j")}),
    );
    let c = unique("j");
    app.end(&c).await;
    let (status, _) = app
        .post(
            &format!("/agentai/api/v1/hooks/{BOT}"),
            "auth",
            &token,
            &event_body(&c, json!([summary()])),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        post_with(&app, "auth", &token).await.0,
        200,
        "the 409 stored nothing, the jti included"
    );
}

/// Security review, low 2: a botId claim that is not a non-empty string was ignored, so
/// the token worked on every bot of its app.
#[tokio::test]
async fn a_bot_id_claim_that_is_not_a_non_empty_string_is_refused() {
    let app = TestApp::spawn().await;
    for claim in [json!([BOT]), json!(""), json!(123), json!({"id": BOT})] {
        let token = sign(
            Algorithm::HS256,
            HS256_SECRET,
            json!({"appId": HS256_APP, "botId": claim}),
        );
        let (status, body) = post_with(&app, "token", &token).await;
        assert_eq!(status, 401, "{claim}: {body}");
        assert_eq!(
            body["message"],
            "the token's botId claim must be a non-empty string naming the bot"
        );
    }
    let token = sign(
        Algorithm::HS256,
        HS256_SECRET,
        json!({"appId": HS256_APP, "botId": BOT}),
    );
    assert_eq!(post_with(&app, "token", &token).await.0, 200);
}

/// Security review, low 3: RFC 7515 §4.1.11 — a crit header naming anything the server
/// does not understand must be refused.
#[tokio::test]
async fn a_token_with_critical_header_extensions_is_refused() {
    let app = TestApp::spawn().await;
    let claims = json!({"appId": HS256_APP});
    let crit = handmade_hs256(
        HS256_SECRET,
        &json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"], "exp": 1}),
        &claims,
    );
    let (status, body) = post_with(&app, "token", &crit).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("crit")
    );
    let plain = handmade_hs256(
        HS256_SECRET,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
    );
    assert_eq!(post_with(&app, "token", &plain).await.0, 200);
}

/// Security review, low 6: 10^11 + 1 was read as milliseconds (a not-before in 1973) and
/// exp = 1e300 never expired. Times plausible in neither unit are refused.
#[tokio::test]
async fn time_claims_outside_any_plausible_time_are_refused() {
    let app = TestApp::spawn().await;
    let now = now_secs();
    for claims in [
        json!({"appId": HS256_APP, "nbf": 100_000_000_001_i64}),
        json!({"appId": HS256_APP, "exp": 1e300}),
        json!({"appId": HS256_APP, "iat": 500_000_000_000_i64}),
        json!({"appId": HS256_APP, "exp": 200_000_000_000_000_i64}),
    ] {
        let token = sign(Algorithm::HS256, HS256_SECRET, claims.clone());
        let (status, body) = post_with(&app, "token", &token).await;
        assert_eq!(status, 401, "{claims}: {body}");
    }
    // Seconds and milliseconds of now both still work.
    for exp in [now + 600, (now + 600) * 1000] {
        let token = sign(
            Algorithm::HS256,
            HS256_SECRET,
            json!({"appId": HS256_APP, "exp": exp}),
        );
        assert_eq!(post_with(&app, "token", &token).await.0, 200, "exp {exp}");
    }
}

/// Fair share: an app over its `rate_limit` gets 429 with Retry-After; another app is not
/// held back by it.
#[tokio::test]
async fn an_app_over_its_rate_limit_gets_429_and_other_apps_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_actions(&dir.path().join("wrapup.db"), "", "").replace(
        &format!("client_id = \"{HS512_APP}\"\n"),
        &format!("client_id = \"{HS512_APP}\"\nrate_limit = 1\nrate_burst = 3\n"),
    );
    assert!(text.contains("rate_burst = 3"));
    let app = TestApp::build().dir(dir).config(&text).spawn().await;
    let limited = sign(Algorithm::HS512, HS512_SECRET, json!({"appId": HS512_APP}));
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, body) = app
            .post(
                &format!("/agentai/api/v1/hooks/{BOT}"),
                "token",
                &limited,
                &seed_with(&unique("rate")),
            )
            .await;
        statuses.push(status.as_u16());
        if status == 429 {
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("rate_limit")
            );
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let resp = app
        .client
        .post(format!("{}/agentai/api/v1/hooks/{BOT}", app.base))
        .header("token", &limited)
        .json(&seed_with(&unique("rate")))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The unlimited app next to it is answered as usual.
    for _ in 0..10 {
        assert_eq!(app.end(&unique("free")).await.0, 200);
    }
}

/// A records answer is charged by its size: after a page of about 600 KB (nine units of
/// 64 KiB), a rate-limited app gets about ten fewer small requests from its burst than it
/// would have, where before every answer cost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_records_answer_costs_its_app_by_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with_actions(&dir.path().join("wrapup.db"), "", "").replace(
        &format!("client_id = \"{HS512_APP}\"\n"),
        &format!("client_id = \"{HS512_APP}\"\nrate_limit = 1\nrate_burst = 20\n"),
    );
    let app = TestApp::build().dir(dir).config(&text).spawn().await;
    let c = unique("costly");
    for i in 0..20 {
        let text = format!("{i:02}{}", "x".repeat(30_000));
        let (status, body) = app
            .hook(&json!({"botId": BOT, "conversationId": c, "query": text, "author": {"type": "USER"}}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let limited = sign(Algorithm::HS512, HS512_SECRET, json!({"appId": HS512_APP}));
    let get = |path: String| {
        let (client, base, limited) = (app.client.clone(), app.base.clone(), limited.clone());
        async move {
            client
                .get(format!("{base}{path}"))
                .header("token", limited)
                .send()
                .await
                .unwrap()
        }
    };
    let page = get(format!("/api/v1/bots/{BOT}/conversations/{c}/events")).await;
    assert_eq!(page.status(), 200);
    let bytes = page.bytes().await.unwrap().len();
    assert!(bytes > 9 * 64 * 1024, "{bytes}");
    let mut answered = 0;
    for _ in 0..20 {
        let resp = get(format!("/api/v1/bots/{BOT}/conversations?limit=1")).await;
        if resp.status() == 429 {
            break;
        }
        assert_eq!(resp.status(), 200);
        answered += 1;
    }
    // 19 left of the burst if the page had cost one; 19 - 9 = 10 as it costs ten (one or
    // two more may refill meanwhile, at one a second).
    assert!(
        (9..=12).contains(&answered),
        "{answered} small requests answered"
    );
}

/// A jti the store could not keep (a NUL: PostgreSQL's text refuses it, and in a batch it
/// once failed every request beside it) or longer than 256 bytes is refused at the door
/// with a 401 that says what a jti may be; one with a tab (a control character) too.
#[tokio::test]
async fn a_jti_with_a_nul_or_too_long_is_refused_saying_why() {
    let app = TestApp::spawn().await;
    for jti in ["a\u{0}b".to_owned(), "a\tb".to_owned(), "j".repeat(257)] {
        let token = sign(
            Algorithm::HS256,
            JTI_SECRET,
            json!({"appId": JTI_APP, "jti": jti}),
        );
        let (status, body) = post_with(&app, "token", &token).await;
        assert_eq!(
            (status, body["message"].clone()),
            (
                401,
                json!(
                    "the jti claim must be at most 256 bytes with no NUL or other control character"
                )
            ),
            "{jti:?}"
        );
    }
    let ok = sign(
        Algorithm::HS256,
        JTI_SECRET,
        json!({"appId": JTI_APP, "jti": "j".repeat(256)}),
    );
    assert_eq!(post_with(&app, "token", &ok).await.0, 200);
}
