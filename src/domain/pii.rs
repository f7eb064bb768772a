//! Redaction of card numbers, emails, phone numbers, IBANs, US social security numbers
//! and a bot's own patterns, applied to a request's message text (`query`) and to every
//! string under `customFields` before anything is parsed, stored or sent: the original
//! never reaches the store, the event log or a payload. Each match becomes a marker such
//! as `[card]`, and the counts go on the conversation's record.
//!
//! Cards are redacted only when their digits pass the Luhn check, IBANs only when they
//! pass ISO 7064 mod 97, so order numbers and the like stay readable. All patterns are
//! `regex` automata: linear in the text, whatever the caller sends.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

/// The built-in kinds, in the order they are applied (an IBAN is never cut into a card,
/// a card never taken for a phone number).
pub const KINDS: [&str; 5] = ["iban", "card", "ssn", "email", "phone"];

/// How many of each kind one event (or a conversation) had redacted.
pub type Redactions = BTreeMap<String, u64>;

/// A bot's redaction rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    kinds: Vec<&'static str>,
    custom: Vec<(String, Regex)>,
}

struct Patterns {
    card: Regex,
    iban: Regex,
    ssn: Regex,
    email: Regex,
    phone: Regex,
}

fn patterns() -> &'static Patterns {
    static P: std::sync::OnceLock<Patterns> = std::sync::OnceLock::new();
    P.get_or_init(|| Patterns {
        // Runs of 13 or more digits with single spaces or dashes between them; the Luhn
        // check and the digit count are applied to each run (and its group windows).
        card: Regex::new(r"\d(?:[ -]?\d){12,}").expect("card pattern"),
        iban: Regex::new(r"(?i)\b[a-z]{2}\d{2}(?: ?[a-z0-9]){11,30}\b").expect("iban pattern"),
        ssn: Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").expect("ssn pattern"),
        email: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
            .expect("email pattern"),
        // `+` and a country code, or a national number with separators or parentheses.
        phone: Regex::new(r"\+?\(?\d[\d ().-]{5,20}\d").expect("phone pattern"),
    })
}

impl Redactor {
    /// `kinds` are names from [`KINDS`] (checked by the configuration).
    pub fn new(kinds: &[String], custom: Vec<(String, Regex)>) -> Redactor {
        Redactor {
            kinds: KINDS
                .iter()
                .copied()
                .filter(|k| kinds.iter().any(|c| c == k))
                .collect(),
            custom,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.custom.is_empty()
    }

    /// Redacts one text; adds what it found to `counts`.
    pub fn text(&self, text: &str, counts: &mut Redactions) -> Option<String> {
        let mut out: Option<String> = None;
        for kind in &self.kinds {
            let current = out.as_deref().unwrap_or(text);
            if let Some(changed) = builtin(kind, current, counts) {
                out = Some(changed);
            }
        }
        for (name, re) in &self.custom {
            let current = out.as_deref().unwrap_or(text);
            let mut n = 0;
            let changed = re.replace_all(current, |_: &regex::Captures| {
                n += 1;
                format!("[{name}]")
            });
            if n > 0 {
                *counts.entry(name.clone()).or_default() += n;
                out = Some(changed.into_owned());
            }
        }
        out
    }

    /// Redacts a request body in place: every `query` string and every string under a
    /// `customFields` object, at any depth. Returns the counts per event (index in
    /// `events`; a message-propagation request is event 0).
    pub fn body(&self, body: &mut Value) -> Vec<Redactions> {
        if self.is_empty() {
            return Vec::new();
        }
        match body.get_mut("events").and_then(Value::as_array_mut) {
            Some(events) => events
                .iter_mut()
                .map(|e| {
                    let mut counts = Redactions::new();
                    self.walk(e, false, &mut counts);
                    counts
                })
                .collect(),
            None => {
                let mut counts = Redactions::new();
                self.walk(body, false, &mut counts);
                vec![counts]
            }
        }
    }

    fn walk(&self, v: &mut Value, inside_fields: bool, counts: &mut Redactions) {
        match v {
            Value::String(s) if inside_fields => {
                if let Some(r) = self.text(s, counts) {
                    *s = r;
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.walk(i, inside_fields, counts);
                }
            }
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    let here = inside_fields || key == "customFields" || key == "query";
                    self.walk(value, here, counts);
                }
            }
            _ => {}
        }
    }
}

