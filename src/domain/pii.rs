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
        // Decimal digits of any script with up to four separators between them (a blank
        // line is `\r\n\r\n`): white space of any kind (line breaks, tabs, no-break, thin
        // and ideographic spaces), invisible format characters (soft hyphen, zero-width
        // spaces and joiners, word joiner, byte-order mark), dashes of any kind and the
        // minus sign, dots, slashes, underscores, commas, stars, middle dots. Which runs
        // are cards (digit count, grouping, issuer digit, Luhn) is decided per run, in
        // linear time: each window is at most 19 digits long.
        card: Regex::new(r"\p{Nd}(?:[\s\p{Cf}\p{Pd}\u{2212}\u{34F}./_,*·]{0,4}\p{Nd}){12,}")
            .expect("card pattern"),
        iban: Regex::new(r"(?i)\b[a-z]{2}\d{2}(?: ?[a-z0-9]){11,30}\b").expect("iban pattern"),
        ssn: Regex::new(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b").expect("ssn pattern"),
        // `@` (or the full-width `＠`, the small `﹫`) with at most a line break or
        // invisible characters beside it — never a space: `cc @anna.smith` is a mention;
        // dots of other scripts (`。`, `．`) in the domain.
        email: Regex::new(
            r"[\p{L}\p{N}\p{Cf}._%+-]+[\r\n\p{Cf}]{0,2}[@＠﹫][\r\n\p{Cf}]{0,2}[\p{L}\p{N}\p{Cf}-]+(?:[.。．｡][\p{L}\p{N}\p{Cf}-]+)*[.。．｡]\p{L}{2,}",
        )
        .expect("email pattern"),
        // `+` or `00` and a country code, or a national number; the shape is checked
        // per match (see `phone_ok`). Separators as for cards but on one line: a number
        // at the end of one line and another at the start of the next are two numbers.
        phone: Regex::new(
            r"\+?\(?\p{Nd}[\p{Nd}\p{Zs}\t\p{Cf}\p{Pd}\u{2212}().\-/]{5,24}\p{Nd}",
        )
        .expect("phone pattern"),
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
        // Every built-in kind needs a digit, an email needs `@`: most strings of a request
        // (`NA`, `voice`, `en`) are passed over without running a pattern.
        let has_digit = text.chars().any(|c| digit(c).is_some());
        let has_at = text.contains(['@', '＠', '﹫']);
        for kind in &self.kinds {
            if !(if *kind == "email" { has_at } else { has_digit }) {
                continue;
            }
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

    /// Redacts a request body in place: every string value at any depth — message text,
    /// custom fields, reasons, names, fields the vendor may add — except the identifiers
    /// ([`IDENTIFIERS`]), which name things rather than say them. Returns the counts per
    /// event (index in `events`; a message-propagation request is event 0).
    pub fn body(&self, body: &mut Value) -> Vec<Redactions> {
        if self.is_empty() {
            return Vec::new();
        }
        match body.get_mut("events").and_then(Value::as_array_mut) {
            Some(events) => events
                .iter_mut()
                .map(|e| {
                    let mut counts = Redactions::new();
                    self.walk(e, None, &mut counts);
                    counts
                })
                .collect(),
            None => {
                let mut counts = Redactions::new();
                self.walk(body, None, &mut counts);
                vec![counts]
            }
        }
    }

    fn walk(&self, v: &mut Value, key: Option<&str>, counts: &mut Redactions) {
        match v {
            Value::String(s) if !key.is_some_and(|k| IDENTIFIERS.contains(&k)) => {
                if let Some(r) = self.text(s, counts) {
                    *s = r;
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.walk(i, key, counts);
                }
            }
            Value::Object(map) => {
                for (k, value) in map.iter_mut() {
                    self.walk(value, Some(k), counts);
                }
            }
            _ => {}
        }
    }
}

/// Keys whose string values are identifiers, never redacted: a conversation, a bot or an
/// agent keeps its identity (an agent's `identity` may be an email address).
pub const IDENTIFIERS: [&str; 4] = ["botId", "conversationId", "identity", "agentId"];

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
        // Not part of a longer number; a phone number not part of a code either
        // (`INV-2026-000123`, `DE00 1234 5678…`). Letters of any script may touch a card
        // or an email (`カード番号4111…です`, `cc4111…`).
        let before = text[..m.start()].chars().next_back();
        let after = text[m.end()..].chars().next();
        let joined = |c: Option<char>| match kind {
            "phone" | "ssn" => c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_'),
            _ => c.is_some_and(|c| digit(c).is_some()),
        };
        if joined(before) || joined(after) {
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

/// The first code point of each run of ten decimal digits wrapup reads: ASCII,
/// Arabic-Indic (both), NKo, the Indic scripts, Thai, Lao, Tibetan, Myanmar, Khmer,
/// Mongolian, full-width, and the mathematical digits (bold, double-struck, sans-serif,
/// sans-serif bold, monospace).
const ZEROS: [u32; 29] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0xFF10, 0x1D7CE,
    0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6,
];

/// A digit's value, in any script of [`ZEROS`].
fn digit(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 0x80 {
        return (0x30..=0x39).contains(&c).then(|| (c - 0x30) as u8);
    }
    ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&c))
        .map(|zero| (c - zero) as u8)
}

