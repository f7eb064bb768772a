//! A check that a JSON document has no object with the same key twice.
//!
//! `serde_json` keeps the last of duplicate keys silently; for a body that ends a
//! conversation, "which `reason` did you mean?" is a question to send back (400), not to
//! answer by guessing. The check walks the document once without building anything.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The path of the first duplicated key, e.g. `events[0].reason`, if any.
pub fn first_duplicate_key(body: &[u8]) -> Option<String> {
    // A fast pass that builds no paths; only a body that has a duplicate is walked again
    // to name where.
    walk(body, None)?;
    walk(body, Some(String::new()))
}

fn walk(body: &[u8], path: Option<String>) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match Walk(path).deserialize(&mut de) {
        Err(e) => e
            .to_string()
            .strip_prefix(DUPLICATE)
            .map(|p| p.split(" at line").next().unwrap_or(p).to_owned()),
        Ok(()) => None,
    }
}

const DUPLICATE: &str = "duplicate key: ";

/// Walks a value; `Some(path)` tracks where it is (for the message), `None` does not.
struct Walk(Option<String>);

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk(self.0.as_ref().map(|p| format!("{p}[{i}]"))))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.0.as_ref().map(|p| {
                if p.is_empty() {
                    key.clone()
                } else {
                    format!("{p}.{key}")
                }
            });
            if !seen.insert(key) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE}{}",
                    path.unwrap_or_default()
                )));
            }
            map.next_value_seed(Walk(path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_duplicate_at_any_depth_and_nothing_in_a_clean_body() {
        assert_eq!(
            first_duplicate_key(br#"{"a":1,"a":2}"#).as_deref(),
            Some("a")
        );
        assert_eq!(
            first_duplicate_key(br#"{"events":[{"x":1},{"reason":"a","reason":"b"}]}"#).as_deref(),
            Some("events[1].reason")
        );
        assert_eq!(first_duplicate_key(br#"{"a":{"b":1},"c":[{"b":2}]}"#), None);
    }
}
