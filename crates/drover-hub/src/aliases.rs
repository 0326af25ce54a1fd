//! One name for a model across kinds of server: `[[models]]` maps a public
//! name to the ids each server uses for it (`qwen2.5:7b-instruct` on
//! Ollama, `qwen2.5-7b-instruct` on LM Studio, a GGUF file on llama.cpp).
//! The scheduler, `/v1/models` and metrics see only public names; a
//! request naming any of the ids means the public name, and its body's
//! `model` is rewritten to the chosen backend's own id on the way out.
//! An entry also carries what the model manager should know of the model:
//! its size where servers do not tell, warm, pinned, its time to live.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// One `[[models]]` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelAlias {
    /// What clients ask for and `/v1/models` lists.
    pub name: String,
    /// The servers' own ids for it. An id with a `/` is matched whole; one
    /// without also matches a path's last part, so a GGUF file name matches
    /// llama.cpp's id, which is the path it was started with.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Bytes it takes loaded, where a server does not tell (a number or
    /// `"4.5G"`-style text).
    #[serde(default, deserialize_with = "drover_proto::admin::size")]
    pub size: Option<u64>,
    /// Loaded at start, and again whenever no backend holds it.
    #[serde(default)]
    pub warm: bool,
    /// Never evicted, never unloaded for idleness; loaded where it fits.
    #[serde(default)]
    pub pinned: bool,
    /// Unloaded after this long idle, over `[manager] ttl`.
    #[serde(default, deserialize_with = "crate::config::opt_duration")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Aliases {
    /// Server id (or file name) to public name.
    by_id: HashMap<String, String>,
    /// Public name to configured size.
    sizes: HashMap<String, u64>,
}

impl Aliases {
    /// Checks that no id names two models and no public name is another
    /// entry's id.
    pub fn new(entries: &[ModelAlias]) -> Result<Aliases, String> {
        let mut by_id = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.name.trim().is_empty() {
                return Err(format!("models[{i}]: name must not be empty"));
            }
            for id in &e.ids {
                if id.trim().is_empty() {
                    return Err(format!("models[{i}] ({}): an id is empty", e.name));
                }
                if let Some(other) = by_id.insert(id.clone(), e.name.clone())
                    && other != e.name
                {
                    return Err(format!(
                        "models[{i}]: id {id:?} is given to both {other:?} and {:?}",
                        e.name
                    ));
                }
            }
        }
        for e in entries {
            if let Some(other) = by_id.get(&e.name)
                && *other != e.name
            {
                return Err(format!(
                    "model name {:?} is also an id of {other:?}",
                    e.name
                ));
            }
        }
        let sizes = entries
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.size?)))
            .collect();
        Ok(Aliases { by_id, sizes })
    }

    /// The size config gives a model, by its public name.
    pub fn size_of(&self, public: &str) -> Option<u64> {
        self.sizes.get(public).copied()
    }

    /// The public name a server's own id stands for: its alias, or itself.
    pub fn public_name<'a>(&'a self, id: &'a str) -> &'a str {
        if let Some(name) = self.by_id.get(id) {
            return name;
        }
        let file = id.rsplit(['/', '\\']).next().unwrap_or(id);
        self.by_id.get(file).map_or(id, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen() -> Aliases {
        Aliases::new(&[ModelAlias {
            name: "qwen2.5-7b".into(),
            ids: vec![
                "qwen2.5:7b-instruct".into(),
                "qwen2.5-7b-instruct".into(),
                "Qwen2.5-7B-Instruct-Q4_K_M.gguf".into(),
            ],
            ..ModelAlias::default()
        }])
        .unwrap()
    }

    #[test]
    fn every_id_and_a_gguf_path_mean_the_public_name() {
        let a = qwen();
        assert_eq!(a.public_name("qwen2.5:7b-instruct"), "qwen2.5-7b");
        assert_eq!(a.public_name("qwen2.5-7b-instruct"), "qwen2.5-7b");
        assert_eq!(
            a.public_name("/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
            "qwen2.5-7b"
        );
        assert_eq!(a.public_name("qwen2.5-7b"), "qwen2.5-7b");
        assert_eq!(a.public_name("llama3"), "llama3");
    }

    #[test]
    fn an_id_for_two_models_is_refused() {
        let err = Aliases::new(&[
            ModelAlias {
                name: "a".into(),
                ids: vec!["x".into()],
                ..ModelAlias::default()
            },
            ModelAlias {
                name: "b".into(),
                ids: vec!["x".into()],
                ..ModelAlias::default()
            },
        ])
        .unwrap_err();
        assert!(err.contains("\"x\" is given to both"), "{err}");
    }
}
