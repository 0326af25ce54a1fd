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

    /// The public name a server's own id stands for: its alias; else, for
    /// a model served from a GGUF file, the file's stem (llama.cpp's server
    /// lists one model by the path it was started with, and its router
    /// mode by the stem: one model, one name, so a request fails over
    /// between them); else the id itself.
    pub fn public_name<'a>(&'a self, id: &'a str) -> &'a str {
        if let Some(name) = self.by_id.get(id) {
            return name;
        }
        let file = id.rsplit(['/', '\\']).next().unwrap_or(id);
        if let Some(name) = self.by_id.get(file) {
            return name;
        }
        gguf_stem(file).unwrap_or(id)
    }
}

/// `tiny-a` of `tiny-a.gguf`, and of a split model's first part
/// `big-00001-of-00003.gguf`, `big`.
fn gguf_stem(file: &str) -> Option<&str> {
    let cut = file.len().checked_sub(".gguf".len())?;
    if !file.is_char_boundary(cut) || !file[cut..].eq_ignore_ascii_case(".gguf") {
        return None;
    }
    let stem = &file[..cut];
    let split = stem.rsplit_once("-of-").and_then(|(head, total)| {
        let (name, part) = head.rsplit_once('-')?;
        let digits = |t: &str| t.len() == 5 && t.bytes().all(|b| b.is_ascii_digit());
        (digits(part) && digits(total)).then_some(name)
    });
    let stem = split.unwrap_or(stem);
    (!stem.is_empty()).then_some(stem)
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
    fn a_model_served_from_a_gguf_file_is_named_by_its_stem() {
        let a = Aliases::default();
        for (id, public) in [
            ("/srv/models/tiny-a.gguf", "tiny-a"),
            ("tiny-a.gguf", "tiny-a"),
            ("C:\\models\\Tiny-B.GGUF", "Tiny-B"),
            ("/m/big-model-00001-of-00003.gguf", "big-model"),
            ("/m/odd-1-of-3.gguf", "odd-1-of-3"),
            ("tiny-a", "tiny-a"),
            ("qwen2.5:7b", "qwen2.5:7b"),
            (".gguf", ".gguf"),
            ("/m/é.gguf", "é"),
        ] {
            assert_eq!(a.public_name(id), public, "{id}");
        }
        // A configured alias still wins.
        assert_eq!(
            qwen().public_name("/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
            "qwen2.5-7b"
        );
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
