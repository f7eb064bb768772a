//! A check that a JSON document has no object with the same key twice.
//!
//! `serde_json` keeps the last of duplicate keys silently; for a body that ends a
//! conversation, "which `reason` did you mean?" is a question to send back (400), not to
//! answer by guessing. [`parse`] builds the `Value` and notices a repeated key in the same
//! pass (a map insert that replaces something); only then is the document walked again to
//! name the path.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not a strict JSON document.
#[derive(Debug)]
pub enum StrictError {
    /// Not JSON at all (the parser's own message).
    Syntax(serde_json::Error),
    /// The path of the first key that appears twice in one object, e.g. `events[0].reason`.
    Duplicate(String),
    /// The path of a key that starts with [`RESERVED`].
    Reserved(String),
}

/// Keys serde_json uses as private markers. Stored as data, such a key at the start of a
/// nested object makes serde_json refuse to read that data back (a stored conversation
/// answered 500 forever; found by fuzzing), so it is refused at the door.
pub const RESERVED: &str = "$serde_json::private::";

/// Parses `body` into a `Value`, refusing an object that has the same key twice.
pub fn parse(body: &[u8]) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = StrictValue { strict: true }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e)
            if [DUPLICATE, RESERVED_KEY]
                .iter()
                .any(|m| e.to_string().starts_with(m)) =>
        {
            // The parse stopped early at the key: a document that is not JSON further on is a
            // syntax error first (found by fuzzing: "name" twice, then a cut-off string, or
            // invalid UTF-8). The check is a full parse that lets every key pass.
            let mut de = serde_json::Deserializer::from_slice(body);
            if let Err(syntax) = (StrictValue { strict: false })
                .deserialize(&mut de)
                .and_then(|_| de.end())
            {
                return Err(StrictError::Syntax(syntax));
            }
            Err(walk(body).unwrap_or(StrictError::Duplicate(String::new())))
        }
        Err(e) => Err(StrictError::Syntax(e)),
    }
}

/// Builds a `Value` like serde_json's own, but (when `strict`) fails on a repeated or
/// reserved key.
#[derive(Clone, Copy)]
struct StrictValue {
    strict: bool,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.strict && key.starts_with(RESERVED) {
                return Err(de::Error::custom(RESERVED_KEY));
            }
            let value = map.next_value_seed(self)?;
            if out.insert(key, value).is_some() && self.strict {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Walks `body` to name the first duplicated or reserved key, with its path.
fn walk(body: &[u8]) -> Option<StrictError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let message = match Walk(String::new()).deserialize(&mut de) {
        Err(e) => e.to_string(),
        Ok(()) => return None,
    };
    let path = |rest: &str| rest.split(" at line").next().unwrap_or(rest).to_owned();
    if let Some(rest) = message.strip_prefix(DUPLICATE) {
        Some(StrictError::Duplicate(path(rest)))
    } else {
        message
            .strip_prefix(RESERVED_KEY)
            .map(|rest| StrictError::Reserved(path(rest)))
    }
}

const DUPLICATE: &str = "duplicate key: ";
const RESERVED_KEY: &str = "reserved key: ";

/// A key as it appears in a path: bare when it is a plain name, else JSON-quoted (so an
/// empty key or one with dots, quotes or control characters stays readable; a fuzzing find).
fn shown_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        serde_json::to_string(key).unwrap_or_default()
    }
}

/// Walks a value; the path of where it is, for the message.
struct Walk(String);

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
            .next_element_seed(Walk(format!("{}[{i}]", self.0)))?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let shown = shown_key(&key);
            let path = if self.0.is_empty() {
                shown
            } else {
                format!("{}.{shown}", self.0)
            };
            if key.starts_with(RESERVED) {
                return Err(de::Error::custom(format!("{RESERVED_KEY}{path}")));
            }
            if !seen.insert(key) {
                return Err(de::Error::custom(format!("{DUPLICATE}{path}")));
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
    fn parse_builds_the_same_value_as_serde_json_and_names_a_duplicate() {
        let body = br#"{"a":[1,-2,3.5,true,null,"x\u00e9"],"b":{"c":{}},"d":18446744073709551615}"#;
        let expected: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(parse(body).unwrap(), expected);
        match parse(br#"{"events":[{"reason":"a","reason":"b"}]}"#) {
            Err(StrictError::Duplicate(path)) => assert_eq!(path, "events[0].reason"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(b"{\"a\":1} x"), Err(StrictError::Syntax(_))));
        assert!(matches!(parse(b"{\"a\":"), Err(StrictError::Syntax(_))));
        // A duplicate before a syntax error is a syntax error (a fuzzing find).
        assert!(matches!(
            parse(br#"{"events":[{"name":"a","name":"b","x":"cut off}]}"#),
            Err(StrictError::Syntax(_))
        ));
        let named = |body: &[u8]| match parse(body) {
            Err(StrictError::Duplicate(path)) => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(named(br#"{"":1,"":2}"#), r#""""#);
        assert_eq!(named(br#"{"a.b":{"x y":1,"x y":2}}"#), r#""a.b"."x y""#);
        // serde_json's private markers are refused as keys, with their path (found by fuzzing).
        match parse(br#"{"a":[{"b":1},{"$serde_json::private::RawValue":"x"}]}"#) {
            Err(StrictError::Reserved(path)) => {
                assert_eq!(path, r#"a[1]."$serde_json::private::RawValue""#)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"{\"a\":1,\"a\":\"\x8e\"}"),
            Err(StrictError::Syntax(_))
        ));
    }

    #[test]
    fn finds_a_duplicate_at_any_depth_and_nothing_in_a_clean_body() {
        let duplicate = |body: &[u8]| match parse(body) {
            Err(StrictError::Duplicate(path)) => Some(path),
            Ok(_) => None,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(duplicate(br#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate(br#"{"events":[{"x":1},{"reason":"a","reason":"b"}]}"#).as_deref(),
            Some("events[1].reason")
        );
        assert_eq!(duplicate(br#"{"a":{"b":1},"c":[{"b":2}]}"#), None);
    }
}
