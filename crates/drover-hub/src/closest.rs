//! The fleet's models closest to a name nobody serves, for the "did you
//! mean" of a 404: a client that asks for `qwen2.5-7b` when the fleet has
//! `qwen2.5-7b-instruct` should hear so.

/// How many names a suggestion offers at most.
const MAX: usize = 3;

/// Below this Jaro-Winkler similarity a name is no suggestion.
const SIMILAR: f64 = 0.8;

/// Up to three of `names` closest to `asked`, closest first: names that
/// contain it or that it contains (ignoring case), then names that are
/// spelled alike.
pub fn closest<'a>(asked: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let asked = asked.to_lowercase();
    if asked.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(f64, &str)> = names
        .into_iter()
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let score = if lower.contains(&asked) || asked.contains(&lower) {
                // Containment beats any spelling, the closer in length the
                // better.
                let (short, long) = (asked.len().min(lower.len()), asked.len().max(lower.len()));
                1.0 + short as f64 / long.max(1) as f64
            } else {
                strsim::jaro_winkler(&asked, &lower)
            };
            (score >= SIMILAR).then_some((score, name))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(MAX)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_what_contains_the_name_then_what_is_spelled_alike() {
        let fleet = [
            "qwen2.5-7b-instruct",
            "qwen2.5-coder-7b-instruct",
            "llama-3.2-3b-instruct",
            "nomic-embed-text",
        ];
        assert_eq!(
            closest("qwen2.5-7b", fleet),
            ["qwen2.5-7b-instruct", "qwen2.5-coder-7b-instruct"]
        );
        assert_eq!(closest("Llama-3.2-3B", fleet), ["llama-3.2-3b-instruct"]);
        assert_eq!(closest("nomic-embed-txt", fleet), ["nomic-embed-text"]);
        assert!(closest("gpt-4o", fleet).is_empty());
        assert!(closest("", fleet).is_empty());
    }
}
