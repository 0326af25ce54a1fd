//! Which model to load when `--model` is absent.

use crate::args::Endpoint;

/// The first of `listed` (the ids GET /v1/models answered, in order) that
/// fits `endpoint`: an id containing "embed" (in any case) for embeddings,
/// any other for chat and completions, the way people tell them apart in a
/// model list. Otherwise a message that names `--model`.
pub fn default_model(listed: &[String], endpoint: Endpoint) -> Result<String, String> {
    let wants_embedding = endpoint == Endpoint::Embeddings;
    listed
        .iter()
        .find(|id| is_embedding(id) == wants_embedding)
        .cloned()
        .ok_or_else(|| {
            let kind = if wants_embedding {
                "embedding model (no id contains \"embed\")"
            } else {
                "chat model (every id contains \"embed\")"
            };
            if listed.is_empty() {
                "no model is listed; pass --model".to_owned()
            } else {
                format!("no {kind} among {listed:?}; pass --model")
            }
        })
}

fn is_embedding(id: &str) -> bool {
    id.to_ascii_lowercase().contains("embed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listed: &[&str], endpoint: Endpoint) -> Result<String, String> {
        let listed: Vec<String> = listed.iter().map(|m| m.to_string()).collect();
        default_model(&listed, endpoint)
    }

    #[test]
    fn embeddings_take_the_first_embedding_model() {
        let listed = ["qwen-7b", "nomic-Embed-text", "bge-embedding"];
        assert_eq!(
            check(&listed, Endpoint::Embeddings).as_deref(),
            Ok("nomic-Embed-text")
        );
    }

    #[test]
    fn chat_and_completions_take_the_first_other_model() {
        let listed = ["text-embedding-3", "qwen-7b", "llama-3"];
        for endpoint in [Endpoint::Chat, Endpoint::Completions] {
            assert_eq!(check(&listed, endpoint).as_deref(), Ok("qwen-7b"));
        }
    }

    #[test]
    fn no_fitting_model_asks_for_model() {
        for (listed, endpoint) in [
            (&["qwen-7b"][..], Endpoint::Embeddings),
            (&["EMBED-large"][..], Endpoint::Chat),
            (&[][..], Endpoint::Completions),
        ] {
            let error = check(listed, endpoint).expect_err("nothing fits");
            assert!(error.contains("--model"), "{error}");
        }
    }
}
