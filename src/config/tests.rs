//! The configuration's errors, each one line naming the key.

use std::path::Path;

use super::*;

fn check(text: &str) -> Result<Settings, String> {
    let file = parse(text).map_err(|e| e.to_string())?;
    validate(&file, Path::new("."), |_| None).map_err(|e| e.to_string())
}

const APP: &str = r#"
[[apps]]
client_id = "cs-1"
client_secret = "0123456789abcdef0123"
"#;

#[test]
fn a_bot_naming_an_unknown_app_is_refused_with_its_key() {
    let text = format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\", \"cs-x\"]\n");
    assert_eq!(
        check(&text).err().unwrap(),
        "bots[0].apps[1]: no app with client_id \"cs-x\""
    );
}

#[test]
fn unknown_keys_and_bad_durations_are_named() {
    let err = check("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n")
        .err()
        .unwrap();
    assert!(err.contains("line 3") && err.contains("listne"), "{err}");
    let text =
        format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\ninactivity_timeout = \"4x\"\n");
    let err = check(&text).err().unwrap();
    assert!(
        err.starts_with("bots[0].inactivity_timeout: line 9: ")
            && err.contains("\"4x\", expected a duration"),
        "{err}"
    );
}

#[test]
fn an_app_may_not_mix_algorithm_families() {
    let text = APP.replace(
        "client_secret =",
        "algorithms = [\"HS256\", \"RS256\"]\nclient_secret =",
    );
    assert_eq!(
        check(&text).err().unwrap(),
        "apps[0].algorithms: mixes HS and RS algorithms; use one family per app"
    );
}

#[test]
fn a_key_of_another_action_kind_is_an_unknown_key_of_this_one() {
    let text = format!(
        "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n[[bots.on_end]]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"s\"\nkeys = [\"k\"]\n"
    );
    let err = check(&text).err().unwrap();
    assert!(err.starts_with("bots[0].on_end[0]"), "{err}");
    assert!(err.contains("unknown field `keys`"), "{err}");
}

#[test]
fn an_unknown_action_kind_lists_the_kinds() {
    let text = format!(
        "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n[[bots.on_end]]\nkind = \"smtp\"\nurl = \"x\"\n"
    );
    let err = check(&text).err().unwrap();
    assert!(err.starts_with("bots[0].on_end[0]"), "{err}");
    assert!(
        err.contains("webhook") && err.contains("nats") && err.contains("redis_cleanup"),
        "{err}"
    );
}

#[test]
fn durations_are_typed_and_zero_is_refused_where_it_would_spin() {
    let ok = check(&format!("{APP}\n[workers]\npoll_interval = \"250ms\"\n")).unwrap();
    assert_eq!(
        ok.workers.poll_interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        check(&format!("{APP}\n[workers]\npoll_interval = \"0s\"\n"))
            .err()
            .unwrap(),
        "workers.poll_interval: must be longer than 0s"
    );
}

