//! What redaction costs per request (BENCHMARKS.md): the `lifecycle` workload's eight
//! request bodies (as `wrapup-load` sends them), redacted with every built-in kind on,
//! `N` times over. Run it under `valgrind --tool=callgrind` with `on` and with `off` (the
//! same work without the redaction): the difference divided by `N × 8` is the
//! instructions redaction adds to one request. `pii` uses message texts that do hold a
//! card number, an email and a phone number.
//!
//! usage: bench-redact on|off|pii N

use serde_json::{Value, json};
use wrapup::domain::pii::{KINDS, Redactor};

fn bodies(with_pii: bool) -> Vec<Value> {
    let (bot, c) = ("st-56fbfece-0293-55a3-9154-7e3e19xxxxxx", "bench-redact");
    let transfer = |transition: &str| {
        json!({"botId": bot, "conversationId": c, "events": [{"name": "INTERNAL_TRANSFER_EVENT", "transfertype": "NA", "transition": transition, "isExtAD": "false",
               "language": "en", "experience": "voice",
               "participant": {"identity": "agent1", "name": "Agent AI", "type": "agent", "customFields": {"queueId": "1694"}}}]})
    };
    let message = |author: &str, text: &str| {
        json!({"botId": bot, "conversationId": c, "query": text, "agentId": "agent1", "author": {"type": author},
               "source": "genesys", "experience": "voice", "language": "en",
               "sendUserMessage": false, "sendAgentMessage": false})
    };
    let texts: [&str; 4] = if with_pii {
        [
            "Hello, my card 4111 1111 1111 1111 was charged twice.",
            "Sorry about that. Can you confirm your email?",
            "It is jane.doe@example.com, or call me on +1 415 555 0100.",
            "Thank you, the refund is on its way.",
        ]
    } else {
        [
            "Hello, I would like to change the address on my account.",
            "Of course. Can you confirm your postcode?",
            "It is 10115.",
            "Thank you, the address is updated.",
        ]
    };
    vec![
        transfer("entry"),
        message("USER", texts[0]),
        message("AGENT", texts[1]),
        message("USER", texts[2]),
        message("AGENT", texts[3]),
        transfer("exit"),
        json!({"botId": bot, "conversationId": c, "events": [{"name": "TRIGGER_SUMMARY_EVENT", "data": {"language": "English", "locale": "en", "type": "post"}}]}),
        json!({"botId": bot, "conversationId": c, "events": [{"name": "END_OF_CONVERSATION", "reason": "agent_initiated", "language": "en", "experience": "voice",
               "participant": {"identity": "agent1", "name": "Agent AI", "type": "agent", "customFields": {"agentEmail": "qqqqqq", "queueId": "1694", "queueName": "queue11"}}}]}),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("on");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let redactor = Redactor::new(&KINDS.map(String::from), Vec::new());
    let bodies = bodies(mode == "pii");
    let mut found = 0u64;
    for _ in 0..n {
        for body in &bodies {
            let mut v = body.clone();
            if mode != "off" {
                found += redactor
                    .body(&mut v)
                    .iter()
                    .flat_map(|c| c.values())
                    .sum::<u64>();
            }
            std::hint::black_box(&v);
        }
    }
    println!("{mode}: {} requests, {found} redactions", n * bodies.len());
}