/// Which parts of a match to replace (byte ranges within it), if any.
type Spans = fn(&str) -> Option<Vec<(usize, usize)>>;

fn builtin(kind: &str, text: &str, counts: &mut Redactions) -> Option<String> {
    let p = patterns();
    let (re, keep): (&Regex, Spans) = match kind {
        "card" => (&p.card, card_spans),
        "iban" => (&p.iban, |m| iban_ok(m).then(|| vec![(0, m.len())])),
        "ssn" => (&p.ssn, |m| ssn_ok(m).then(|| vec![(0, m.len())])),
        "email" => (&p.email, |m| Some(vec![(0, m.len())])),
        "phone" => (&p.phone, |m| phone_ok(m).then(|| vec![(0, m.len())])),
        _ => return None,
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut n = 0u64;
    for m in re.find_iter(text) {
        // Not part of a longer word or run of digits (`DE00 1234 5678…` is no phone).
        let before = text[..m.start()].chars().next_back();
        let after = text[m.end()..].chars().next();
        if before.is_some_and(|c| c.is_alphanumeric()) || after.is_some_and(|c| c.is_alphanumeric())
        {
            continue;
        }
        let Some(spans) = keep(m.as_str()) else {
            continue;
        };
        for (from, to) in spans {
            out.push_str(&text[last..m.start() + from]);
            out.push('[');
            out.push_str(kind);
            out.push(']');
            last = m.start() + to;
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    *counts.entry(kind.to_owned()).or_default() += n;
    Some(out)
}

/// The parts of a digit run that are card numbers: the whole run when it is one, else
/// windows starting and ending at its separators (a card followed by a year, say).
fn card_spans(run: &str) -> Option<Vec<(usize, usize)>> {
    // Groups of digits and where they are.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in run.char_indices() {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                groups.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        groups.push((s, run.len()));
    }
    let digits = |from: usize, to: usize| -> String {
        run[groups[from].0..groups[to].1]
            .chars()
            .filter(char::is_ascii_digit)
            .collect()
    };
    let mut spans = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut found = None;
        // The longest window from group i that is a card number.
        for j in (i..groups.len()).rev() {
            let d = digits(i, j);
            if (13..=19).contains(&d.len()) && luhn(&d) {
                found = Some(j);
                break;
            }
        }
        match found {
            Some(j) => {
                spans.push((groups[i].0, groups[j].1));
                i = j + 1;
            }
            None => i += 1,
        }
    }
    (!spans.is_empty()).then_some(spans)
}

/// The Luhn check over a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// ISO 13616: the country and check digits moved to the end, letters as numbers, mod 97 = 1.
fn iban_ok(candidate: &str) -> bool {
    let s: Vec<u8> = candidate
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for b in s[4..].iter().chain(&s[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Area 000, 666 and 9xx, group 00 and serial 0000 are never issued.
fn ssn_ok(s: &str) -> bool {
    let area = &s[..3];
    area != "000"
        && area != "666"
        && !area.starts_with('9')
        && &s[4..6] != "00"
        && &s[7..] != "0000"
}

/// With `+`: 8 to 15 digits. Without: 10 or 11 digits written with separators or an
/// area code in parentheses (a bare run of digits is more often an order number).
fn phone_ok(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if s.starts_with('+') {
        return (8..=15).contains(&digits);
    }
    let separated = s.bytes().any(|b| matches!(b, b' ' | b'.' | b'-' | b'('));
    separated && (10..=11).contains(&digits) && s.bytes().filter(|b| *b == b'(').count() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&KINDS.map(String::from), Vec::new())
    }

    fn red(text: &str) -> (String, Redactions) {
        let mut counts = Redactions::new();
        let out = all()
            .text(text, &mut counts)
            .unwrap_or_else(|| text.to_owned());
        (out, counts)
    }

    #[test]
    fn each_kind_is_replaced_by_its_marker_and_counted() {
        let (out, counts) = red(
            "card 4111 1111 1111 1111 exp 12/27, mail jane.doe+x@example.co.uk, call +44 20 7946 0958 or (555) 123-4567, IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789",
        );
        assert_eq!(
            out,
            "card [card] exp 12/27, mail [email], call [phone] or [phone], IBAN [iban], SSN [ssn]"
        );
        assert_eq!(counts["card"], 1);
        assert_eq!(counts["phone"], 2);
        assert_eq!(counts.values().sum::<u64>(), 6);
    }

    #[test]
    fn numbers_that_are_not_what_they_look_like_stay() {
        for text in [
            "order 4111 1111 1111 1112 shipped",
            "order number 12345678",
            "ticket 5551234567",
            "on 2026-11-27 at 10:30",
            "IBAN DE00 1234 5678",
            "SSN 000-12-3456",
            "version 1.2.3.4",
        ] {
            assert_eq!(red(text).0, text, "{text}");
        }
    }

    #[test]
    fn an_iban_must_pass_its_check() {
        assert!(iban_ok("DE89 3704 0044 0532 0130 00"));
        assert!(iban_ok("GB82WEST12345698765432"));
        assert!(!iban_ok("DE89 3704 0044 0532 0130 01"));
        assert!(!iban_ok("GB82WEST1234569876543X"));
    }

    #[test]
    fn a_card_followed_by_more_digits_is_still_found() {
        assert_eq!(red("4111111111111111 2027").0, "[card] 2027");
        assert_eq!(red("5500-0000-0000-0004").0, "[card]");
    }

    #[test]
    fn the_body_is_redacted_in_query_and_custom_fields_only() {
        let mut body = serde_json::json!({
            "botId": "st-1", "conversationId": "4111111111111111",
            "events": [
                {"name": "MESSAGE", "query": "my card is 4111-1111-1111-1111"},
                {"name": "END_OF_CONVERSATION", "participant": {"identity": "a@b.com", "customFields": {"email": "a@b.com", "nested": ["+1 415 555 0100"]}}}
            ]
        });
        let counts = all().body(&mut body);
        assert_eq!(body["events"][0]["query"], "my card is [card]");
        assert_eq!(
            body["events"][1]["participant"]["customFields"]["email"],
            "[email]"
        );
        assert_eq!(
            body["events"][1]["participant"]["customFields"]["nested"][0],
            "[phone]"
        );
        // Identifiers are not message text: left as sent.
        assert_eq!(body["conversationId"], "4111111111111111");
        assert_eq!(body["events"][1]["participant"]["identity"], "a@b.com");
        assert_eq!(counts[0]["card"], 1);
        assert_eq!(counts[1]["email"], 1);
        assert_eq!(counts[1]["phone"], 1);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// `body` (12 to 18 digits) with the Luhn check digit appended, or a wrong one.
        fn with_check(body: &[u8], valid: bool) -> String {
            let mut digits: String = body.iter().map(|d| char::from(b'0' + d)).collect();
            let check = (0..10u8)
                .find(|c| luhn(&format!("{digits}{c}")))
                .unwrap_or(0);
            let c = if valid {
                check
            } else {
                (check + 1 + body[0] % 9) % 10
            };
            digits.push(char::from(b'0' + c));
            digits
        }

        fn formatted(digits: &str, style: u8) -> String {
            let sep = match style {
                0 => return digits.to_owned(),
                1 => " ",
                _ => "-",
            };
            digits
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(sep)
        }

        fn cards_only() -> Redactor {
            Redactor::new(&["card".to_owned()], Vec::new())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn no_valid_card_number_survives(
                body in proptest::collection::vec(0u8..10, 12..=18),
                style in 0u8..3,
                before in "[a-zA-Z ,.:]{0,20}",
                after in "[a-zA-Z ,.:]{0,20}",
            ) {
                let digits = with_check(&body, true);
                let card = formatted(&digits, style);
                let text = format!("{before} {card} {after}");
                let mut counts = Redactions::new();
                let out = cards_only().text(&text, &mut counts).unwrap_or_else(|| text.clone());
                let left: String = out.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(!left.contains(&digits), "{text} -> {out}");
                prop_assert_eq!(counts.get("card"), Some(&1));
            }

            #[test]
            fn digit_strings_failing_luhn_stay(
                body in proptest::collection::vec(0u8..10, 12..=18),
                style in 0u8..3,
            ) {
                let digits = with_check(&body, false);
                prop_assume!(!luhn(&digits));
                let text = format!("ref {} ok", formatted(&digits, style));
                let mut counts = Redactions::new();
                // Ungrouped, or up to 16 digits in fours, the only window long enough is the
                // whole run (a 17-19 digit run in fours may hold a valid 16-digit card).
                let out = cards_only().text(&text, &mut counts);
                if style == 0 || digits.len() <= 16 {
                    prop_assert!(out.is_none(), "{text}");
                }
            }
        }
    }
}
