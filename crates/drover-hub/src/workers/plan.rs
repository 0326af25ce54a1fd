//! The planner: a plain-language request ("open youtube music and play
//! weezer") turned into tasks by a model in the fleet. The model is asked
//! through the same forwarding service, queue and priority as any chat
//! request, with its answer constrained to the capabilities workers offer
//! now: an OpenAI `response_format` JSON schema whose items are one
//! `{capability, input}` shape per capability (llama.cpp's server enforces
//! it with a grammar; a server that ignores it is caught by the checks
//! here). Whatever the model said is kept with the plan it made, or with
//! why it was refused.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};

use super::Workers;
use crate::error::ApiError;
use crate::forward::Sender;
use crate::hub::HubState;

/// The most bytes of a planner model's answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The longest request in plain language taken.
pub const MAX_REQUEST_CHARS: usize = 8_000;

/// A capability as the planner shows it to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Offered {
    pub name: String,
    pub description: Option<String>,
    /// Its input schema as the plan's schema embeds it (`{}`: any JSON).
    pub schema: Value,
}

impl Workers {
    /// Every capability some worker offers now (a draining one offers
    /// nothing), by name: its description and input schema from the newest
    /// worker that gave one.
    pub fn offered(&self) -> Vec<Offered> {
        let inner = self.lock();
        let mut workers: Vec<_> = inner.workers.values().filter(|w| !w.draining).collect();
        workers.sort_by_key(|w| w.seq);
        let mut by_name: std::collections::BTreeMap<String, Offered> = Default::default();
        for w in workers {
            for c in &w.capabilities {
                let entry = by_name.entry(c.name.clone()).or_insert_with(|| Offered {
                    name: c.name.clone(),
                    description: None,
                    schema: json!({}),
                });
                if let Some(d) = &c.description {
                    entry.description = Some(d.clone());
                }
                if let Some(s) = &c.input_schema {
                    entry.schema = embeddable(s);
                }
            }
        }
        by_name.into_values().collect()
    }
}

/// A capability's input schema as a part of the plan's schema. `$id` and
/// `$schema` would rebase or re-dialect it there, so they go; a schema
/// with a `$ref` points into its own document, which it no longer is, so
/// it is given as "any JSON" (the capability's own schema still checks
/// each task's input before it is stored).
fn embeddable(schema: &Value) -> Value {
    fn has_ref(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.contains_key("$ref") || m.values().any(has_ref),
            Value::Array(a) => a.iter().any(has_ref),
            _ => false,
        }
    }
    if has_ref(schema) {
        return json!({});
    }
    let mut schema = schema.clone();
    if let Value::Object(m) = &mut schema {
        m.remove("$id");
        m.remove("$schema");
    }
    schema
}

/// The schema a plan meets: `{"tasks": [...]}`, one to `max_tasks` tasks,
/// each one capability's name and an input meeting its schema.
pub fn plan_schema(offered: &[Offered], max_tasks: u32) -> Value {
    let shapes: Vec<Value> = offered
        .iter()
        .map(|c| {
            json!({
                "type": "object",
                "properties": {
                    "capability": {"const": c.name},
                    "input": c.schema,
                },
                "required": ["capability", "input"],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({
        "type": "object",
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_tasks,
                "items": {"anyOf": shapes},
            }
        },
        "required": ["tasks"],
        "additionalProperties": false,
    })
}

/// What the model is told: the capabilities, and the shape of the answer.
fn instructions(offered: &[Offered], max_tasks: u32) -> String {
    let mut out = String::from(
        "You turn a person's request into tasks for the workers of a fleet. Each task \
         names one capability and gives its input. The capabilities:\n",
    );
    for c in offered {
        let input = match &c.schema {
            Value::Object(m) if m.is_empty() => "any JSON".to_string(),
            schema => format!("JSON meeting the schema {schema}"),
        };
        let what = c.description.as_deref().unwrap_or("(no description)");
        out.push_str(&format!("- {}: {what} Input: {input}.\n", c.name));
    }
    out.push_str(&format!(
        "Answer with one JSON object and nothing else: {{\"tasks\": [{{\"capability\": NAME, \
         \"input\": INPUT}}]}}, from 1 to {max_tasks} tasks, in the order they are to be done."
    ));
    out
}

/// The chat request that asks `model` for a plan.
pub fn chat_body(
    model: &str,
    request: &str,
    offered: &[Offered],
    max_tasks: u32,
    max_tokens: u32,
) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": instructions(offered, max_tasks)},
            {"role": "user", "content": request},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "plan", "strict": true, "schema": plan_schema(offered, max_tasks)},
        },
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": false,
    })
}

