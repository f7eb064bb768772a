use super::*;
use serde_json::json;

const BOT: &str = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx";

fn seed() -> Value {
    json!({
        "botId": BOT,
        "conversationId": "atesta-mlxxxxxx",
        "events": [{
            "name": "END_OF_CONVERSATION",
            "reason": "agent_initiated",
            "language": "en",
            "experience": "voice",
            "participant": {
                "identity": "agent1",
                "name": "Agent AI",
                "type": "agent",
                "customFields": {"agentEmail": "qqqqqq", "queueId": "1694", "queueName": "queue11"}
            }
        }]
    })
}

fn parse(v: &Value) -> Result<HookRequest, String> {
    parse_request(v, BOT, &Limits::default()).map_err(|e| e.to_string())
}

#[test]
fn the_seed_sample_parses_into_an_end() {
    let req = parse(&seed()).expect("seed parses");
    assert_eq!(req.conversation_id, "atesta-mlxxxxxx");
    let EventKind::End(end) = &req.events[0].kind else {
        panic!("not an end")
    };
    assert_eq!(end.reason, "agent_initiated");
    assert_eq!(end.participant.custom_fields["queueId"], "1694");
}

#[test]
fn a_transfer_accepts_the_vendors_spellings() {
    let mut body = seed();
    body["events"] = json!([{
        "name": "INTERNAL_TRANSFER_EVENT", "transfertype": "cold", "transition": "ENTRY",
        "isExtAD": "true", "experience": "chat",
        "participant": {"identity": "a2", "name": "B", "type": "agent"}
    }]);
    let req = parse(&body).expect("parses");
    let EventKind::Transfer(t) = &req.events[0].kind else {
        panic!()
    };
    assert_eq!(t.transfer_type, TransferType::Cold);
    assert_eq!(t.transition, Transition::Entry);
    assert_eq!(t.is_ext_ad, Some(true));
}

#[test]
fn a_bare_message_is_accepted_and_its_missing_fields_listed() {
    let body = json!({"botId": BOT, "conversationId": "c", "agentId": "a", "query": "hi"});
    let req = parse(&body).expect("parses");
    let EventKind::Message(m) = &req.events[0].kind else {
        panic!()
    };
    assert_eq!(
        m.missing,
        vec!["author", "source", "experience", "language"]
    );
}

#[test]
fn refusals_name_the_field_path() {
    let mut body = seed();
    body["events"][0]["participant"]
        .as_object_mut()
        .unwrap()
        .remove("identity");
    assert_eq!(
        parse(&body).unwrap_err(),
        "events[0].participant.identity is required"
    );
    let mut body = seed();
    body["events"][0]["reason"] = json!(7);
    assert_eq!(
        parse(&body).unwrap_err(),
        "events[0].reason must be a string (got a number)"
    );
    let mut body = seed();
    body["events"][0]["name"] = json!("NOPE");
    assert!(
        parse(&body)
            .unwrap_err()
            .contains("END_OF_CONVERSATION, INTERNAL_TRANSFER_EVENT")
    );
}
