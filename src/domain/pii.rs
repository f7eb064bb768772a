//! Redaction of card numbers, emails, phone numbers, IBANs, US social security numbers
//! and a bot's own patterns, applied to a request's message text (`query`) and to every
//! string under `customFields` before anything is parsed, stored or sent: the original
//! never reaches the store, the event log or a payload. Each match becomes a marker such
//! as `[card]`, and the counts go on the conversation's record.
//!
//! Cards are redacted only when their digits pass the Luhn check, IBANs only when they
//! pass ISO 7064 mod 97, so order numbers and the like stay readable. All patterns are
//! `regex` automata: linear in the text, whatever the caller sends.

use std::cell::Cell;
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
    /// Whose national phone formats are read (`redact_phone_regions`).
    phone_regions: Vec<Region>,
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
        card: Regex::new(r"\p{Nd}(?:[\s\p{Cf}\p{Pd}\u{2212}\u{34F}./_,*·•+:|~'#\u{30FC}\u{3001}]{0,4}\p{Nd}){12,}")
            .expect("card pattern"),
        // A country, two check digits and up to 32 letters or digits, up to two spaces
        // (of any kind, a line break too), dots or dashes between; what follows may be words (`… 0130 00 thanks`): which prefix is the IBAN
        // is decided per match (see `iban_span`).
        iban: Regex::new(r"(?i)\b[a-z]{2}[0-9]{2}(?:[\s.\-]{0,2}[a-z0-9]){11,32}\b")
            .expect("iban pattern"),
        // Digits of any script (`١٢٣-٤٥-٦٧٨٩`), one to three spaces, dashes (of any kind),
        // dots, slashes or underscores between groups (`123 - 45 - 6789`, `123.45.6789`).
        ssn: Regex::new(r"\p{Nd}{3}[\p{Zs}\p{Pd}\u{2212}./_]{1,3}\p{Nd}{2}[\p{Zs}\p{Pd}\u{2212}./_]{1,3}\p{Nd}{4}")
            .expect("ssn pattern"),
        // `@` (or the full-width `＠`, the small `﹫`) with at most a line break or
        // invisible characters beside it — never a space: `cc @anna.smith` is a mention;
        // dots of other scripts (`。`, `．`) in the domain.
        email: Regex::new(
            r"[\p{L}\p{N}\p{Cf}._%+'!#&*/=?^`{|}~-]+[\r\n\p{Cf}]{0,2}[@＠﹫][\r\n\p{Cf}]{0,2}[\p{L}\p{N}\p{Cf}-]+(?:[.。．｡][\p{L}\p{N}\p{Cf}-]+)*[.。．｡]\p{L}{2,}",
        )
        .expect("email pattern"),
        // `+` or `00` and a country code, or a national number; the shape is checked
        // per match (see `phone_ok`). Separators as for cards but on one line: a number
        // at the end of one line and another at the start of the next are two numbers.
        // An extension (`x456`, `ext. 12`) belongs to the number.
        phone: Regex::new(
            r"\+?\(?\p{Nd}[\p{Nd}\p{Zs}\t\p{Cf}\p{Pd}\u{2212}().\-/]{5,24}\p{Nd}(?:\p{Zs}?(?i:x|ext\.?|extension)\p{Zs}?\p{Nd}{1,6})?",
        )
        .expect("phone pattern"),
    })
}

impl Redactor {
    /// `kinds` are names from [`KINDS`] (checked by the configuration).
    pub fn new(kinds: &[String], custom: Vec<(String, Regex)>) -> Redactor {
        if kinds.iter().any(|k| k == "phone") {
            // libphonenumber's tables load on first use (~0.1 s): at start, not in a request.
            let _ = phonenumber::parse(None, "+14155552671");
        }
        Redactor {
            kinds: KINDS
                .iter()
                .copied()
                .filter(|k| kinds.iter().any(|c| c == k))
                .collect(),
            custom,
            phone_regions: DEFAULT_PHONE_REGIONS
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
        }
    }

    /// Reads national phone numbers of `regions` instead of [`DEFAULT_PHONE_REGIONS`].
    pub fn with_phone_regions(mut self, regions: Vec<Region>) -> Redactor {
        self.phone_regions = regions;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.custom.is_empty()
    }

    /// Redacts one text; adds what it found to `counts`.
    pub fn text(&self, text: &str, counts: &mut Redactions) -> Option<String> {
        self.text_within(text, counts, &Cell::new(PHONE_CHECKS))
    }

