//! The built-in `extractive` summary: no model, no network. It picks the transcript's most
//! informative sentences and orders them into the sections contact-center summaries use
//! (situation, action, resolution, customer satisfaction), deterministically.
//!
//! Each sentence is scored by TF-IDF (words rare in the conversation but repeated in the
//! sentence weigh most) times its centrality (its cosine similarity to the others, as in
//! TextRank), with a bonus for concrete facts (digits, codes, addresses). The customer's
//! first statement of the problem always opens the situation; the agent's closing turns
//! make the resolution; the customer's last words say how it ended for them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Customer,
    Agent,
}

/// One message of the transcript, oldest first.
#[derive(Debug, Clone)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

/// The summary's sections; each is the chosen sentences in transcript order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sections {
    pub situation: String,
    pub action: String,
    pub resolution: String,
    pub satisfaction: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extract {
    pub text: String,
    pub sections: Sections,
}

/// The longest `text` is, in characters (each section is cut to a quarter of it first).
pub const MAX_CHARS: usize = 1200;

/// The most sentences scored (centrality compares every pair): the first 100 (where the
/// problem is stated) and the last 300 (where it is resolved), chosen before any word
/// list is built. Each is cut to 1,000 characters and its first 120 words. So a summary's
/// work is bounded whatever the conversation's size.
const HEAD_SENTENCES: usize = 100;
const TAIL_SENTENCES: usize = 300;
const SENTENCE_CHARS: usize = 1000;
const SENTENCE_WORDS: usize = 120;

/// The most bytes of messages a summary reads: the first [`HEAD_BYTES`] (where the
/// problem is stated) and the last [`TAIL_BYTES`] (where it is resolved). Each message is
/// cut to [`MESSAGE_BYTES`] first. Whatever the transcript (a conversation may hold
/// thousands of 64 KB messages), a summary holds at most 256 KiB of it in memory.
pub const HEAD_BYTES: usize = 64 * 1024;
pub const TAIL_BYTES: usize = 192 * 1024;
pub const MESSAGE_BYTES: usize = 16 * 1024;

/// The part of a transcript a summary reads, filled one message at a time (oldest first)
/// in bounded memory: the head is kept once full, the tail drops its oldest message to
/// take a new one.
#[derive(Debug, Default)]
pub struct Window {
    head: Vec<Turn>,
    head_bytes: usize,
    tail: std::collections::VecDeque<Turn>,
    tail_bytes: usize,
    left_out: usize,
}

/// What a [`Window`] kept: its messages in order, and how many were left out after the
/// first `gap_at` of them.
#[derive(Debug, Default)]
pub struct Transcript {
    pub turns: Vec<Turn>,
    pub gap_at: usize,
    pub left_out: usize,
}

impl Window {
    pub fn push(&mut self, speaker: Speaker, text: &str) {
        let text = cut_bytes(text, MESSAGE_BYTES).to_owned();
        let n = text.len();
        let turn = Turn { speaker, text };
        if self.tail.is_empty() && self.head_bytes + n <= HEAD_BYTES {
            self.head_bytes += n;
            self.head.push(turn);
            return;
        }
        self.tail_bytes += n;
        self.tail.push_back(turn);
        while self.tail_bytes > TAIL_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.text.len();
            self.left_out += 1;
        }
    }

    pub fn finish(self) -> Transcript {
        let gap_at = self.head.len();
        let mut turns = self.head;
        turns.extend(self.tail);
        Transcript {
            turns,
            gap_at,
            left_out: self.left_out,
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Asked between steps of a summary: `true` once its attempt has timed out, so the work
/// stops instead of running on after nobody waits for it.
pub type Stop<'a> = &'a (dyn Fn() -> bool + Sync);

const STOP: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "get", "got",
    "had", "has", "have", "he", "her", "here", "hi", "him", "his", "how", "i", "if", "in", "is",
    "it", "its", "just", "let", "me", "my", "no", "not", "now", "of", "oh", "ok", "okay", "on",
    "one", "or", "our", "please", "she", "so", "sure", "that", "the", "their", "them", "then",
    "there", "they", "this", "to", "up", "us", "was", "we", "were", "what", "when", "which",
    "will", "with", "would", "yes", "you", "your", "hello", "thanks", "thank", "right", "well",
    "im", "i'm", "it's", "that's", "i'd", "you're", "we'll", "i'll", "can't", "don't", "let's",
];

const POSITIVE: &[&str] = &[
    "thanks",
    "thank",
    "great",
    "perfect",
    "appreciate",
    "helpful",
    "wonderful",
    "excellent",
    "happy",
    "brilliant",
    "awesome",
    "good",
];
const NEGATIVE: &[&str] = &[
    "unhappy",
    "disappointed",
    "terrible",
    "awful",
    "angry",
    "ridiculous",
    "useless",
    "frustrated",
    "unacceptable",
    "worst",
    "cancel",
    "complaint",
];

struct Sentence {
    turn: usize,
    speaker: Speaker,
    text: String,
    words: Vec<String>,
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty() && !STOP.contains(&w.as_str()))
        .take(SENTENCE_WORDS)
        .collect()
}

