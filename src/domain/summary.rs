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
/// problem is stated) and the last 300 (where it is resolved). Each is cut to 1,000
/// characters. So a summary's work is bounded whatever the conversation's size.
const HEAD_SENTENCES: usize = 100;
const TAIL_SENTENCES: usize = 300;
const SENTENCE_CHARS: usize = 1000;

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
        .collect()
}

/// Sentences of a message: split after `.`, `?` or `!` followed by a space, and at line
/// breaks; a period between digits or letters (`10.50`, `e.g`) does not split.
fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' {
            push(&mut out, &mut current);
            continue;
        }
        current.push(c);
        let end =
            matches!(c, '.' | '?' | '!') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
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

/// Summarizes `turns` into at most [`MAX_CHARS`] characters.
pub fn extractive(turns: &[Turn]) -> Extract {
    let mut sentences: Vec<Sentence> = turns
        .iter()
        .enumerate()
        .flat_map(|(turn, t)| {
            split(&t.text).into_iter().map(move |text| {
                let text = cut(&text, SENTENCE_CHARS);
                Sentence {
                    turn,
                    speaker: t.speaker,
                    words: words(&text),
                    text,
                }
            })
        })
        .collect();
    if sentences.len() > HEAD_SENTENCES + TAIL_SENTENCES {
        sentences.drain(HEAD_SENTENCES..sentences.len() - TAIL_SENTENCES);
    }
    if sentences.is_empty() {
        return Extract {
            text: String::new(),
            sections: Sections::default(),
        };
    }
    let scores = score(&sentences);
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
    Extract {
        text: cut(&text, MAX_CHARS),
        sections,
    }
}

/// TF-IDF weight times centrality, plus a bonus per fact.
fn score(sentences: &[Sentence]) -> Vec<f64> {
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
    (0..sentences.len())
        .map(|i| {
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
        })
        .collect()
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
        let a = extractive(&turns);
        assert_eq!(a, extractive(&turns));
        assert!(a.sections.situation.contains("48213"), "{a:?}");
        assert!(a.sections.satisfaction.starts_with("satisfied:"), "{a:?}");
        assert_eq!(extractive(&[]).text, "");
    }

    #[test]
    fn sentences_split_at_their_ends_only() {
        assert_eq!(
            split("It costs 10.50 a month. Is that ok?\nYes!"),
            vec!["It costs 10.50 a month.", "Is that ok?", "Yes!"]
        );
    }
}