    /// [`Redactor::text`], spending the caller's budget of phone-number checks.
    fn text_within(
        &self,
        text: &str,
        counts: &mut Redactions,
        checks: &Cell<u32>,
    ) -> Option<String> {
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
            if let Some(changed) = builtin(kind, current, counts, &self.phone_regions, checks) {
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

    /// Redacts a request body in place: every string, every number and every object key
    /// at any depth — message text, custom fields, reasons, names, fields the vendor may
    /// add — except the identifiers at their documented positions ([`Position`]), which
    /// name things rather than say them. A number that holds something to redact becomes
    /// the redacted string (`{"accountNumber": "[card]"}`). Returns the counts per event
    /// (index in `events`; a message-propagation request is event 0).
    pub fn body(&self, body: &mut Value) -> Vec<Redactions> {
        if self.is_empty() {
            return Vec::new();
        }
        let checks = &Cell::new(PHONE_CHECKS);
        let Value::Object(root) = body else {
            let mut counts = Redactions::new();
            self.walk(body, Position::Other, &mut counts, checks);
            return vec![counts];
        };
        let mut per_event = Vec::new();
        let mut rest = Redactions::new();
        for (key, value) in root.iter_mut() {
            match (key.as_str(), value) {
                (k, Value::String(v)) if ROOT_IDENTIFIERS.contains(&k) && is_identifier(v) => {}
                ("events", Value::Array(events)) => {
                    per_event = events
                        .iter_mut()
                        .map(|e| {
                            let mut counts = Redactions::new();
                            self.walk(e, Position::Event, &mut counts, checks);
                            counts
                        })
                        .collect();
                }
                (_, value) => self.walk(value, Position::Other, &mut rest, checks),
            }
        }
        self.keys(root, &mut rest, checks);
        if root.get("events").is_some_and(Value::is_array) {
            // What lies beside `events` counts with the first event.
            if let Some(first) = per_event.first_mut() {
                for (k, n) in rest {
                    *first.entry(k).or_default() += n;
                }
            }
            per_event
        } else {
            vec![rest]
        }
    }

    fn walk(&self, v: &mut Value, at: Position, counts: &mut Redactions, checks: &Cell<u32>) {
        match v {
            Value::String(s) => {
                if let Some(r) = self.text_within(s, counts, checks) {
                    *s = r;
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                // A number in exponent form (`4111111111111111e3` reads back as
                // `4.111111111111111e18`) keeps its digits in its mantissa.
                let digits: String = match text.split_once(['e', 'E']) {
                    Some((mantissa, _)) => mantissa.chars().filter(char::is_ascii_digit).collect(),
                    None => text,
                };
                if let Some(r) = self.text_within(&digits, counts, checks) {
                    *v = Value::String(r);
                }
            }
            Value::Array(items) => {
                for i in items {
                    self.walk(i, Position::Other, counts, checks);
                }
            }
            Value::Object(map) => {
                for (k, value) in map.iter_mut() {
                    let next = match (at, k.as_str()) {
                        (Position::Event, "participant") => Position::Participant,
                        (Position::Participant, "identity")
                            if value.as_str().is_some_and(is_identifier) =>
                        {
                            continue;
                        }
                        _ => Position::Other,
                    };
                    self.walk(value, next, counts, checks);
                }
                self.keys(map, counts, checks);
            }
            _ => {}
        }
    }

    /// Redacts an object's keys (`{"jane.doe@example.com": "x"}`). Two keys that become the
    /// same marker both stay: the later ones get ` 2`, ` 3`… after it.
    fn keys(
        &self,
        map: &mut serde_json::Map<String, Value>,
        counts: &mut Redactions,
        checks: &Cell<u32>,
    ) {
        let changed: Vec<(String, String)> = map
            .keys()
            .filter_map(|k| self.text_within(k, counts, checks).map(|r| (k.clone(), r)))
            .collect();
        // The next number to try per marker: n keys that all become `[email]` take n
        // steps, not n² (a caller's 55,000 such keys once took 325 s).
        let mut next: std::collections::HashMap<String, usize> = Default::default();
        for (old, new) in changed {
            let Some(value) = map.remove(&old) else {
                continue;
            };
            let mut key = new.clone();
            let n = next.entry(new.clone()).or_insert(1);
            while map.contains_key(&key) {
                *n += 1;
                key = format!("{new} {n}");
            }
            map.insert(key, value);
        }
    }
}

/// Where a value sits in a request: identifiers are exempt only where the vendor's API
/// puts them — the request's `botId`, `conversationId` and `agentId`, and an event's
/// `participant.identity` (an agent's identity may be an email address). A key named so
/// anywhere else (`customFields.caller.identity`) is data like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Event,
    Participant,
    Other,
}

/// An identifier at its documented position is left as sent when it is one token (an id,
/// an agent's email address); with white space in it, it is text, and redacted as text.
fn is_identifier(v: &str) -> bool {
    !v.contains(char::is_whitespace)
}

/// The request's own identifiers, never redacted.
pub const ROOT_IDENTIFIERS: [&str; 3] = ["botId", "conversationId", "agentId"];

/// Which parts of a match to replace (byte ranges within it), if any.
type Spans<'a> = &'a dyn Fn(&str, &str) -> Option<Vec<(usize, usize)>>;

fn builtin(
    kind: &str,
    text: &str,
    counts: &mut Redactions,
    regions: &[Region],
    checks: &Cell<u32>,
) -> Option<String> {
    let p = patterns();
    // `(020 7946 0958)`: the opening parenthesis of a number written in parentheses is
    // the text's, not the number's.
    let phone = |before: &str, m: &str| {
        let from = usize::from(m.starts_with('(') && !m.contains(')'));
        phone_ok(&m[from..], before, regions, checks).then(|| vec![(from, m.len())])
    };
    let (re, keep): (&Regex, Spans<'_>) = match kind {
        "card" => (&p.card, &|_, m| card_spans(m)),
        "iban" => (&p.iban, &|_, m| iban_span(m).map(|end| vec![(0, end)])),
        "ssn" => (&p.ssn, &|_, m| ssn_ok(m).then(|| vec![(0, m.len())])),
        "email" => (&p.email, &|_, m| Some(vec![(0, m.len())])),
        "phone" => (&p.phone, &phone),
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
        // A phone number touching Latin letters is a code (`ph212…`, `A-0171…`); Chinese or
        // Japanese text touches numbers as a matter of course (`電話番号は090-1234-5678です`).
        let joined = |c: Option<char>| match kind {
            "phone" => c.is_some_and(|c| {
                digit(c).is_some() || c.is_ascii_alphabetic() || c == '-' || c == '_'
            }),
            _ => c.is_some_and(|c| digit(c).is_some()),
        };
        if joined(before) || joined(after) {
            continue;
        }
        let Some(spans) = keep(&text[..m.start()], m.as_str()) else {
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

/// The first code point of each run of ten decimal digits (Unicode's `Nd`, which always
/// comes in runs of ten from 0 to 9), sorted: every script's digits are read, so a number
/// in Arabic-Indic, Devanagari, full-width or mathematical digits is the same number. A
/// test checks this table against the `regex` crate's `\p{Nd}`.
const ZEROS: [u32; 76] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x116D0, 0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50,
    0x11DA0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE, 0x1D7D8,
    0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// A digit's value, in any script of [`ZEROS`].
fn digit(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 0x80 {
        return (0x30..=0x39).contains(&c).then(|| (c - 0x30) as u8);
    }
    let i = ZEROS.partition_point(|&zero| zero <= c).checked_sub(1)?;
    let offset = c - ZEROS[i];
    (offset < 10).then_some(offset as u8)
}

/// The parts of a digit run that are card numbers. A card is written as one group of 13
/// to 19 digits, or in groups of four (the last 1 to 4), or as 4-6-5 or 4-6-4 (American
/// Express, Diners), or spoken digit by digit or in pairs (`4 1 1 1 …`, `41 11 11 …`); it starts with 2 to 6 (the issuers' ranges) and passes Luhn. Longer
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
                || groups_of(&sizes, 4)
                || sizes == [4, 6, 5]
                || sizes == [4, 6, 4]
                // Spoken digit by digit, or in pairs, as speech-to-text writes it.
                || sizes.iter().all(|&n| n == 1)
                || groups_of(&sizes, 2)
                // 15 or 16 digits in up to five groups of any size (`41111111 11111111`,
                // `4111 1111 1111 11 11`): how people retype the number on their card.
                || ((15..=16).contains(&digits.len()) && sizes.len() <= 5);
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

/// Groups of `n` digits, the last of 1 to `n`.
fn groups_of(sizes: &[usize], n: usize) -> bool {
    sizes
        .split_last()
        .is_some_and(|(last, rest)| rest.iter().all(|&s| s == n) && (1..=n).contains(last))
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

/// The end (in bytes) of the IBAN a candidate starts with, if any: the longest prefix
/// ending at a space or at the candidate's end that is a valid IBAN for its country (its
/// length and format, and ISO 7064 mod 97, by `iban_validate`). So the words after it
/// (`DE89 3704 0044 0532 0130 00 thanks`, `NL91ABNA0417164300 thx`) are not taken for part
/// of it, and it is redacted however many follow. At most 33 prefixes of at most 34
/// characters: bounded work per match.
fn iban_span(candidate: &str) -> Option<usize> {
    let mut ends: Vec<usize> = candidate
        .char_indices()
        .filter(|&(_, c)| !c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .collect();
    ends.dedup_by(|a, b| *a == *b + 1);
    ends.push(candidate.len());
    ends.into_iter()
        .rev()
        .find(|&end| iban_ok(&candidate[..end]))
}

/// Whether `candidate` (single spaces allowed between its characters) is a valid IBAN.
fn iban_ok(candidate: &str) -> bool {
    let compact: String = candidate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (15..=34).contains(&compact.len()) && compact.parse::<iban::Iban>().is_ok()
}

/// Area 000, 666 and 9xx, group 00 and serial 0000 are never issued. Read by digit value,
/// never by byte offset: a digit of another script is several bytes long.
fn ssn_ok(s: &str) -> bool {
    let d: Vec<u8> = s.chars().filter_map(digit).collect();
    let [a, b, c, g1, g2, s1, s2, s3, s4] = d[..] else {
        return false;
    };
    let area = [a, b, c];
    area != [0, 0, 0]
        && area != [6, 6, 6]
        && a != 9
        && [g1, g2] != [0, 0]
        && [s1, s2, s3, s4] != [0, 0, 0, 0]
}

/// A phone number's country, for numbers written the national way.
pub type Region = phonenumber::country::Id;

/// The regions whose national formats are read when a bot sets none
/// (`redact_phone_regions`): North America, the British Isles, Australia and New
/// Zealand, India, and the largest markets of the European Union.
pub const DEFAULT_PHONE_REGIONS: [&str; 12] = [
    "US", "CA", "GB", "IE", "AU", "NZ", "IN", "DE", "FR", "ES", "IT", "NL",
];

/// Whether a candidate (with its extension, if any) is a phone number: by its shape
/// (`shaped_like_phone`), or by libphonenumber's rules for its country — international
/// (`+`, `00`) or national in one of `regions` (`07700 900123`, `0412 345 678`,
/// `98765 43210`, `011 44 20 7946 0958`) — once it is not a date, an address, an amount
/// or a code ([`not_a_phone`]).
fn phone_ok(s: &str, before: &str, regions: &[Region], checks: &Cell<u32>) -> bool {
    let number = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(ext) => s[..ext].trim_end_matches(|c: char| digit(c).is_none()),
        None => s,
    };
    // Written with `+`: a phone number (8 to 15 digits), as the caller says.
    if number.starts_with('+') {
        return shaped_like_phone(number);
    }
    let digits: Vec<u8> = number.chars().filter_map(digit).collect();
    let groups = groups(number);
    if !(7..=15).contains(&digits.len())
        || not_a_phone(number, &digits, &groups)
        || after_a_reference_word(before)
    {
        return false;
    }
    let valid = |region: Option<Region>, ascii: &str| {
        phonenumber::parse(region, ascii).is_ok_and(|n| phonenumber::is_valid(&n))
    };
    // Past the request's budget of checks, a number that passed every guard is taken
    // for a phone number unasked: more work is never bought by leaking one.
    let ask = || match checks.get().checked_sub(1) {
        Some(left) => {
            checks.set(left);
            true
        }
        None => false,
    };
    // `00` and a country code: international, when libphonenumber says it is a number of
    // that country (`0044 20 7946 0958`; not `order 0012345678`).
    if digits.starts_with(&[0, 0]) && !number.starts_with('(') {
        let e164: String = std::iter::once('+')
            .chain(digits[2..].iter().map(|d| char::from(b'0' + d)))
            .collect();
        return !ask() || valid(None, &e164);
    }
    if shaped_like_phone(number) {
        return true;
    }
    // A national number has nine digits or more in every region read (`1234 5678` is not
    // taken for one).
    if digits.len() < 9 {
        return false;
    }
    // libphonenumber reads ASCII: every digit as ASCII, every separator a space.
    let ascii: String = number
        .chars()
        .map(|c| match (c, digit(c)) {
            (_, Some(d)) => char::from(b'0' + d),
            ('(' | ')', _) => c,
            _ => ' ',
        })
        .collect();
    !ask() || regions.iter().any(|&r| valid(Some(r), &ascii))
}

/// Whether the text before a number ends with a word that says what the number is, and it
/// is not a phone number: `order 0123456789`, `invoice no. 0000123456`, `FedEx 7489 …`.
fn after_a_reference_word(before: &str) -> bool {
    const REFERENCES: [&str; 22] = [
        "order",
        "invoice",
        "ticket",
        "ref",
        "reference",
        "booking",
        "sku",
        "gtin",
        "routing",
        "tracking",
        "case",
        "confirmation",
        "serial",
        "room",
        "fedex",
        "ups",
        "usps",
        "dhl",
        "po",
        "account",
        "acct",
        "iban",
    ];
    let tail: String = before
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let words: Vec<String> = tail
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut last = words.iter().rev();
    match last.next().map(String::as_str) {
        Some("number" | "no" | "nr" | "num" | "nummer" | "numéro" | "número") => last
            .next()
            .is_some_and(|w| REFERENCES.contains(&w.as_str())),
        Some(w) => REFERENCES.contains(&w),
        None => false,
    }
}

/// How many candidates one request (or one text) has checked by libphonenumber, at up to
/// ~90 µs each with the default regions: at most ~45 ms of a request's CPU time.
const PHONE_CHECKS: u32 = 512;

/// Digit groups' lengths, in order.
fn groups(s: &str) -> Vec<usize> {
    s.split(|c: char| digit(c).is_none())
        .filter(|g| !g.is_empty())
        .map(|g| g.chars().count())
        .collect()
}

/// What a national number's digits may be but people mean otherwise: a bare run not
/// starting with 0 (an order number), a date (`2026-11-27`, `27.11.2026`), an address
/// (`192.168.1.100`), an amount in thousands (`1 234 567`), a code led by a year
/// (`2026-000123`), coordinates, a ZIP+4 code, an SSN's shape.
fn not_a_phone(s: &str, digits: &[u8], groups: &[usize]) -> bool {
    let bare = groups.len() == 1 && !s.starts_with('+') && digits.first() != Some(&0);
    // Digits of each group, to read years and times.
    let mut at = 0;
    let values: Vec<&[u8]> = groups
        .iter()
        .map(|&n| {
            let g = &digits[at..at + n];
            at += n;
            g
        })
        .collect();
    let year = |g: &[u8]| g.len() == 4 && matches!(g[..2], [1, 9] | [2, 0]);
    let date = groups.len() >= 3
        && ((year(values[0]) && groups[1] <= 2 && groups[2] <= 2)
            || (groups[0] <= 2 && groups[1] <= 2 && year(values[2])));
    let address = s.contains('.') && groups.len() == 4 && groups.iter().all(|&g| g <= 3);
    let thousands = groups.len() >= 2 && groups[0] <= 2 && groups[1..].iter().all(|&g| g == 3);
    let year_code = groups.len() >= 2
        && groups[0] == 4
        && matches!(digits[..2], [1, 9] | [2, 0])
        && !s.starts_with(['+', '(']);
    // A decimal number beside another (`51.5074 -0.1278`): a dot among other separators.
    let separators: Vec<char> = s.chars().filter(|&c| digit(c).is_none()).collect();
    let decimal = separators.contains(&'.') && separators.iter().any(|&c| c != '.');
    // A US ZIP+4 code (`94105-1234`) or a social security number's shape (`912-45-6789`).
    let zip = groups == [5, 4] && s.contains('-') && digits.first() != Some(&0);
    let ssn = groups == [3, 2, 4];
    // Spoken digit by digit, a phone number is ten digits or more (`7 7 1 2 0 0 3 4` is a
    // reference read out).
    let spoken = groups.len() > 2 && groups.iter().all(|&g| g == 1) && digits.len() < 10;
    // A year after a day (`Nov 3 2026 1500 hrs`).
    let dated = (1..values.len()).any(|i| year(values[i]) && values[i - 1].len() <= 2);
    // Opening hours (`0900-1700`): every group a time of day.
    let hours = groups.len() >= 2
        && values
            .iter()
            .all(|g| g.len() == 4 && g[0] * 10 + g[1] < 24 && g[2] < 6);
    // A decimal number (`0.123456789`), or a run of zeros (`0001-2345-6789`, an order).
    let one_decimal_point = separators == ['.'];
    let zeros = digits.starts_with(&[0, 0, 0]);
    bare || date
        || address
        || thousands
        || year_code
        || decimal
        || zip
        || ssn
        || spoken
        || dated
        || hours
        || one_decimal_point
        || zeros
}

/// With `+` or `00`: 8 to 15 digits. Without: 10 or 11 digits written the way phone
/// numbers are — separated groups ending in four digits (`(555) 123-4567`,
/// `030 1234 5678`), or five pairs (`01 23 45 67 89`); dots only if every separator is a
/// dot. A bare run of digits (an order number), a date and time, an address or an amount
/// is not a phone number.
fn shaped_like_phone(s: &str) -> bool {
    let digits: Vec<u8> = s.chars().filter_map(digit).collect();
    if s.starts_with('+') || (digits.starts_with(&[0, 0]) && !s.starts_with('(')) {
        return (8..=15).contains(&(digits.len() - if s.starts_with('+') { 0 } else { 2 }));
    }
    if !(10..=11).contains(&digits.len()) || s.matches('(').count() > 1 {
        return false;
    }
    let groups = groups(s);
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

    #[test]
    fn every_unicode_decimal_digit_is_read_and_nothing_else() {
        let nd = Regex::new(r"^\p{Nd}$").unwrap();
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let is_nd = nd.is_match(c.encode_utf8(&mut buf));
            assert_eq!(digit(c).is_some(), is_nd, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn a_social_security_number_in_any_script_is_redacted_without_a_panic() {
        for text in [
            "SSN ١٢٣-٤٥-٦٧٨٩ ok",
            "SSN ۱۲۳-۴۵-۶۷۸۹",
            "SSN １２３－４５－６７８９",
            "SSN १२३ ४५ ६७८९",
            "SSN 𝟏𝟐𝟑-𝟒𝟓-𝟔𝟕𝟖𝟗",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("ssn"), Some(&1), "{text} -> {out}");
        }
        // Never issued, in any script.
        for text in ["SSN ٠٠٠-٤٥-٦٧٨٩", "SSN ９１２-４５-６７８９"] {
            assert_eq!(red(text).0, text);
        }
    }

    #[test]
    fn an_iban_followed_by_words_is_redacted() {
        for (text, want) in [
            (
                "My IBAN is DE89 3704 0044 0532 0130 00 thanks",
                "My IBAN is [iban] thanks",
            ),
            ("NL91ABNA0417164300 thx", "[iban] thx"),
            (
                "iban: GB82 WEST 1234 5698 7654 32 ok bye",
                "iban: [iban] ok bye",
            ),
            ("FR14 2004 1010 0505 0001 3M02 606 merci", "[iban] merci"),
            ("be68 5390 0754 7034 please", "[iban] please"),
        ] {
            assert_eq!(red(text).0, want, "{text}");
        }
        // A wrong check digit stays, followed by words or not.
        for text in [
            "DE88 3704 0044 0532 0130 00 thanks",
            "NL92ABNA0417164300 thx",
        ] {
            assert_eq!(red(text).0, text);
        }
    }

    #[test]
    fn a_card_spoken_digit_by_digit_or_in_pairs_is_redacted() {
        for text in [
            "it's 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 thanks",
            "number is 41 11 11 11 11 11 11 11",
            "5 5 0 0 0 0 0 0 0 0 0 0 0 0 0 4",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("card"), Some(&1), "{text} -> {out}");
            assert!(
                !out.contains("1 1 1 1") && !out.contains("0 0 0 0"),
                "{out}"
            );
        }
        // Luhn still decides.
        let text = "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 2";
        assert_eq!(red(text).0, text);
    }

    #[test]
    fn national_phone_formats_and_extensions_are_redacted() {
        for text in [
            "call me on 07700 900123 tomorrow",
            "mobile 0412 345 678",
            "Handy 0171 1234567 bitte",
            "my number is 98765 43210",
            "dial 011 44 20 7946 0958",
            "office 212-736-5000x456",
            "office 212-736-5000 ext. 12",
            "portable 06 12 34 56 78",
            "móvil 612 34 56 78",
            "cell 347 123 4567",
            "mobiel 06 12345678",
            "call 07700900123",
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get("phone"), Some(&1), "{text} -> {out}");
            let digits_left = out.chars().filter(|c| c.is_ascii_digit()).count();
            assert!(digits_left <= 3, "{text} -> {out}");
        }
        for text in [
            "ticket 2026-000123",
            "on 27.11.2026 at 10:30",
            "order 123456789",
            "total 1 234 567 EUR",
            "zip 94105-1234",
        ] {
            assert_eq!(red(text).0, text, "{text}");
        }
    }

    #[test]
    fn numbers_keys_and_identifier_named_keys_elsewhere_are_redacted() {
        let mut body = serde_json::json!({
            "botId": "st-1", "conversationId": "c-1",
            "events": [{"name": "END_OF_CONVERSATION", "participant": {"identity": "agent@example.com", "customFields": {
                "accountNumber": 4111111111111111u64,
                "jane.doe@example.com": "x",
                "caller": {"identity": "4012 8888 8888 1881", "conversationId": "4111 1111 1111 1111"},
                "count": 3
            }}}]
        });
        let counts = all().body(&mut body);
        let fields = &body["events"][0]["participant"]["customFields"];
        assert_eq!(fields["accountNumber"], "[card]");
        assert_eq!(fields["[email]"], "x");
        assert_eq!(fields["caller"]["identity"], "[card]");
        assert_eq!(fields["caller"]["conversationId"], "[card]");
        assert_eq!(fields["count"], 3);
        // At their documented positions identifiers stay.
        assert_eq!(
            body["events"][0]["participant"]["identity"],
            "agent@example.com"
        );
        assert_eq!(counts[0]["card"], 3);
        assert_eq!(counts[0]["email"], 1);
        // Two keys that become the same marker both stay.
        let mut body = serde_json::json!({"a@example.com": 1, "b@example.com": 2});
        all().body(&mut body);
        assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    }

    mod corpus {
        include!("../../tests/corpus/parse.rs");
    }

    #[test]
    fn the_corpus_is_redacted_as_written() {
        let mut wrong = Vec::new();
        let corpus = corpus::lines(include_str!("../../tests/corpus/redaction.txt"));
        for corpus::Line {
            input,
            want,
            secrets,
        } in &corpus
        {
            let got = red(input).0;
            if &got != want || secrets.iter().any(|s| got.contains(s.as_str())) {
                wrong.push(format!("{input}\n   want {want}\n   got  {got}"));
            }
        }
        assert!(corpus.len() >= 300);
        assert!(
            wrong.is_empty(),
            "{} of {} lines:\n{}",
            wrong.len(),
            corpus.len(),
            wrong.join("\n")
        );
    }

    /// A hostile review's findings (second wave): shapes people type that survived, and
    /// ordinary numbers that were destroyed.
    #[test]
    fn more_shapes_people_type_are_redacted_and_ordinary_numbers_stay() {
        for (text, kind) in [
            ("4111+1111+1111+1111", "card"),
            ("4111:1111:1111:1111", "card"),
            ("4111|1111|1111|1111", "card"),
            ("4111•1111•1111•1111", "card"),
            ("４１１１ー１１１１ー１１１１ー１１１１", "card"),
            ("41111111 11111111", "card"),
            ("4111 1111 1111 11 11", "card"),
            ("4 111 1111 1111 1111", "card"),
            ("DE89-3704-0044-0532-0130-00", "iban"),
            ("DE89.3704.0044.0532.0130.00", "iban"),
            ("DE89  3704 0044 0532 0130 00", "iban"),
            (
                "DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00",
                "iban",
            ),
            ("DE89 3704\n0044 0532 0130 00", "iban"),
            ("123.45.6789", "ssn"),
            ("123/45/6789", "ssn"),
            ("123 - 45 - 6789", "ssn"),
            ("SSN-123-45-6789", "ssn"),
            ("SSN123-45-6789", "ssn"),
            ("o'brien@example.com", "email"),
            ("電話番号は090-1234-5678です", "phone"),
            ("我的电话是138 0013 8000", "phone"),
        ] {
            let (out, counts) = red(text);
            assert_eq!(counts.get(kind), Some(&1), "{text:?} -> {out:?}");
            assert!(
                !out.contains("1111") && !out.contains("6789") && !out.contains("brien"),
                "{out}"
            );
        }
        for text in [
            "Nov 3 2026 1500 hrs",
            "open 0900-1700 Mon-Fri",
            "2026-01-0123",
            "total 0.00 0.00 0.00 0.00",
            "0.123456789",
            "order 0012345678",
            "invoice 0000123456",
            "ticket no. 0123456789",
            "routing 021000021",
            "SKU 0000-1111-2222",
            "ref 0001-2345-6789",
            "FedEx 7489 2345 6789",
            "1234-5678",
            "room 0101 0202",
        ] {
            assert_eq!(red(text).0, text, "{text}");
        }
    }

    #[test]
    fn keys_that_become_one_marker_take_linear_steps_and_identifiers_with_spaces_are_text() {
        let keys: serde_json::Map<String, Value> = (0..20_000)
            .map(|i| (format!("a{i}@b.co"), Value::from(i)))
            .collect();
        let mut body = serde_json::json!({"query": "hi", "x": keys});
        all().body(&mut body);
        assert_eq!(body["x"].as_object().map(|o| o.len()), Some(20_000));
        assert!(body["x"].get("[email] 20000").is_some());
        let mut body = serde_json::json!({
            "botId": "st-1", "conversationId": "c 4111 1111 1111 1111",
            "events": [{"participant": {"identity": "agent1 card 4111 1111 1111 1111"}}],
            "n": 4.111111111111111e18
        });
        all().body(&mut body);
        assert_eq!(body["conversationId"], "c [card]");
        assert_eq!(
            body["events"][0]["participant"]["identity"],
            "agent1 card [card]"
        );
        assert_eq!(body["n"], "[card]");
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

            /// Every kind, in the digits of every script and with separators of every
            /// kind: found, and never a panic (a byte slice inside a multi-byte digit).
            #[test]
            fn every_kind_is_found_in_every_script(
                script in 0..ZEROS.len(),
                sep in prop::sample::select(vec![" ", "-", "\u{a0}", "\u{2009}", "\u{3000}", "\u{2011}", "\u{2013}", "\u{2212}", "\u{FF0D}"]),
                before in "[a-zA-Z ,.:]{0,12}",
                after in "[a-zA-Z ,.:]{0,12}",
            ) {
                let zero = ZEROS[script];
                let in_script = |ascii: &str| -> String {
                    ascii
                        .chars()
                        .map(|c| match c.to_digit(10) {
                            Some(d) => char::from_u32(zero + d).unwrap_or(c),
                            None if c == '~' => sep.chars().next().unwrap_or(' '),
                            None => c,
                        })
                        .collect()
                };
                for (kind, ascii) in [
                    ("card", "4111~1111~1111~1111"),
                    ("card", "4~1~1~1~1~1~1~1~1~1~1~1~1~1~1~1"),
                    ("ssn", "123~45~6789"),
                    ("phone", "+44~20~7946~0958"),
                ] {
                    let value = in_script(ascii);
                    let text = format!("{before} {value} {after}");
                    let mut counts = Redactions::new();
                    let out = Redactor::new(&[kind.to_owned()], Vec::new())
                        .text(&text, &mut counts)
                        .unwrap_or_else(|| text.clone());
                    prop_assert_eq!(counts.get(kind), Some(&1), "{} -> {}", text, out);
                    prop_assert!(!out.contains(&value));
                }
            }

            /// Any mix of digits of any script, separators, letters and signs: every kind
            /// runs to the end.
            #[test]
            fn no_text_makes_redaction_panic(
                parts in proptest::collection::vec((0..ZEROS.len(), 0u8..10, prop::sample::select(vec!["", " ", "-", ".", "/", "(", ")", "+", "@", "x", "ext. ", "\n", "\u{AD}", "\u{200B}", "DE", "é", "٫"])), 0..60),
            ) {
                let text: String = parts
                    .iter()
                    .map(|&(script, d, sep)| format!("{}{sep}", char::from_u32(ZEROS[script] + u32::from(d)).unwrap_or('0')))
                    .collect();
                let mut counts = Redactions::new();
                let _ = Redactor::new(&KINDS.map(String::from), Vec::new()).text(&text, &mut counts);
                let mut body = serde_json::json!({"events": [{"query": text.clone(), text.clone(): 1}]});
                let _ = Redactor::new(&KINDS.map(String::from), Vec::new()).body(&mut body);
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