/// Sentences of a message: split after `.`, `?` or `!` followed by a space, and at line
/// breaks; a period between digits or letters (`10.50`, `e.g`) does not split.
fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            push(&mut out, &mut current);
            continue;
        }
        current.push(c);
        let end = matches!(c, '.' | '?' | '!') && chars.peek().is_none_or(|n| n.is_whitespace());
        if end {
            push(&mut out, &mut current);
        }
    }
    push(&mut out, &mut current);
    out
}

fn push(out: &mut Vec<String>, current: &mut String) {
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_owned());
    }
    current.clear();
}

/// Concrete facts make a sentence worth keeping: a number counts 1, a code of letters
/// and digits (an order, ticket or claim number) 3.
fn facts(text: &str) -> usize {
    text.split_whitespace()
        .map(|w| {
            let digits = w.chars().any(|c| c.is_ascii_digit());
            let letters = w.chars().any(|c| c.is_alphabetic());
            match (digits, letters) {
                (true, true) => 3,
                (true, false) => 1,
                _ => 0,
            }
        })
        .sum()
}

/// A summary as stored, read (`GET …/summaries`, the record's `summaries`) and sent
/// (`conversation.summarized`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredSummary {
    /// Its job's id.
    pub summary_id: String,
    /// `TRIGGER_SUMMARY_EVENT` or `END_OF_CONVERSATION`.
    pub trigger: &'static str,
    /// `interim` (a trigger's) or `final` (the end's).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `COMPLETED` or `FAILED`.
    pub status: &'static str,
    /// With FAILED: `TIMEOUT`, `RATE_LIMITED`, `PROVIDER_ERROR`, `PROVIDER_REFUSED`,
    /// `INVALID_RESPONSE`, `INVALID_SUMMARY`, `INSUFFICIENT_CONVERSATION_CONTENT`,
    /// `INTERNAL_ERROR`.
    pub failure_code: Option<&'static str>,
    /// `extractive` or `openai`.
    pub provider: &'static str,
    /// The model that answered (`openai`).
    pub model: Option<String>,
    pub generation_time_ms: u64,
    /// Empty when FAILED.
    pub text: String,
    /// Null when FAILED.
    pub sections: Option<Sections>,
    /// The event numbers of the first and last message summarized.
    pub message_range: Option<MessageRange>,
    /// How many messages were summarized.
    pub messages: usize,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRange {
    pub from_seq: u64,
    pub to_seq: u64,
}

/// A stored summary's status when it was made.
pub const COMPLETED: &str = "COMPLETED";
/// A stored summary's status when it could not be made (its `failureCode` says why).
pub const FAILED: &str = "FAILED";

/// Whether a stored summary (its JSON) is COMPLETED.
pub fn is_completed(body: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Status<'_>>(body).is_ok_and(|s| s.status.as_deref() == Some(COMPLETED))
}

/// Whether a summary may be stored over `existing` (the same job's): a COMPLETED summary
/// stands for good; a FAILED one gives way to the job's next run (an operator's retry).
pub fn replaceable(existing: &str) -> bool {
    !is_completed(existing)
}

