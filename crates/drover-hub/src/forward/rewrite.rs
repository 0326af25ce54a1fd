//! The one change the hub makes to a request body: its `model` becomes the
//! chosen backend's own id for the model (see `aliases`). Everything else
//! stays byte for byte: only the value's bytes are replaced.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
}

/// `body` with its top-level `model` set to `id`, or `None` when the body
/// has no such field (it was checked on arrival, so this does not happen).
pub fn with_model(body: &Bytes, id: &str) -> Option<Bytes> {
    let field: ModelField<'_> = serde_json::from_slice(body).ok()?;
    let raw = field.model.get().as_bytes();
    // The raw value borrows from `body`: its offset is where it starts.
    let start = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start + raw.len();
    if end > body.len() {
        return None;
    }
    let value = serde_json::to_vec(id).ok()?;
    let mut out = Vec::with_capacity(body.len() - raw.len() + value.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[end..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_top_level_model_value_changes() {
        let body = Bytes::from_static(
            br#"{ "messages":[{"role":"user","content":"\"model\": \"x\""}],
  "model" :  "qwen2.5-7b", "metadata":{"model":"keep"} }"#,
        );
        let out = with_model(&body, "qwen2.5:7b-instruct").unwrap();
        let expected = br#"{ "messages":[{"role":"user","content":"\"model\": \"x\""}],
  "model" :  "qwen2.5:7b-instruct", "metadata":{"model":"keep"} }"#;
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn an_id_needing_escapes_stays_valid_json() {
        let body = Bytes::from_static(br#"{"model":"a"}"#);
        let out = with_model(&body, "C:\\models\\\"q\".gguf").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "C:\\models\\\"q\".gguf");
    }
}
