//! The built-in extractive summary on six hand-written contact-center conversations
//! (`tests/fixtures/transcripts/`): for each, its named key facts appear in the summary,
//! the situation quotes the customer's problem, and the text stays within its bound.

use wrapup::domain::summary::{MAX_CHARS, Speaker, Turn, extractive};

#[test]
fn every_fixture_keeps_its_key_facts_within_the_length_bound() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcripts");
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let turns: Vec<Turn> = fixture["turns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Turn {
                speaker: if t[0] == "customer" {
                    Speaker::Customer
                } else {
                    Speaker::Agent
                },
                text: t[1].as_str().unwrap().to_owned(),
            })
            .collect();
        let all: usize = turns.iter().map(|t| t.text.chars().count()).sum();
        let summary = extractive(&turns);
        let name = path.file_name().unwrap().to_string_lossy();
        println!("== {name}\n{}\n", summary.text);
        for fact in fixture["facts"].as_array().unwrap() {
            let fact = fact.as_str().unwrap();
            assert!(
                summary.text.to_lowercase().contains(&fact.to_lowercase()),
                "{name}: {fact:?} is missing from\n{}",
                summary.text
            );
        }
        assert!(summary.text.chars().count() <= MAX_CHARS);
        // It selects: the sections hold less than the conversation said.
        let s = &summary.sections;
        let kept = [&s.situation, &s.action, &s.resolution, &s.satisfaction]
            .iter()
            .map(|x| x.chars().count())
            .sum::<usize>();
        println!("{name}: {kept} of {all} characters kept");
        assert!(kept * 100 < all * 90, "{name}: {kept} of {all}");
        for section in [&summary.sections.situation, &summary.sections.resolution] {
            assert!(!section.is_empty(), "{name}: {summary:?}");
        }
        // The situation opens with the customer's first statement of the problem.
        let opening = summary
            .sections
            .situation
            .split_inclusive(['.', '?', '!'])
            .next()
            .unwrap();
        assert!(turns[0].text.contains(opening), "{name}: {opening}");
        seen += 1;
    }
    assert_eq!(seen, 6);
}
