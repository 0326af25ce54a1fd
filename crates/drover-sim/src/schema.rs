//! Structured output: an answer that meets the JSON schema a request's
//! `response_format` asks for, as llama.cpp's server (a grammar), LM
//! Studio, vLLM and Ollama give. The simulator has no model, so it makes a
//! value of the schema's shape from the request's key: the same request,
//! the same answer. It covers what structured output is used with (types,
//! `properties` and `required`, `items` with `minItems`/`maxItems`,
//! `enum`, `const`, `anyOf`/`oneOf`, numeric bounds); what it does not
//! read it leaves out, as a grammar that ignores a keyword does.

use serde_json::{Map, Value, json};

use crate::text::SplitMix64;

/// Deeper than this, a value is `null`: a schema that refers to itself
/// through nesting still ends.
const MAX_DEPTH: usize = 12;
/// Items an array gets beyond its `minItems` at most.
const EXTRA_ITEMS: u64 = 2;
/// Values one answer holds at most: a schema asking for a billion items,
/// or nested arrays that multiply, gets an answer of this size (cut short
/// of the schema) rather than the simulator's whole memory.
const MAX_VALUES: usize = 10_000;

/// The schema a `response_format` asks for: a JSON schema's (`json_schema`)
/// or any object's (`json_object`); `None` for text or no format.
pub(crate) fn asked(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => Some(
            format
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
        "json_object" => Some(json!({"type": "object"})),
        _ => None,
    }
}

/// A value meeting `schema`, chosen by `key`.
pub(crate) fn value(schema: &Value, key: u64) -> Value {
    let mut left = MAX_VALUES;
    make(schema, &mut SplitMix64::new(key), 0, &mut left)
}

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn make(schema: &Value, rng: &mut SplitMix64, depth: usize, left: &mut usize) -> Value {
    if depth > MAX_DEPTH || *left == 0 {
        return Value::Null;
    }
    *left -= 1;
    let Value::Object(s) = schema else {
        // `true` (anything) and `false` (nothing) alike get a word.
        return Value::String(word(rng));
    };
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(choices)) = s.get("enum")
        && !choices.is_empty()
    {
        return choices[pick(rng, choices.len())].clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = s.get(key)
            && !branches.is_empty()
        {
            return make(&branches[pick(rng, branches.len())], rng, depth + 1, left);
        }
    }
    if let Some(Value::Array(all)) = s.get("allOf")
        && let Some(first) = all.first()
    {
        return make(first, rng, depth + 1, left);
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => object(s, rng, depth, left),
        "array" => array(s, rng, depth, left),
        "integer" => {
            let low = s.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let high = s
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(low.saturating_add(100))
                .max(low);
            let span = high.abs_diff(low).saturating_add(1);
            json!(low.saturating_add_unsigned(rng.next_u64() % span))
        }
        "number" => {
            let low = s.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let high = s
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(low + 100.0)
                .max(low);
            let at = crate::text::unit(rng.next_u64());
            json!(((low + (high - low) * at) * 100.0).round() / 100.0)
        }
        "boolean" => json!(rng.next_u64() & 1 == 1),
        "null" => Value::Null,
        _ => {
            let words = 1 + pick(rng, 3);
            Value::String((0..words).map(|_| word(rng)).collect::<Vec<_>>().join(" "))
        }
    }
}

fn object(s: &Map<String, Value>, rng: &mut SplitMix64, depth: usize, left: &mut usize) -> Value {
    let required: Vec<&str> = match s.get("required") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut out = Map::new();
    if let Some(Value::Object(properties)) = s.get("properties") {
        for (name, property) in properties {
            // What is required, always; the rest, one time in two.
            if required.contains(&name.as_str()) || rng.next_u64() & 1 == 1 {
                out.insert(name.clone(), make(property, rng, depth + 1, left));
            }
        }
    }
    Value::Object(out)
}

fn array(s: &Map<String, Value>, rng: &mut SplitMix64, depth: usize, left: &mut usize) -> Value {
    let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(0);
    let max = s
        .get("maxItems")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
        .max(min)
        .min(min.saturating_add(EXTRA_ITEMS));
    let n = min.saturating_add(rng.next_u64() % (max - min).saturating_add(1));
    let items = s.get("items").cloned().unwrap_or(Value::Bool(true));
    let mut out = Vec::new();
    // Past the answer's budget, the array stops: cut short of the schema.
    while (out.len() as u64) < n && *left > 0 {
        out.push(make(&items, rng, depth + 1, left));
    }
    Value::Array(out)
}

fn word(rng: &mut SplitMix64) -> String {
    crate::text::Words::new(rng.next_u64()).text(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_value_has_the_schemas_shape_and_the_same_key_the_same_value() {
        let schema = json!({
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array", "minItems": 1, "maxItems": 3,
                    "items": {"anyOf": [
                        {"type": "object", "properties": {"capability": {"const": "music"},
                            "input": {"type": "object", "properties": {"artist": {"enum": ["weezer", "abba"]}}, "required": ["artist"]}},
                         "required": ["capability", "input"]},
                    ]},
                },
                "n": {"type": "integer", "minimum": 3, "maximum": 5},
            },
            "required": ["tasks", "n"],
        });
        for key in 0..50 {
            let v = value(&schema, key);
            assert_eq!(v, value(&schema, key));
            let tasks = v["tasks"].as_array().unwrap();
            assert!((1..=3).contains(&tasks.len()), "{v}");
            assert_eq!(tasks[0]["capability"], "music");
            assert!(["weezer", "abba"].contains(&tasks[0]["input"]["artist"].as_str().unwrap()));
            assert!((3..=5).contains(&v["n"].as_i64().unwrap()), "{v}");
        }
    }

    #[test]
    fn json_mode_asks_for_an_object_and_text_for_nothing() {
        assert_eq!(
            asked(&json!({"type": "json_object"})),
            Some(json!({"type": "object"}))
        );
        assert_eq!(asked(&json!({"type": "text"})), None);
        let schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}});
        assert_eq!(asked(&schema), Some(json!({"type": "integer"})));
        assert!(value(&json!({"type": "integer"}), 1).is_i64());
    }

    #[test]
    fn a_hostile_schema_gets_a_bounded_answer() {
        // Deeper than the limit: nulls below it.
        let mut deep = json!({"type": "integer"});
        for _ in 0..40 {
            deep = json!({"type": "array", "minItems": 1, "maxItems": 1, "items": deep});
        }
        let mut v = &value(&deep, 7);
        let mut levels = 0;
        while let Some(inner) = v.as_array().and_then(|a| a.first()) {
            v = inner;
            levels += 1;
        }
        assert!(levels <= MAX_DEPTH + 1 && v.is_null(), "{levels} {v}");
        // Counts that overflow, or multiply past any memory: cut short.
        let huge = json!({"type": "array", "minItems": u64::MAX, "items": {"type": "boolean"}});
        assert_eq!(value(&huge, 1).as_array().unwrap().len(), MAX_VALUES - 1);
        let wide = json!({"type": "array", "minItems": 50, "items":
            {"type": "array", "minItems": 50, "items": {"type": "array", "minItems": 50, "items": {"type": "integer"}}}});
        let count = |v: &Value| -> usize {
            fn walk(v: &Value) -> usize {
                1 + v.as_array().map_or(0, |a| a.iter().map(walk).sum())
            }
            walk(v)
        };
        assert!(count(&value(&wide, 3)) <= MAX_VALUES, "bounded");
    }
}
