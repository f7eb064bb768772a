//! Issue 25, item 14: the docs' shell blocks. Every one in README.md and docs/ says, in an
//! HTML comment on the line before it, that a test runs it (`<!-- runs: name -->`, a test
//! function that reads that doc, or a script that does) or why it cannot run here
//! (`<!-- not run: why -->`). The runnable ones run below, as written, against a server
//! each test starts; where a doc shows output (a `# {…}` line, `…` standing for the rest),
//! the output must match it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap()
}

/// README.md and every docs/*.md, as paths relative to the repository.
fn doc_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    files.sort();
    files.insert(0, "README.md".into());
    files
}

/// A doc's shell blocks: (the marker line before it, the block).
fn shell_blocks(doc: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_end();
        if ["```sh", "```bash", "```shell", "```console"].contains(&fence) {
            let marker = if i > 0 {
                lines[i - 1].to_owned()
            } else {
                String::new()
            };
            let end = (i + 1..lines.len())
                .find(|j| lines[*j].starts_with("```"))
                .expect("a closed block");
            blocks.push((marker, lines[i + 1..end].join("\n")));
            i = end;
        }
        i += 1;
    }
    blocks
}

/// The `n`th (from 0) shell block of a doc.
fn block(doc_path: &str, n: usize) -> String {
    shell_blocks(&read(doc_path))
        .into_iter()
        .nth(n)
        .unwrap_or_else(|| panic!("{doc_path} has no shell block {n}"))
        .1
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_shell_block_is_run_by_a_test_or_says_why_not() {
    let mut sources = Vec::new();
    rust_sources(&root().join("tests"), &mut sources);
    rust_sources(&root().join("src"), &mut sources);
    let sources: Vec<(PathBuf, String)> = sources
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    let mut seen = 0;
    for doc_path in doc_files() {
        for (marker, _) in shell_blocks(&read(&doc_path)) {
            seen += 1;
            let inner = marker
                .strip_prefix("<!-- ")
                .and_then(|m| m.strip_suffix(" -->"))
                .unwrap_or_else(|| {
                    panic!("{doc_path}: a shell block without a `<!-- runs: … -->` or `<!-- not run: … -->` line before it")
                });
            if let Some(why) = inner.strip_prefix("not run: ") {
                assert!(why.len() >= 20, "{doc_path}: say why not ({why:?})");
                continue;
            }
            let runner = inner
                .strip_prefix("runs: ")
                .unwrap_or_else(|| panic!("{doc_path}: {marker}"));
            // The runner reads this doc: a script that names it, or a test function in a
            // file that names it.
            let doc_name = Path::new(&doc_path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if runner.contains('/') {
                assert!(
                    read(runner).contains(&doc_path),
                    "{doc_path}: {runner} does not read it"
                );
            } else {
                let found = sources
                    .iter()
                    .find(|(_, text)| text.contains(&format!("fn {runner}(")))
                    .unwrap_or_else(|| panic!("{doc_path}: no test fn {runner}"));
                assert!(
                    found.1.contains(&doc_name),
                    "{doc_path}: {} (with {runner}) does not read it",
                    found.0.display()
                );
            }
        }
    }
    assert!(seen >= 15, "{seen} blocks");
}

/// Whether `out` holds each of the documented outputs, in order; `…` in one stands for
/// anything.
fn shows(out: &str, expected: &[String]) -> Result<(), String> {
    let mut at = 0;
    for line in expected {
        for piece in line.split('…').filter(|p| !p.is_empty()) {
            match out[at..].find(piece) {
                Some(i) => at += i + piece.len(),
                None => return Err(format!("{piece:?} (of {line:?}) not in {:?}", &out[at..])),
            }
        }
    }
    Ok(())
}

/// A directory holding `wrapup` (this build) for a block's `PATH`.
fn wrapup_on_path() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_wrapup"), dir.path().join("wrapup")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

fn bash(script: &str, path: &str, dir: &Path) -> std::process::Output {
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path)
        .env_remove("WRAPUP_URL")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// README.md's "Two commands" and "Try it": the server on the example configuration, the
/// seed's sample with curl (its printed answers as shown), then the CLI's flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_runs_as_written() {
    let two = block("README.md", 0);
    let (first, second) = two.split_once('\n').unwrap();
    let test_command = second.split('#').next().unwrap().trim();
    assert!(
        read(".ci/run").lines().any(|l| l.trim() == test_command),
        ".ci/run does not call {test_command:?}"
    );
    // The first command, with this build for `cargo run --release --`, in a directory of
    // its own (the store lands next to the configuration), on a free port.
    let serve = first.split('#').next().unwrap().trim();
    let args = serve
        .strip_prefix("cargo run --release -- ")
        .expect("the first command runs the server");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wrapup.toml");
    std::fs::copy(root().join("examples/wrapup.toml"), &config).unwrap();
    let args: Vec<String> = args
        .split_whitespace()
        .map(|a| {
            if a == "examples/wrapup.toml" {
                config.display().to_string()
            } else {
                a.to_owned()
            }
        })
        .collect();
    let mut child = crate::crash::Server(
        Command::new(env!("CARGO_BIN_EXE_wrapup"))
            .args(&args)
            .env("WRAPUP_LISTEN", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = listening(&mut child);
    let listen = started["listen"].as_str().unwrap().to_owned();
    assert!(
        dir.path().join("wrapup.db").exists(),
        "the store is next to the file"
    );
    let base = format!("http://{listen}");
    let (_bin, path) = wrapup_on_path();

    // "Try it": the token and the seed's sample with curl; what it prints is as shown.
    let sample = block("README.md", 1)
        .replace("cargo run -q --release --", "wrapup")
        .replace("http://127.0.0.1:8080", &base);
    let shown: Vec<String> = sample
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .collect();
    assert_eq!(shown.len(), 2, "{sample}");
    let out = bash(&sample, &path, dir.path());
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    shows(&printed, &shown).unwrap();

    // The CLI's flow, against the same server (`--url` from WRAPUP_URL).
    let flow = block("README.md", 2);
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &flow])
        .env("PATH", &path)
        .env("WRAPUP_URL", &base)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    // `… | jq .status` says ended; the agent filter finds c-42, the anomaly filter the
    // curl sample's conversation (its end came with no agent entry).
    assert!(printed.contains("\"ended\""), "{printed}");
    let lists: Vec<&str> = printed.split("\"conversations\"").skip(1).collect();
    assert_eq!(lists.len(), 2, "{printed}");
    assert!(
        lists[0].contains("\"c-42\"") && !lists[0].contains("atesta-mlxxxxxx"),
        "{printed}"
    );
    assert!(
        lists[1].contains("atesta-mlxxxxxx") && !lists[1].contains("\"c-42\""),
        "{printed}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// docs/configuration.md's environment overrides: two listeners from the environment.
#[tokio::test]
async fn the_environment_overrides_block_runs_as_written() {
    let command = block("docs/configuration.md", 0);
    let (listen, health) = (free_port_here(), free_port_here());
    let command = command
        .replace("127.0.0.1:8090", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8091", &format!("127.0.0.1:{health}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/wrapup.toml"),
        dir.path().join("wrapup.toml"),
    )
    .unwrap();
    let (_bin, path) = wrapup_on_path();
    let mut child = crate::crash::Server(
        Command::new("bash")
            // One simple command: bash runs it in its own place (no child to leave behind).
            .args(["-c", &command])
            .env("PATH", &path)
            .current_dir(dir.path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = listening(&mut child);
    assert_eq!(started["listen"], format!("127.0.0.1:{listen}"));
    assert_eq!(started["health_listen"], format!("127.0.0.1:{health}"));
    let ready = client()
        .get(format!("http://127.0.0.1:{health}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(child);
}

/// The fields of a started server's `wrapup listening` line (its log is drained after).
fn listening(child: &mut crate::crash::Server) -> serde_json::Value {
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let started = loop {
        let line = lines.next().expect("a log line").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "wrapup listening" {
            break v["fields"].clone();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    started
}

fn free_port_here() -> u16 {
    crate::tls::free_port()
}

/// docs/monitoring.md's log query (journald's part replaced by the server's own log): it
/// prints exactly the access lines of the requests that failed.
#[tokio::test]
async fn the_log_query_selects_the_failed_requests() {
    let query = block("docs/monitoring.md", 0);
    let (_, jq) = query.split_once(" | ").expect("journalctl … | jq …");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config_text(&dir.path().join("wrapup.db"), ""));
    let (server, started, logs) = crate::crash::serve_env(&config, &[]);
    let base = format!("http://{}", started["listen"].as_str().unwrap());
    let client = client();
    let hook = format!("{base}/agentai/api/v1/hooks/{BOT}");
    let ok = client
        .post(&hook)
        .header("token", token())
        .json(&seed_with(&unique("q")))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let refused = client
        .post(&hook)
        .header("token", "not-a-token")
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let missing = client
        .get(format!("{base}/api/v1/bots/{BOT}/conversations/nope"))
        .header("token", token())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let written = eventually("three access lines", || async {
        let lines = logs.lock().unwrap().clone();
        (lines
            .iter()
            .filter(|l| l.contains("wrapup::access"))
            .count()
            >= 3)
            .then_some(lines)
    })
    .await;
    drop(server);
    let log = dir.path().join("log.jsonl");
    std::fs::write(&log, written.join("\n")).unwrap();
    let out = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("cat {} | {jq}", log.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let selected: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<u64> = selected
        .iter()
        .map(|f| f["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 404], "{selected:?}");
}