/// Asks the fleet for a plan as `sender`: the model's answer (its
/// message's content), or why none came.
pub async fn ask(hub: &HubState, sender: Sender, body: &Value) -> Result<String, ApiError> {
    let path = "/v1/chat/completions";
    let (api, errors) = crate::jobs::submit::endpoint_api(path)
        .ok_or_else(|| ApiError::Internal("chat is not an endpoint jobs know".into()))?;
    let bytes =
        Bytes::from(serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.to_string()))?);
    let request = hub
        .forwarder
        .prepare(bytes, api, errors, path.to_string(), sender)
        .await?;
    let answer = hub.forwarder.forward(request).await.result?;
    let status = answer.status;
    let body = Limited::new(answer.body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::Upstream {
            message: format!(
                "the planner model's answer broke off or is over {MAX_ANSWER_BYTES} bytes: {e}"
            ),
        })?
        .to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let said = json["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_string,
        );
        return Err(ApiError::Upstream {
            message: format!(
                "the planner model answered {}: {}",
                status.as_u16(),
                crate::error::echo(&said)
            ),
        });
    }
    match &json["choices"][0]["message"]["content"] {
        Value::String(content) => Ok(content.clone()),
        _ => Err(ApiError::Upstream {
            message: format!(
                "the planner model's answer has no message content: {}",
                crate::error::echo(&String::from_utf8_lossy(&body))
            ),
        }),
    }
}

/// The tasks a model's answer plans, each a capability some worker offers
/// and an input its schema takes; or why the answer is not such a plan.
pub fn read_plan(
    answer: &str,
    offered: &[Offered],
    max_tasks: u32,
    workers: &Workers,
) -> Result<(Value, Vec<(String, Value)>), String> {
    let plan: Value = serde_json::from_str(unfenced(answer))
        .map_err(|e| format!("the model's answer is not JSON ({e})"))?;
    let Some(items) = plan.get("tasks").and_then(Value::as_array) else {
        return Err("the model's answer has no \"tasks\" list".into());
    };
    for (i, item) in items.iter().enumerate() {
        let name = item.get("capability").and_then(Value::as_str).unwrap_or("");
        if !offered.iter().any(|c| c.name == name) {
            return Err(format!(
                "task {i} names capability {:?}, which no worker offers",
                crate::error::echo(name)
            ));
        }
    }
    let schema = plan_schema(offered, max_tasks);
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| format!("the plan's schema does not compile: {e}"))?;
    if let Err(e) = validator.validate(&plan) {
        return Err(format!(
            "the plan does not meet its schema at {:?}: {e}",
            e.instance_path().to_string()
        ));
    }
    let mut tasks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item["capability"].as_str().unwrap_or_default().to_string();
        let input = item["input"].clone();
        match workers.check_input(&name, &input) {
            Ok(true) => tasks.push((name, input)),
            Ok(false) => {
                return Err(format!(
                    "task {i} names capability {name:?}, which no worker offers any more"
                ));
            }
            Err(e) => return Err(format!("task {i}: {e}")),
        }
    }
    Ok((plan, tasks))
}

/// The answer as JSON, where it is.
pub fn parsed(answer: &str) -> Option<Value> {
    serde_json::from_str(unfenced(answer)).ok()
}

/// The answer without a Markdown code fence around it, which models often
/// add where no grammar holds them to bare JSON.
fn unfenced(answer: &str) -> &str {
    let text = answer.trim();
    let Some(inner) = text.strip_prefix("```") else {
        return text;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn music() -> Offered {
        Offered {
            name: "music".into(),
            description: Some("Plays music.".into()),
            schema: json!({
                "type": "object",
                "properties": {"artist": {"type": "string"}},
                "required": ["artist"],
            }),
        }
    }

    #[test]
    fn the_plan_schema_takes_one_shape_per_capability() {
        let schema = plan_schema(
            &[
                music(),
                Offered {
                    name: "shell".into(),
                    description: None,
                    schema: json!({}),
                },
            ],
            3,
        );
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(
            v.is_valid(&json!({"tasks": [{"capability": "music", "input": {"artist": "weezer"}}]}))
        );
        assert!(v.is_valid(&json!({"tasks": [{"capability": "shell", "input": "ls"}]})));
        assert!(!v.is_valid(&json!({"tasks": [{"capability": "music", "input": {}}]})));
        assert!(!v.is_valid(&json!({"tasks": [{"capability": "mail", "input": 1}]})));
        assert!(!v.is_valid(&json!({"tasks": []})));
        let four = json!({"capability": "shell", "input": 1});
        assert!(!v.is_valid(&json!({"tasks": [four, four, four, four]})));
    }

    #[test]
    fn a_schema_that_points_into_itself_is_embedded_as_any_json() {
        let own = json!({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"});
        assert_eq!(embeddable(&own), json!({}));
        let based = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "type": "string"});
        assert_eq!(embeddable(&based), json!({"type": "string"}));
    }

    #[test]
    fn instructions_name_every_capability_and_the_answers_shape() {
        let text = instructions(&[music()], 8);
        assert!(
            text.contains("- music: Plays music. Input: JSON meeting the schema"),
            "{text}"
        );
        assert!(text.contains("from 1 to 8 tasks"), "{text}");
    }

    #[test]
    fn a_fenced_answer_is_read_as_the_json_inside() {
        assert_eq!(unfenced("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(unfenced(" {\"a\":1} "), "{\"a\":1}");
    }
}
