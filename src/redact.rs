//! What may be shown of a secret-bearing value in errors, records and logs. Used by the
//! configuration's errors and by the actions' attempt records alike, so it sits below both.

/// A destination URL as it may be shown (errors, attempt records, logs): credentials, the
/// path and query values masked, since operators put API keys there (Slack, Teams and
/// Discord webhooks carry theirs in the path).
pub fn masked(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "(a URL that does not parse)".into();
    };
    if !matches!(u.path(), "" | "/") && !u.cannot_be_a_base() {
        u.set_path("/***");
    }
    if !u.username().is_empty() {
        let _ = u.set_username("***");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
    }
    u.set_fragment(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn credentials_and_query_values_are_masked() {
        assert_eq!(
            masked("https://user:pa55@crm.example/hook?apikey=s3cret&x=1#frag"),
            "https://***:***@crm.example/***?apikey=***&x=***"
        );
        assert_eq!(
            masked("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(
            masked("postgres://wrapup:S3cret@db.internal:5432/wrapup?sslmode=require"),
            "postgres://***:***@db.internal:5432/***?sslmode=***"
        );
        assert_eq!(
            masked("nats://tok@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            masked("http://127.0.0.1:9000/ok"),
            "http://127.0.0.1:9000/***"
        );
        assert_eq!(masked("not a url"), "(a URL that does not parse)");
    }
}
