//! A short smoke run of the load generator against the real server (the example
//! configuration on a fresh database, port 0), in each workload, with its verification.

use std::process::Command;

use wrapup::{App, config};

async fn server(dir: &std::path::Path) -> App {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/wrapup.toml"
    ))
    .expect("the example configuration");
    let text = example
        .replace(
            "sqlite://wrapup.db",
            &format!("sqlite://{}", dir.join("load.db").display()),
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let file = config::parse(&text).expect("parses");
    let settings = config::validate(&file, dir, |_| None).expect("valid");
    App::build(settings).await.expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_and_verifies_what_it_sent() {
    wrapup::install_tls_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = server(dir.path()).await;
    let base = format!("http://{}", app.local_addr());
    for workload in ["end-only", "lifecycle", "message", "demo"] {
        let out = Command::new(env!("CARGO_BIN_EXE_wrapup-load"))
            .args(["--url", &base, "--connections", "4", "--duration", "1s"])
            .args(["--warmup", "200ms", "--quiet", "--workload", workload])
            .args(if workload == "message" {
                vec![]
            } else {
                vec!["--verify"]
            })
            .env_remove("WRAPUP_CLIENT_ID")
            .env_remove("WRAPUP_CLIENT_SECRET")
            .output()
            .expect("wrapup-load runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(result["errors"], 0, "{result}");
        assert!(result["requests"].as_u64().unwrap_or(0) > 0, "{result}");
        if workload != "message" {
            assert!(
                result["verified_ends"].as_u64().unwrap_or(0) > 0,
                "{result}"
            );
        }
    }
    app.stop().await;
}

/// Issue 17, item 8: a run whose requests fail exits non-zero and says how they were
/// answered; `--help` never prints the secret from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_requests_fail_exits_non_zero_with_the_answers_by_status() {
    wrapup::install_tls_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = server(dir.path()).await;
    let base = format!("http://{}", app.local_addr());
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wrapup-load"))
            .args(["--url", &base, "--connections", "2", "--duration", "500ms"])
            .args(["--warmup", "0s", "--quiet"])
            .args(extra)
            .env_remove("WRAPUP_CLIENT_ID")
            .env("WRAPUP_CLIENT_SECRET", "the-wrong-secret-0123456789")
            .output()
            .expect("wrapup-load runs")
    };
    let out = run(&[]);
    assert!(!out.status.success(), "every request got 401");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        result["by_status"]["401"].as_u64().unwrap_or(0) > 0,
        "{result}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requests failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run(&["--allow-errors"]).status.success());
    let help = run(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("WRAPUP_CLIENT_SECRET"), "{text}");
    assert!(
        !text.contains("the-wrong-secret") && !text.contains("demo-secret"),
        "{text}"
    );
    app.stop().await;
}