/// Summarizes `turns` into at most [`MAX_CHARS`] characters; `None` once `stop` says so.
/// The sentences scored are chosen first (the first [`HEAD_SENTENCES`], a ring of the
/// last [`TAIL_SENTENCES`]), so no list grows with the transcript.
pub fn extractive(turns: &[Turn], stop: Stop<'_>) -> Option<Extract> {
    let mut head: Vec<(usize, Speaker, String)> = Vec::with_capacity(HEAD_SENTENCES);
    let mut tail: std::collections::VecDeque<(usize, Speaker, String)> =
        std::collections::VecDeque::with_capacity(TAIL_SENTENCES + 1);
    for (turn, t) in turns.iter().enumerate() {
        if stop() {
            return None;
        }
        for text in split(&t.text) {
            let kept = (turn, t.speaker, cut(&text, SENTENCE_CHARS));
            if head.len() < HEAD_SENTENCES {
                head.push(kept);
            } else {
                tail.push_back(kept);
                if tail.len() > TAIL_SENTENCES {
                    tail.pop_front();
                }
            }
        }
    }
    let sentences: Vec<Sentence> = head
        .into_iter()
        .chain(tail)
        .map(|(turn, speaker, text)| Sentence {
            turn,
            speaker,
            words: words(&text),
            text,
        })
        .collect();
    if sentences.is_empty() {
        return Some(Extract {
            text: String::new(),
            sections: Sections::default(),
        });
    }
    let scores = score(&sentences, stop)?;
    // A short conversation gets one sentence per section, a longer one up to two.
    let per = if sentences.len() >= 10 { 2 } else { 1 };
    let last_turn = sentences.iter().map(|s| s.turn).max().unwrap_or(0);

    // Situation: the customer's first substantive statement, and their best other one.
    let customer: Vec<usize> = (0..sentences.len())
        .filter(|&i| sentences[i].speaker == Speaker::Customer)
        .collect();
    let first_problem = customer
        .iter()
        .copied()
        .find(|&i| sentences[i].words.len() >= 3)
        .or_else(|| customer.first().copied());
    let mut situation: BTreeSet<usize> = first_problem.into_iter().collect();
    if per > 1
        && let Some(best) = best_of(
            customer
                .iter()
                .copied()
                .filter(|i| !situation.contains(i) && sentences[*i].turn < last_turn),
            &scores,
        )
    {
        situation.insert(best);
    }

    // Resolution: the agent's closing block — its turns since the customer's last but one
    // (an agent often answers in several messages) — most informative first.
    let customer_turns: Vec<usize> = turns
        .iter()
        .enumerate()
        .filter(|(_, t)| t.speaker == Speaker::Customer)
        .map(|(i, _)| i)
        .collect();
    let block_from = match customer_turns.len() {
        0 | 1 => 0,
        n => customer_turns[n - 2] + 1,
    };
    let closing =
        |i: usize| sentences[i].speaker == Speaker::Agent && sentences[i].turn >= block_from;
    let resolution: BTreeSet<usize> =
        top((0..sentences.len()).filter(|&i| closing(i)), &scores, per)
            .into_iter()
            .collect();

    // Action: the agent's most informative sentences before that.
    let action: BTreeSet<usize> = top(
        (0..sentences.len()).filter(|&i| {
            sentences[i].speaker == Speaker::Agent
                && !resolution.contains(&i)
                && sentences[i].words.len() >= 2
        }),
        &scores,
        per,
    )
    .into_iter()
    .collect();

    // Satisfaction: the customer's last turn, with its tone.
    let satisfaction = customer_turns
        .last()
        .filter(|&&t| {
            customer_turns.len() > 1 || !situation.iter().any(|&i| sentences[i].turn == t)
        })
        .map(|&t| {
            let text = turns[t].text.trim();
            let raw: Vec<String> = text
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase)
                .collect();
            let has = |list: &[&str]| raw.iter().any(|x| list.contains(&x.as_str()));
            let tone = if has(NEGATIVE) {
                "dissatisfied"
            } else if has(POSITIVE) {
                "satisfied"
            } else {
                "neutral"
            };
            format!("{tone}: {text}")
        })
        .unwrap_or_default();

    let quarter = MAX_CHARS / 4;
    let join = |set: &BTreeSet<usize>| {
        cut(
            &set.iter()
                .map(|&i| sentences[i].text.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            quarter,
        )
    };
    let sections = Sections {
        situation: join(&situation),
        action: join(&action),
        resolution: join(&resolution),
        satisfaction: cut(&satisfaction, quarter),
    };
    let mut text = String::new();
    for (label, body) in [
        ("Situation", &sections.situation),
        ("Action", &sections.action),
        ("Resolution", &sections.resolution),
        ("Customer", &sections.satisfaction),
    ] {
        if !body.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(label);
            text.push_str(": ");
            text.push_str(body);
        }
    }
    Some(Extract {
        text: cut(&text, MAX_CHARS),
        sections,
    })
}