/// The parts of a digit run that are card numbers. A card is written as one group of 13
/// to 19 digits, or in groups of four (the last 1 to 4), or as 4-6-5 or 4-6-4 (American
/// Express, Diners); it starts with 2 to 6 (the issuers' ranges) and passes Luhn. Longer
/// windows win, so `ref 100000007 4111 1111 1111 1111` loses the card, not a 13-digit
/// window that happens to pass. At most 19 digits per window: linear in the run.
fn card_spans(run: &str) -> Option<Vec<(usize, usize)>> {
    // Groups of digits: their byte range and digit values.
    let mut groups: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (i, c) in run.char_indices() {
        match (digit(c), groups.last_mut()) {
            (Some(d), Some(g)) if g.1 == i => {
                g.1 = i + c.len_utf8();
                g.2.push(d);
            }
            (Some(d), _) => groups.push((i, i + c.len_utf8(), vec![d])),
            (None, _) => {}
        }
    }
    let mut windows: Vec<(usize, usize, usize)> = Vec::new(); // (digits, first, last)
    for i in 0..groups.len() {
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        for j in i..groups.len() {
            digits.extend(&groups[j].2);
            if digits.len() > 19 {
                break;
            }
            let sizes: Vec<usize> = groups[i..=j].iter().map(|g| g.2.len()).collect();
            let grouped = sizes.len() == 1
                || (sizes[..sizes.len() - 1].iter().all(|&n| n == 4)
                    && (1..=4).contains(&sizes[sizes.len() - 1]))
                || sizes == [4, 6, 5]
                || sizes == [4, 6, 4];
            if (13..=19).contains(&digits.len())
                && grouped
                && (2..=6).contains(&digits[0])
                && luhn_digits(&digits)
            {
                windows.push((digits.len(), i, j));
            }
        }
    }
    // Longest first, then earliest; windows that overlap a chosen one are dropped.
    windows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for (_, i, j) in windows {
        if taken.iter().all(|&(a, b)| j < a || i > b) {
            taken.push((i, j));
        }
    }
    taken.sort();
    let spans: Vec<(usize, usize)> = taken
        .into_iter()
        .map(|(i, j)| (groups[i].0, groups[j].1))
        .collect();
    (!spans.is_empty()).then_some(spans)
}

