//! The `wrapup` binary as an integrator runs it.

use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::*;

fn wrapup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args(args)
        .env_remove("WRAPUP_CLIENT_ID")
        .env_remove("WRAPUP_CLIENT_SECRET")
        .output()
        .expect("wrapup runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_token_from_wrapup_token_is_accepted_by_the_server() {
    let app = TestApp::spawn().await;
    let out = wrapup(&["token", "--client-id", HS256_APP, "--secret", HS256_SECRET]);
    assert!(out.status.success());
    let token = stdout(&out);
    let payload: serde_json::Value = {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(payload["appId"], HS256_APP);
    assert_eq!(payload["sub"], "1234567890");
    // A minted token expires in 15 minutes unless told otherwise.
    let exp = payload["exp"].as_i64().expect("an exp claim by default");
    assert!((exp - now_secs() - 900).abs() <= 5, "{exp}");
    let bare = wrapup(&[
        "token",
        "--client-id",
        HS256_APP,
        "--secret",
        HS256_SECRET,
        "--no-exp",
    ]);
    assert!(!stdout(&bare).split('.').nth(1).is_some_and(|p| {
        use base64::Engine;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap();
        String::from_utf8_lossy(&claims).contains("\"exp\"")
    }));
    let (status, body) = app
        .post(
            &format!("/agentassist/api/v1/hooks/{BOT}"),
            "auth",
            &token,
            &seed(),
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!({"STATUS": "OK"})));

    let out = wrapup(&[
        "token",
        "--client-id",
        JTI_APP,
        "--secret",
        JTI_SECRET,
        "--jti",
        "--exp",
        "5m",
    ]);
    let (status, _) = app
        .post(
            &format!("/api/v1/hooks/{BOT}"),
            "token",
            &stdout(&out),
            &seed_with(&unique("cli")),
        )
        .await;
    assert_eq!(
        status, 200,
        "a --jti --exp token satisfies an enforcing app"
    );

    let rs = fixtures().join("test-only-rs256-private.pem");
    let out = wrapup(&[
        "token",
        "--client-id",
        RS256_APP,
        "--alg",
        "RS256",
        "--private-key",
        rs.to_str().unwrap(),
    ]);
    let (status, _) = app
        .post(
            &format!("/api/v1/hooks/{BOT}"),
            "token",
            &stdout(&out),
            &seed_with(&unique("cli")),
        )
        .await;
    assert_eq!(status, 200, "RS256");
}

// The CLI blocks its thread while the server answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapup_send_posts_each_kind_and_conversations_show_reads_it_back() {
    let app = TestApp::spawn().await;
    let c = unique("send");
    let base = app.base.clone();
    let common = [
        "--url",
        &base,
        "--client-id",
        HS256_APP,
        "--secret",
        HS256_SECRET,
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["send"];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        wrapup(&args)
    };
    for extra in [
        vec![
            "transfer",
            "--conversation",
            &c,
            "--type",
            "NA",
            "--transition",
            "entry",
        ],
        vec!["message", "--conversation", &c, "--query", "hello there"],
        vec![
            "transfer",
            "--conversation",
            &c,
            "--type",
            "NA",
            "--transition",
            "exit",
        ],
        vec!["summary", "--conversation", &c],
        vec![
            "end",
            "--conversation",
            &c,
            "--reason",
            "agent_initiated",
            "--custom-field",
            "queueId=1694",
        ],
    ] {
        let out = run(&extra);
        assert!(out.status.success(), "{extra:?}: {}", stdout(&out));
        // The answer alone on standard output (piped: as the server sent it), the status
        // on standard error.
        assert_eq!(stdout(&out), "{\"STATUS\":\"OK\"}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("HTTP 200"));
    }
    let out = run(&["summary", "--conversation", &c]);
    assert!(!out.status.success(), "a 409 makes the command fail");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("HTTP 409"));

    let mut args = vec!["conversations"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["show", "--conversation", &c]);
    let out = wrapup(&args);
    let text = stdout(&out);
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["status"], "ended");
    assert_eq!(record["eventCount"], 5);
    assert_eq!(record["endedBy"]["customFields"]["queueId"], "1694");

    // `conversations list` with the records API's filters; the bot from WRAPUP_BOT.
    let list = |extra: &[&str]| {
        let mut args = vec!["conversations"];
        args.extend_from_slice(&common);
        args.push("list");
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(&args)
            .env_remove("WRAPUP_CLIENT_ID")
            .env_remove("WRAPUP_CLIENT_SECRET")
            .env("WRAPUP_BOT", BOT)
            .output()
            .expect("wrapup runs")
    };
    let out = list(&[
        "--agent",
        "agent1",
        "--reason",
        "agent_initiated",
        "--limit",
        "500",
    ]);
    let page: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&c.as_str()), "{ids:?}");
    let out = list(&["--agent", "nobody-at-all"]);
    let page: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(page["conversations"], serde_json::json!([]));
    let out = list(&["--agent", ""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("HTTP 400"));
}