/// TF-IDF weight times centrality, plus a bonus per fact.
fn score(sentences: &[Sentence], stop: Stop<'_>) -> Option<Vec<f64>> {
    let n = sentences.len() as f64;
    let mut df: BTreeMap<&str, f64> = BTreeMap::new();
    for s in sentences {
        let unique: BTreeSet<&str> = s.words.iter().map(String::as_str).collect();
        for w in unique {
            *df.entry(w).or_default() += 1.0;
        }
    }
    let vectors: Vec<BTreeMap<&str, f64>> = sentences
        .iter()
        .map(|s| {
            let mut tf: BTreeMap<&str, f64> = BTreeMap::new();
            for w in &s.words {
                *tf.entry(w.as_str()).or_default() += 1.0;
            }
            tf.into_iter()
                .map(|(w, f)| (w, f * ((1.0 + n) / (1.0 + df[w])).ln() + f * 0.1))
                .collect()
        })
        .collect();
    let norm = |v: &BTreeMap<&str, f64>| v.values().map(|x| x * x).sum::<f64>().sqrt();
    let norms: Vec<f64> = vectors.iter().map(norm).collect();
    let mut scores = Vec::with_capacity(sentences.len());
    for i in 0..sentences.len() {
        if stop() {
            return None;
        }
        scores.push({
            let weight: f64 =
                vectors[i].values().sum::<f64>() / (sentences[i].words.len().max(1) as f64).sqrt();
            let centrality: f64 = (0..sentences.len())
                .filter(|&j| j != i && norms[i] > 0.0 && norms[j] > 0.0)
                .map(|j| {
                    let dot: f64 = vectors[i]
                        .iter()
                        .filter_map(|(w, x)| vectors[j].get(w).map(|y| x * y))
                        .sum();
                    dot / (norms[i] * norms[j])
                })
                .sum();
            // A question asks for information rather than giving it.
            let asks = if sentences[i].text.ends_with('?') {
                0.5
            } else {
                1.0
            };
            asks * (weight * (1.0 + centrality) + facts(&sentences[i].text) as f64)
        });
    }
    Some(scores)
}

/// The best-scored index (the earliest among equals).
fn best_of(candidates: impl Iterator<Item = usize>, scores: &[f64]) -> Option<usize> {
    top(candidates, scores, 1).into_iter().next()
}

/// The `k` best-scored indexes (earliest first among equals).
fn top(candidates: impl Iterator<Item = usize>, scores: &[f64], k: usize) -> Vec<usize> {
    let mut c: Vec<usize> = candidates.collect();
    c.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b)));
    c.truncate(k);
    c
}

/// At most `max` characters, cut at a word with `…`.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(space) = out.rfind(' ') {
        out.truncate(space);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(speaker: Speaker, text: &str) -> Turn {
        Turn {
            speaker,
            text: text.to_owned(),
        }
    }

    #[test]
    fn the_same_transcript_gives_the_same_summary_and_an_empty_one_nothing() {
        let turns = vec![
            t(Speaker::Customer, "Hi. My order 48213 never arrived."),
            t(
                Speaker::Agent,
                "I see order 48213 was lost in transit. I will send a new one today.",
            ),
            t(Speaker::Customer, "Great, thank you."),
        ];
        let a = extractive(&turns, &|| false).unwrap();
        assert_eq!(Some(a.clone()), extractive(&turns, &|| false));
        assert!(a.sections.situation.contains("48213"), "{a:?}");
        assert!(a.sections.satisfaction.starts_with("satisfied:"), "{a:?}");
        assert_eq!(extractive(&[], &|| false).unwrap().text, "");
        assert_eq!(extractive(&turns, &|| true), None);
    }

    #[test]
    fn a_window_holds_at_most_its_bytes_whatever_the_transcript() {
        let mut w = Window::default();
        let big = "word ".repeat(64 * 1024 / 5);
        for i in 0..1000 {
            let who = if i % 2 == 0 {
                Speaker::Customer
            } else {
                Speaker::Agent
            };
            w.push(who, &big);
        }
        w.push(Speaker::Customer, "thanks, bye");
        let t = w.finish();
        let bytes: usize = t.turns.iter().map(|t| t.text.len()).sum();
        assert!(bytes <= HEAD_BYTES + TAIL_BYTES, "{bytes}");
        assert!(t.turns.iter().all(|t| t.text.len() <= MESSAGE_BYTES));
        assert_eq!(t.turns.len() + t.left_out, 1001);
        assert_eq!(t.turns.last().map(|t| t.text.as_str()), Some("thanks, bye"));
        assert_eq!(t.gap_at, HEAD_BYTES / MESSAGE_BYTES);
        // A multi-byte character is never cut in two.
        let mut w = Window::default();
        w.push(Speaker::Customer, &"é".repeat(MESSAGE_BYTES));
        assert!(w.finish().turns[0].text.len() <= MESSAGE_BYTES);
    }

    #[test]
    fn sentences_split_at_their_ends_only() {
        assert_eq!(
            split("It costs 10.50 a month. Is that ok?\nYes!"),
            vec!["It costs 10.50 a month.", "Is that ok?", "Yes!"]
        );
    }
}