#[test]
fn a_second_action_of_a_kind_must_be_named_and_may_share_a_target() {
    let hook = |name: &str| {
        format!(
            "[[bots.on_end]]\nkind = \"webhook\"\n{name}url = \"https://crm.example/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        )
    };
    let bot = format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n");
    let err = check(&format!("{bot}{}{}", hook(""), hook("")))
        .err()
        .unwrap();
    assert!(
        err.starts_with("bots[0].on_end[1].name: is required: on_end[0] is a webhook action too"),
        "{err}"
    );
    // An action is its name: two may send to one URL (with other headers, say).
    check(&format!("{bot}{}{}", hook(""), hook("name = \"audit\"\n"))).unwrap();
    let err = check(&format!(
        "{bot}{}{}",
        hook("previous_names = [\"old\"]\n"),
        hook("name = \"audit\"\nprevious_names = [\"old\"]\n")
    ))
    .err()
    .unwrap();
    assert!(
        err.starts_with("bots[0].on_end[1].previous_names[0]"),
        "{err}"
    );
}

#[test]
fn an_openai_summary_names_what_it_misses() {
    let bot = format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n");
    let err = |summary: &str| check(&format!("{bot}{summary}")).err().unwrap();
    assert_eq!(
        err("[bots.summary]\nprovider = \"gpt\"\n"),
        "bots[0].summary.provider: \"gpt\" is not a provider: write \"extractive\" or \"openai\""
    );
    assert!(
        err("[bots.summary]\nprovider = \"openai\"\nmodel = \"m\"\n")
            .starts_with("bots[0].summary.base_url: is required")
    );
    assert!(
        err("[bots.summary]\nprovider = \"openai\"\nbase_url = \"ftp://x/v1\"\nmodel = \"m\"\n")
            .contains("is not an http:// or https:// URL")
    );
    assert!(
        err("[bots.summary]\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\n")
            .starts_with("bots[0].summary.model: is required")
    );
    assert_eq!(
        err(
            "[bots.summary]\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\napi_key_env = \"NOPE_KEY\"\n"
        ),
        "bots[0].summary.api_key_env: environment variable NOPE_KEY is not set"
    );
    assert_eq!(
        err(
            "[bots.summary]\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nmax_tokens = 1\n"
        ),
        "bots[0].summary.max_tokens: must be between 16 and 32768"
    );
    assert_eq!(
        err("[bots.summary]\nmodel = \"m\"\n"),
        "bots[0].summary.model: applies to provider = \"openai\" only"
    );
    let ok = check(&format!(
        "{bot}[bots.summary]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1/\"\nmodel = \"llama3.1\"\ntimeout = \"20s\"\n"
    ))
    .unwrap();
    let s = ok.bots[0].summary.as_ref().unwrap();
    // The attempt outlasts the request, so a last timeout is stored FAILED.
    assert_eq!(s.action.timeout, Duration::from_secs(25));
    match &s.action.kind {
        ActionKind::Summary {
            provider: SummaryProvider::OpenAi(o),
        } => {
            assert_eq!(o.endpoint(), "http://127.0.0.1:11434/v1/chat/completions");
            assert!(o.instructions.contains("\"situation\""));
            assert_eq!(o.max_tokens, 800);
            assert_eq!(o.max_tokens_field, MaxTokensField::MaxTokens);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_token_limit_goes_under_the_name_the_server_knows() {
    let bot = format!("{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n");
    let err = |summary: &str| check(&format!("{bot}{summary}")).err().unwrap();
    let field = |tail: &str| {
        let ok = check(&format!(
            "{bot}[bots.summary]\nprovider = \"openai\"\nmodel = \"m\"\n{tail}"
        ))
        .unwrap();
        match &ok.bots[0].summary.as_ref().unwrap().action.kind {
            ActionKind::Summary {
                provider: SummaryProvider::OpenAi(o),
            } => o.max_tokens_field,
            other => panic!("{other:?}"),
        }
    };
    use MaxTokensField::*;
    assert_eq!(
        field("base_url = \"https://api.openai.com/v1\"\n"),
        MaxCompletionTokens
    );
    assert_eq!(
        field("base_url = \"https://x.openai.azure.com/openai/v1\"\n"),
        MaxCompletionTokens
    );
    assert_eq!(
        field("base_url = \"http://127.0.0.1:8000/v1\"\n"),
        MaxTokens
    );
    assert_eq!(
        field("base_url = \"https://api.openai.com/v1\"\nmax_tokens_field = \"max_tokens\"\n"),
        MaxTokens
    );
    assert_eq!(
        field("base_url = \"http://vllm/v1\"\nmax_tokens_field = \"max_completion_tokens\"\n"),
        MaxCompletionTokens
    );
    assert_eq!(
        err(
            "[bots.summary]\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nmax_tokens_field = \"n_predict\"\n"
        ),
        "bots[0].summary.max_tokens_field: \"n_predict\" is not a field: write \"max_completion_tokens\" (OpenAI) or \"max_tokens\" (Ollama, vLLM, llama.cpp)"
    );
}

#[test]
fn an_action_name_with_an_at_sign_is_refused() {
    let text = format!(
        "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n[[bots.on_end]]\nkind = \"nats\"\nname = \"crm@summary@1\"\nurl = \"nats://x\"\nsubject = \"s\"\n"
    );
    assert_eq!(
        check(&text).err().unwrap(),
        "bots[0].on_end[0].name: must not contain @"
    );
}

#[test]
fn an_action_named_summary_is_refused_only_beside_a_summary_table() {
    let action = "[[bots.on_end]]\nkind = \"nats\"\nname = \"summary\"\nurl = \"nats://x\"\nsubject = \"s\"\n";
    let bot = "[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n";
    assert!(check(&format!("{APP}\n{bot}{action}")).is_ok());
    assert_eq!(
        check(&format!("{APP}\n{bot}{action}[bots.summary]\n"))
            .err()
            .unwrap(),
        "bots[0].on_end[0].name: \"summary\" names the bot's [bots.summary] jobs: give this action another name"
    );
}

#[test]
fn an_action_name_with_the_re_pointed_marker_is_refused() {
    let text = format!(
        "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n[[bots.on_end]]\nkind = \"nats\"\nname = \"crm (re-pointed from x\"\nurl = \"nats://x\"\nsubject = \"s\"\n"
    );
    assert_eq!(
        check(&text).err().unwrap(),
        "bots[0].on_end[0].name: must not contain \" (re-pointed from \""
    );
}

#[test]
fn the_sqlite_read_connections_are_bounded() {
    assert_eq!(check(APP).unwrap().store.read_connections, 4);
    for n in [0, 65] {
        assert_eq!(
            check(&format!("{APP}\n[store]\nread_connections = {n}\n"))
                .err()
                .unwrap(),
            "store.read_connections: must be 1 to 64"
        );
    }
}

#[test]
fn a_secret_written_as_a_number_is_refused_without_echoing_it() {
    let text = APP.replace(
        "client_secret = \"0123456789abcdef0123\"",
        "client_secret = 1234567890123456",
    );
    assert!(text.contains("1234567890123456"));
    let err = check(&text).err().unwrap();
    assert!(
        err.contains("client_secret") && err.contains("must be a string"),
        "{err}"
    );
    assert!(!err.contains("1234567890123456"), "{err}");
}

#[test]
fn a_reload_names_what_it_added_removed_and_changed_and_never_a_secret() {
    let bot = |extra: &str| {
        format!(
            "{APP}\n[[bots]]\nid = \"st-1\"\napps = [\"cs-1\"]\n{extra}\n[[bots]]\nid = \"st-2\"\napps = [\"cs-1\"]\n"
        )
    };
    let hook = "[[bots.on_end]]\nkind = \"webhook\"\nname = \"crm\"\nurl = \"http://x/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
    let before = check(&bot(hook)).unwrap();
    let same = check(&bot(hook)).unwrap();
    assert!(Changes::between(&before.parts, &same.parts).is_empty());
    // A rotated webhook secret and app secret, a bot removed, an inactivity timeout added.
    let rotated = bot(&hook.replace(
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "AAAA9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ))
    .replace("0123456789abcdef0123", "0123456789abcdef9999")
    .replace("[[bots]]\nid = \"st-2\"\napps = [\"cs-1\"]\n", "")
    .replace(
        "apps = [\"cs-1\"]\n[[bots.on_end]]",
        "apps = [\"cs-1\"]\ninactivity_timeout = \"1h\"\n[[bots.on_end]]",
    );
    let after = check(&rotated).unwrap();
    let changes = Changes::between(&before.parts, &after.parts);
    assert_eq!(
        changes,
        Changes {
            added: vec![],
            removed: vec!["bot st-2".into()],
            changed: vec![
                "action st-1/crm".into(),
                "app cs-1".into(),
                "bot st-1".into()
            ],
        }
    );
    let said = changes.to_string();
    assert_eq!(
        said,
        "removed: bot st-2; changed: action st-1/crm, app cs-1, bot st-1"
    );
    assert!(!said.contains("9999") && !said.contains("AAAA"));
}

/// Issue 25, item 14: docs/configuration.md's example names only keys the file's types
/// take (each commented-out `# key = value` too, once uncommented), and every key the
/// types take is named there.
#[test]
fn docs_configuration_names_exactly_the_keys_the_file_takes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the example");
    // Commented-out keys become keys (a `# word = value` line); the rest stays a comment.
    let uncommented: String = example
        .lines()
        .map(|line| {
            let rest = line.trim_start().strip_prefix("# ");
            match rest {
                Some(r)
                    if r.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    r.to_owned()
                }
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = parse(&uncommented) {
        panic!("docs/configuration.md's example: {e}\n{uncommented}");
    }
    // Every field of the file's tables, as written in file.rs, is named in the doc.
    let source = std::fs::read_to_string(root.join("src/config/file.rs")).unwrap();
    let tables = [
        "FileConfig",
        "WorkersFile",
        "AdminFile",
        "ServerFile",
        "StoreFile",
        "AppFile",
        "BotFile",
        "SummaryFile",
        "CapsFile",
        "RetentionFile",
    ];
    let mut missing = Vec::new();
    for table in tables {
        let start = source
            .find(&format!("pub struct {table} {{"))
            .unwrap_or_else(|| panic!("{table}"));
        let body = &source[start..start + source[start..].find("\n}").unwrap()];
        for line in body.lines().skip(1) {
            let Some(field) = line
                .trim()
                .strip_prefix("pub ")
                .and_then(|l| l.split_once(':'))
                .map(|(f, _)| f)
            else {
                continue;
            };
            // Named as a whole word (a key, a table, an item of a list).
            let named = doc
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|w| w == field);
            if !named {
                missing.push(format!("{table}.{field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name {missing:?}"
    );
}
