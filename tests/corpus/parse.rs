// The redaction corpus (`redaction.txt`), read by the domain's unit test and by the
// integration test on both stores.

/// One utterance: what is sent, what must be stored, and the originals it holds.
pub struct Line {
    pub input: String,
    pub want: String,
    pub secrets: Vec<String>,
}

/// The corpus's utterances: each `⟦kind:value⟧` is sent as `value` and stored as `[kind]`.
pub fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (mut input, mut want, mut secrets) = (String::new(), String::new(), Vec::new());
        let mut rest = line;
        while let Some(open) = rest.find('⟦') {
            input.push_str(&rest[..open]);
            want.push_str(&rest[..open]);
            let after = &rest[open + '⟦'.len_utf8()..];
            let close = after.find('⟧').expect("a closed marker");
            let (kind, value) = after[..close].split_once(':').expect("kind:value");
            input.push_str(value);
            want.push_str(&format!("[{kind}]"));
            secrets.push(value.to_owned());
            rest = &after[close + '⟧'.len_utf8()..];
        }
        input.push_str(rest);
        want.push_str(rest);
        out.push(Line {
            input,
            want,
            secrets,
        });
    }
    out
}
