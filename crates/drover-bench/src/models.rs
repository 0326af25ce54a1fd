//! Which model to load when `--model` is absent: one that fits the endpoint,
//! that every target serves (the same model on both sides of a ratio), and
//! that is loaded already, so the bench measures serving rather than
//! loading and leaves the fleet holding what it held.

use crate::args::Endpoint;

/// One model as a target's `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// Whether it is loaded somewhere, where the listing says (drover's
    /// does, per backend); `None` where it does not (most servers list
    /// what they serve).
    pub loaded: Option<bool>,
}

/// The first model of `hub` that fits `endpoint` (an id containing "embed",
/// in any case, for embeddings; any other for chat and completions), that
/// `direct` lists too when there is one, and that is not known to be
/// unloaded. Otherwise a message that says why and names `--model`.
pub fn default_model(
    hub: &[Listed],
    direct: Option<&[Listed]>,
    endpoint: Endpoint,
) -> Result<String, String> {
    let wants_embedding = endpoint == Endpoint::Embeddings;
    let fitting: Vec<&Listed> = hub
        .iter()
        .filter(|m| is_embedding(&m.id) == wants_embedding)
        .collect();
    if fitting.is_empty() {
        let kind = if wants_embedding {
            "embedding model (no id contains \"embed\")"
        } else {
            "chat model (every id contains \"embed\")"
        };
        let ids: Vec<&str> = hub.iter().map(|m| m.id.as_str()).collect();
        return Err(if hub.is_empty() {
            "no model is listed; pass --model".to_owned()
        } else {
            format!("no {kind} among {ids:?}; pass --model")
        });
    }
    let shared: Vec<&Listed> = fitting
        .into_iter()
        .filter(|m| direct.is_none_or(|d| d.iter().any(|x| x.id == m.id)))
        .collect();
    if shared.is_empty() {
        return Err(
            "the hub and the direct server list no model in common: pass --model, one both serve under one name"
                .to_owned(),
        );
    }
    shared
        .iter()
        .find(|m| m.loaded != Some(false))
        .map(|m| m.id.clone())
        .ok_or_else(|| {
            format!(
                "none of {:?} is loaded: benching one would load it and change what the fleet holds; pass --model to do so anyway",
                shared.iter().map(|m| m.id.as_str()).collect::<Vec<_>>()
            )
        })
}

fn is_embedding(id: &str) -> bool {
    id.to_ascii_lowercase().contains("embed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ids: &[(&str, Option<bool>)]) -> Vec<Listed> {
        ids.iter()
            .map(|(id, loaded)| Listed {
                id: id.to_string(),
                loaded: *loaded,
            })
            .collect()
    }

    #[test]
    fn each_endpoint_takes_the_first_model_that_fits_it() {
        let hub = listed(&[
            ("text-embedding-3", None),
            ("qwen-7b", None),
            ("nomic-Embed-text", None),
        ]);
        assert_eq!(
            default_model(&hub, None, Endpoint::Embeddings).as_deref(),
            Ok("text-embedding-3")
        );
        for endpoint in [Endpoint::Chat, Endpoint::Completions] {
            assert_eq!(
                default_model(&hub, None, endpoint).as_deref(),
                Ok("qwen-7b")
            );
        }
    }

    #[test]
    fn both_sides_bench_one_model_that_is_loaded() {
        let hub = listed(&[
            ("llama-3", Some(false)),
            ("qwen-7b", Some(true)),
            ("mistral", Some(true)),
        ]);
        let direct = listed(&[("mistral", None), ("llama-3", None)]);
        assert_eq!(
            default_model(&hub, Some(&direct), Endpoint::Chat).as_deref(),
            Ok("mistral")
        );
        let only_unloaded = listed(&[("llama-3", None)]);
        let e = default_model(&hub, Some(&only_unloaded), Endpoint::Chat).unwrap_err();
        assert!(e.contains("would load it") && e.contains("--model"), "{e}");
        let none = listed(&[("gpt-4o", None)]);
        let e = default_model(&hub, Some(&none), Endpoint::Chat).unwrap_err();
        assert!(e.contains("no model in common"), "{e}");
    }

    #[test]
    fn no_fitting_model_asks_for_model() {
        for (ids, endpoint) in [
            (&["qwen-7b"][..], Endpoint::Embeddings),
            (&["EMBED-large"][..], Endpoint::Chat),
            (&[][..], Endpoint::Completions),
        ] {
            let hub: Vec<Listed> = ids
                .iter()
                .map(|id| Listed {
                    id: id.to_string(),
                    loaded: None,
                })
                .collect();
            let error = default_model(&hub, None, endpoint).expect_err("nothing fits");
            assert!(error.contains("--model"), "{error}");
        }
    }
}
