//! Reading a JSON object field by field, each refusal naming the field's path.

use super::*;

/// A JSON object being read, with its path for error messages.
pub(super) struct Obj<'a> {
    pub(super) map: &'a Map<String, Value>,
    pub(super) path: String,
}

impl<'a> Obj<'a> {
    pub(super) fn root(value: &'a Value) -> Result<Self, ParseError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: String::new(),
            }),
            other => Err(err(
                "",
                format!("the body must be a JSON object (got {})", type_name(other)),
            )),
        }
    }

    pub(super) fn at(value: &'a Value, path: String) -> Result<Self, ParseError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(err(
                path,
                format!("must be an object (got {})", type_name(other)),
            )),
        }
    }

    pub(super) fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn req_obj(&self, key: &str) -> Result<Obj<'a>, ParseError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(err(self.field_path(key), "is required")),
            Some(v) => Obj::at(v, self.field_path(key)),
        }
    }

    pub(super) fn req_str(&self, key: &str, max_chars: usize) -> Result<String, ParseError> {
        let s = self.req_str_allow_empty(key, max_chars)?;
        if s.trim().is_empty() {
            return Err(err(self.field_path(key), "must not be empty"));
        }
        Ok(s)
    }

    pub(super) fn req_str_allow_empty(
        &self,
        key: &str,
        max_chars: usize,
    ) -> Result<String, ParseError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(err(self.field_path(key), "is required")),
            Some(v) => self.string(key, v, max_chars),
        }
    }

    pub(super) fn opt_str(
        &self,
        key: &str,
        max_chars: usize,
    ) -> Result<Option<String>, ParseError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.string(key, v, max_chars).map(Some),
        }
    }

    pub(super) fn string(
        &self,
        key: &str,
        v: &Value,
        max_chars: usize,
    ) -> Result<String, ParseError> {
        match v {
            Value::String(s) => {
                if s.contains('\0') {
                    // Never text, and it breaks whatever C string the value reaches downstream.
                    Err(err(self.field_path(key), "must not contain NUL characters"))
                } else if s.chars().count() > max_chars {
                    Err(err(
                        self.field_path(key),
                        format!("is longer than {max_chars} characters"),
                    ))
                } else {
                    Ok(s.clone())
                }
            }
            other => Err(err(
                self.field_path(key),
                format!("must be a string (got {})", type_name(other)),
            )),
        }
    }

    /// Booleans as the vendor's clients send them: `true` or `"true"`.
    pub(super) fn opt_bool(&self, key: &str) -> Result<Option<bool>, ParseError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(err(
                self.field_path(key),
                format!("must be true or false (got {})", describe(other)),
            )),
        }
    }

    /// A string from a fixed set, matched without regard to case (samples mix `cold` and `COLD`).
    pub(super) fn req_enum<T: Copy>(
        &self,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ParseError> {
        let raw = match self.map.get(key) {
            None | Some(Value::Null) => return Err(err(self.field_path(key), "is required")),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(err(
                    self.field_path(key),
                    format!("must be a string (got {})", type_name(other)),
                ));
            }
        };
        choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(raw.trim()))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                err(
                    self.field_path(key),
                    format!(
                        "\"{}\" is not one of {}",
                        truncate(raw, 64),
                        names.join(", ")
                    ),
                )
            })
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", truncate(s, 32)),
        other => type_name(other).to_owned(),
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}