/// Issue 17, item 8: every flag and argument of every command has help text, and no
/// secret from the environment is printed by it.
#[test]
fn every_flag_of_every_command_says_what_it_is() {
    let commands = [
        "serve",
        "migrate",
        "check-config",
        "token",
        "send end",
        "send transfer",
        "send summary",
        "send message",
        "send raw",
        "jobs list",
        "jobs show",
        "jobs retry",
        "jobs discard",
        "jobs repoint",
        "conversations show",
        "conversations list",
    ];
    for command in commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("-h");
        let out = Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(&args)
            .env("WRAPUP_CLIENT_SECRET", "a-secret-never-shown")
            .env("WRAPUP_ADMIN_TOKEN", "an-admin-token-never-shown")
            .output()
            .expect("wrapup runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(!help.contains("never-shown"), "{command}: {help}");
        let lines: Vec<&str> = help.lines().collect();
        let mut in_list = false;
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_list = *line == "Options:" || *line == "Arguments:";
                continue;
            }
            let item = line.trim_start();
            let is_entry = line.starts_with("  ") && !line.starts_with("          ");
            if !in_list || !is_entry || item.starts_with("-h, --help") {
                continue;
            }
            // "  --flag <VALUE>  Help text", or the text on the next, deeper line: not
            // just a default.
            let same = item.split_once("  ").map(|(_, t)| t.trim()).unwrap_or("");
            let text = if same.is_empty() {
                lines.get(i + 1).map(|l| l.trim()).unwrap_or("")
            } else {
                same
            };
            assert!(
                !text.is_empty() && !text.starts_with('[') && !text.starts_with('-'),
                "{command}: no help for {item:?}"
            );
        }
    }
}

#[test]
fn check_config_accepts_the_example_and_names_the_key_of_a_mistake() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wrapup.toml");
    let out = wrapup(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example).unwrap().replace(
        "apps = [\"cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e\"]",
        "apps = [\"cs-6363fcbb-310e-5b07-91a9-c614cd3cbf6e\", \"cs-x\"]",
    );
    std::fs::write(&bad, text).unwrap();
    for cmd in ["check-config", "serve"] {
        let out = wrapup(&[cmd, "--config", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(78), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim(),
            "wrapup: config error: bots[0].apps[1]: no app with client_id \"cs-x\"",
            "{cmd}"
        );
    }
}

#[test]
fn wrapup_migrate_creates_the_schema_once_even_when_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &config_text(&dir.path().join("m.db"), "")
            .replace("[admin]\ntoken_env", "[admin]\n# token_env"),
    );
    for _ in 0..2 {
        let out = wrapup(&["migrate", "--config", config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = stdout(&out);
        assert!(
            said.ends_with(
                "the sqlite store's schema is at version 12 (this wrapup's newest is 12)"
            ),
            "{said}"
        );
    }
    assert!(dir.path().join("m.db").exists());
}

/// Security review, low 5: ids come from callers; `wrapup jobs list` must not let them
/// drive the operator's terminal (ANSI escapes) or fake a row (a newline).
// Multi-threaded: the CLI runs as a blocking child process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_shows_control_characters_in_caller_ids_escaped() {
    let receiver = crate::receiver::Receiver::start().await;
    let app = TestApp::build().actions(&format!(
        "[[bots.on_end]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
        receiver.url
    )).spawn()
    .await;
    let c = format!("{}\u{1b}]0;pwned\u{7}\nfake-row", unique("ansi"));
    // The job is scheduled in the end's transaction: it is listed as soon as the end is
    // acknowledged.
    assert_eq!(app.end(&c).await.0, 200);
    let out = Command::new(env!("CARGO_BIN_EXE_wrapup"))
        .args([
            "jobs",
            "list",
            "--url",
            &app.base,
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .output()
        .expect("wrapup runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(
        text.contains("\\u{1b}]0;pwned\\u{7}\\u{a}fake-row"),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("fake-row")), "{text}");
}

/// Issue 25, item 7: the published demo secrets run on loopback (the quick start) and
/// nowhere else without `--demo`; the refusal says which keys and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_secrets_are_refused_off_loopback_unless_told_demo() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wrapup.toml");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wrapup.toml");
    std::fs::copy(example, &config).unwrap();
    let serve = |listen: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("WRAPUP_LISTEN", listen)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let out = serve("0.0.0.0:0", &[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("wrapup: config error: apps[0].client_secret, admin.token hold the demo value published with wrapup, and server.listen = \"0.0.0.0:0\" is reachable from other machines")
            && said.contains("--demo"),
        "{said}"
    );
    // On loopback, and with --demo anywhere, it starts (and says it runs on demo values).
    for (listen, extra) in [("127.0.0.1:0", &[][..]), ("0.0.0.0:0", &["--demo"][..])] {
        let mut child = serve(listen, extra);
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        let mut warned = false;
        let started = lines.by_ref().map_while(Result::ok).any(|l| {
            warned |= l.contains("running with the published demo secrets");
            l.contains("wrapup listening")
        });
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(started && warned, "{listen} {extra:?}");
    }
}

/// Issue 25, item 12: exit statuses say what went wrong: 1 an HTTP error (its status on
/// standard error, as `send` does), 2 usage, 3 a server that cannot be reached; and a
/// wrong admin token is told as wrong, not as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exit_status_says_usage_http_error_or_unreachable() {
    let app = TestApp::spawn().await;
    let jobs = |url: &str, token: Option<&str>| {
        let mut args = vec!["jobs", "--url", url];
        if let Some(t) = token {
            args.extend(["--admin-token", t]);
        }
        args.push("list");
        Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(args)
            .env_remove("WRAPUP_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let ok = jobs(&app.base, Some(ADMIN_TOKEN));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stderr).starts_with("HTTP 200"));

    let wrong = jobs(&app.base, Some("not-the-admin-token-at-all"));
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).starts_with("HTTP 401"));
    assert!(String::from_utf8_lossy(&wrong.stdout).contains("the admin token is wrong"));

    let usage = jobs(&app.base, None);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--admin-token"));

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = jobs(&url, Some(ADMIN_TOKEN));
    assert_eq!(unreachable.status.code(), Some(3), "{unreachable:?}");
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
}