fn luhn_digits(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// The Luhn check over a string of ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let d: Vec<u8> = digits.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    d.iter().all(|&x| x < 10) && luhn_digits(&d)
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

/// With `+` or `00`: 8 to 15 digits. Without: 10 or 11 digits written the way phone
/// numbers are — separated groups ending in four digits (`(555) 123-4567`,
/// `030 1234 5678`), or five pairs (`01 23 45 67 89`); dots only if every separator is a
/// dot. A bare run of digits (an order number), a date and time, an address or an amount
/// is not a phone number.
fn phone_ok(s: &str) -> bool {
    let digits: Vec<u8> = s.chars().filter_map(digit).collect();
    if s.starts_with('+') || (digits.starts_with(&[0, 0]) && !s.starts_with('(')) {
        return (8..=15).contains(&(digits.len() - if s.starts_with('+') { 0 } else { 2 }));
    }
    if !(10..=11).contains(&digits.len()) || s.matches('(').count() > 1 {
        return false;
    }
    let groups: Vec<usize> = s
        .split(|c: char| digit(c).is_none())
        .filter(|g| !g.is_empty())
        .map(|g| g.chars().count())
        .collect();
    let separators: Vec<char> = s.chars().filter(|&c| digit(c).is_none()).collect();
    if separators.contains(&'.') && separators.iter().any(|&c| c != '.') {
        return false;
    }
    if separators.contains(&'/') && separators.iter().any(|&c| c != '/') {
        return false;
    }
    groups.len() >= 2
        && (groups.last() == Some(&4) || (groups.len() == 5 && groups.iter().all(|&n| n == 2)))
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
    fn line_breaks_invisible_separators_and_other_digits_do_not_hide_a_number() {
        for text in [
            "my card is 4111\n1111\n1111\n1111",
            "my card is 4111\r\n1111\r\n1111\r\n1111",
            "card 4111 1111\u{2009}1111 1111",
            "card 4111\u{200B}1111\u{200B}1111\u{200B}1111",
            "card 4111\u{AD}1111\u{AD}1111\u{AD}1111",
            "card ٤١١١ ١١١١ ١١١١ ١١١١",
            "card ۴۱۱۱ ۱۱۱۱ ۱۱۱۱ ۱۱۱۱",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("card"), Some(&1), "{text:?} -> {out:?}");
            assert!(!out.contains("1111") && !out.contains("١١١١"), "{out:?}");
        }
        // More separators and scripts (a second review).
        for text in [
            "card 4111\r\n\r\n1111\r\n\r\n1111\r\n\r\n1111",
            "card 4111\u{FEFF}1111\u{FEFF}1111\u{FEFF}1111",
            "card 4111\u{200D}1111\u{180E}1111\u{2062}1111",
            "card 4111\u{2011}1111\u{2212}1111\u{FF0D}1111",
            "card 4111_1111_1111_1111",
            "card 4111,1111,1111,1111",
            "card 4111·1111·1111·1111",
            "card ४१११ ११११ ११११ ११११",
            "card 𝟒𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏 𝟏𝟏𝟏𝟏",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("card"), Some(&1), "{text:?} -> {out:?}");
        }
        for text in [
            "call +44\u{FEFF}20\u{FEFF}7946\u{FEFF}0958",
            "call +44\u{3000}20\u{3000}7946\u{3000}0958",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("phone"), Some(&1), "{text:?} -> {out:?}");
        }
        for text in [
            "mail john＠example.com",
            "mail john﹫example.com",
            "mail john\n@example.com",
            "mail john\r\n@example.com",
            "mail john@\r\nexample.com",
            "mail john\u{200B}@example.com",
            "mail jo\u{AD}hn@exam\u{AD}ple.com",
            "mail john@example。com",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("email"), Some(&1), "{text:?} -> {out:?}");
            assert!(!out.contains("example") && !out.contains("hn"), "{out:?}");
        }
    }

    #[test]
    fn mentions_and_numbers_on_separate_lines_stay() {
        for text in [
            "cc @anna.smith please",
            "hi @bob.jones",
            "I'm @ home.Will call later",
            "bought 3 @ Amazon.com yesterday",
            "meet @ 5pm",
            "Order 123456\n1000 pcs",
            "Order 123456\r\n1500 EUR total",
            "Order 555-123\n4567 Elm Street",
            "ticket 812 345\n6789 thanks",
            "Order 1234\n56\n7890",
        ] {
            let (out, counts) = red(text);
            assert_eq!(out, text, "{counts:?}");
        }
    }

    #[test]
    fn separators_scripts_and_neighbours_do_not_hide_a_number() {
        for (text, kind) in [
            ("4111.1111.1111.1111", "card"),
            ("4111/1111/1111/1111", "card"),
            ("4111  1111\t1111\u{a0}1111", "card"),
            ("4111–1111–1111–1111", "card"),
            ("５５００ ００００ ００００ ０００４", "card"),
            ("5500 - 0000 - 0000 - 0004", "card"),
            ("カード番号4111111111111111です", "card"),
            ("cc4111111111111111", "card"),
            ("378282246310005", "card"),
            ("3782 822463 10005", "card"),
            ("私のメールはjane.doe@example.comです", "email"),
            ("josé.garcía@example.es", "email"),
            ("555/123/4567", "phone"),
            ("555\t123\t4567", "phone"),
            ("0044 20 7946 0958", "phone"),
            ("01 23 45 67 89", "phone"),
            ("123 45 6789", "ssn"),
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get(kind), Some(&1), "{text} -> {out}");
            let digits_left = out.chars().filter(|c| digit(*c).is_some()).count();
            assert!(digits_left <= 2, "{text} -> {out}");
        }
    }

    #[test]
    fn the_card_wins_over_a_number_before_it() {
        assert_eq!(
            red("ref 100000007 4111 1111 1111 1111").0,
            "ref 100000007 [card]"
        );
    }

    #[test]
    fn dates_codes_addresses_and_amounts_are_not_phone_numbers_or_cards() {
        for text in [
            "2026-11-27 10:30",
            "INV-2026-000123",
            "ticket 2026-000123",
            "server 192.168.1.100",
            "at 51.5074 -0.1278",
            "total 1 234 567 890 JPY",
            "account 12-3456-7890123-00",
            "tracking 9400 1000 0000 0000 0000 00",
        ] {
            assert_eq!(red(text).0, text, "{text}");
        }
    }

    #[test]
    fn a_long_run_of_digits_and_separators_is_linear_work() {
        // 60 KB of separated digits: every window is at most 19 digits, so this returns
        // at once (it used to take hours).
        let text = "1 ".repeat(30_000);
        let mut counts = Redactions::new();
        let _ = all().text(&text, &mut counts);
        let text = "4111111111111111 ".repeat(3_500);
        let mut counts = Redactions::new();
        let out = all().text(&text, &mut counts).unwrap();
        assert_eq!(counts["card"], 3_500);
        assert!(!out.contains("4111"));
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
    fn the_body_is_redacted_everywhere_but_in_identifiers() {
        let mut body = serde_json::json!({
            "botId": "st-1", "conversationId": "4111111111111111",
            "events": [
                {"name": "MESSAGE", "query": "my card is 4111-1111-1111-1111"},
                {"name": "END_OF_CONVERSATION", "reason": "card 4111 1111 1111 1111", "participant": {"identity": "a@b.com", "customFields": {"email": "a@b.com", "nested": ["+1 415 555 0100"]}}}
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
        assert_eq!(body["events"][1]["reason"], "card [card]");
        assert_eq!(counts[1]["email"], 1);
        assert_eq!(counts[1]["card"], 1);
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
                2 => "-",
                3 => "\n",
                4 => "\r\n",
                5 => "\u{2009}",
                6 => "\u{200B}",
                _ => "\u{AD}",
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
                first in 2u8..7,
                rest in proptest::collection::vec(0u8..10, 11..=17),
                style in 0u8..8,
                before in "[a-zA-Z ,.:]{0,20}",
                after in "[a-zA-Z ,.:]{0,20}",
            ) {
                // Cards start with 2 to 6 (the issuers' ranges).
                let body: Vec<u8> = std::iter::once(first).chain(rest).collect();
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
                style in 0u8..8,
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
