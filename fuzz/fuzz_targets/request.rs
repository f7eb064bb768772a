//! Any bytes as a hook request body: the strict parser and the request parser must never
//! panic, and the strict parser must agree with serde_json on every document except those
//! with a repeated key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wrapup::domain::payload::parse_request;
use wrapup::domain::strict_json::{self, StrictError};
use wrapup::domain::{EventKind, Limits};

const BOT: &str = "st-56fbfece-0293-55a3-9154-7e3e19xxxxxx";

fuzz_target!(|data: &[u8]| {
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    match strict_json::parse(data) {
        Ok(value) => {
            assert_eq!(loose.as_ref().ok(), Some(&value), "strict and serde_json disagree");
            if let Ok(request) = parse_request(&value, BOT, &Limits::default()) {
                assert_eq!(request.bot_id, BOT);
                assert!(!request.events.is_empty());
                for event in &request.events {
                    // What is stored must read back as JSON.
                    let raw: serde_json::Value =
                        serde_json::from_str(&event.raw).expect("stored event is JSON");
                    if !matches!(event.kind, EventKind::Message(_)) {
                        assert!(raw.is_object());
                    }
                }
            }
        }
        Err(StrictError::Duplicate(path)) => {
            assert!(loose.is_ok(), "a duplicate reported in a document serde_json refuses");
            assert!(!path.is_empty(), "a duplicate without a path");
        }
        Err(StrictError::Reserved(path)) => {
            // serde_json's private markers are refused as keys (serde_json itself may or may
            // not read such a document); the path names one.
            assert!(path.contains(strict_json::RESERVED), "a reserved key without its path");
        }
        Err(StrictError::Syntax(_)) => {
            assert!(loose.is_err(), "strict refused a document serde_json accepts");
        }
    }
});
