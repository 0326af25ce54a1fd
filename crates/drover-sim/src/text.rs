//! Deterministic text and vectors. The hashing and the generator are written
//! out here rather than taken from `std` or `rand` because neither promises
//! the same output across releases, and the simulator's answers must not
//! change when the toolchain does.

/// FNV-1a, 64-bit: small, stable, and good enough to key a generator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Hashes `s` followed by a separator, so `("ab", "c")` and `("a", "bc")`
    /// key different answers.
    pub(crate) fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes()).bytes(&[0xff])
    }

    pub(crate) fn u64(self, n: u64) -> Self {
        self.bytes(&n.to_le_bytes())
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

// The seeded generator and mixer drover uses everywhere.
pub(crate) use drover_core::mix::{SplitMix64, mix64, unit};

/// Each word carries its leading space, so a token is a slice of this table
/// and streaming needs no allocation per token; the first token drops the
/// space.
const WORDS: [&str; 64] = [
    " the", " a", " model", " server", " token", " answer", " quiet", " river", " stone", " light",
    " seven", " north", " garden", " signal", " paper", " window", " slow", " bright", " under",
    " over", " and", " but", " with", " from", " into", " small", " large", " green", " blue",
    " cold", " warm", " field", " road", " bridge", " tower", " market", " letter", " number",
    " engine", " cloud", " forest", " harbor", " lantern", " meadow", " orbit", " pebble",
    " quartz", " rain", " shadow", " thread", " valley", " wind", " yarn", " zephyr", " amber",
    " birch", " cedar", " dune", " ember", " fern", " glacier", " hollow", " island", " juniper",
];

/// The endless word sequence of one answer.
#[derive(Debug, Clone)]
pub(crate) struct Words {
    source: Source,
    first: bool,
}

#[derive(Debug, Clone)]
enum Source {
    /// Words from the table, drawn by a seeded generator.
    Drawn(SplitMix64),
    /// A text fixed beforehand (structured output), a few characters a
    /// token, from byte `at` on.
    Fixed {
        text: std::sync::Arc<str>,
        at: usize,
    },
}

/// Characters a token of a fixed text carries, about what a tokenizer
/// makes of JSON.
const FIXED_TOKEN_CHARS: usize = 4;

impl Words {
    pub(crate) fn new(key: u64) -> Self {
        Words {
            source: Source::Drawn(SplitMix64::new(key)),
            first: true,
        }
    }

    /// `text` as tokens, and how many there are.
    pub(crate) fn fixed(text: String) -> (Self, usize) {
        let tokens = text.chars().count().div_ceil(FIXED_TOKEN_CHARS);
        let words = Words {
            source: Source::Fixed {
                text: text.into(),
                at: 0,
            },
            first: false,
        };
        (words, tokens)
    }

    pub(crate) fn next_token(&mut self) -> std::borrow::Cow<'static, str> {
        match &mut self.source {
            Source::Drawn(rng) => {
                // 64 words: the low six bits pick one uniformly.
                let word = WORDS[(rng.next_u64() & 63) as usize];
                if std::mem::take(&mut self.first) {
                    word[1..].into()
                } else {
                    word.into()
                }
            }
            Source::Fixed { text, at } => {
                let rest = &text[*at..];
                let end = rest
                    .char_indices()
                    .nth(FIXED_TOKEN_CHARS)
                    .map_or(rest.len(), |(i, _)| i);
                *at += end;
                rest[..end].to_string().into()
            }
        }
    }

    /// The first `tokens` tokens joined, as a non-streamed answer carries them.
    pub(crate) fn text(mut self, tokens: usize) -> String {
        let mut text = String::with_capacity(tokens * 8);
        for _ in 0..tokens {
            text.push_str(&self.next_token());
        }
        text
    }
}

/// A unit-length vector of `dims` components determined by `key`.
/// `dims` is at least 1 (checked at start).
pub(crate) fn unit_vector(key: u64, dims: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(key);
    let mut v: Vec<f64> = (0..dims)
        .map(|_| unit(rng.next_u64()) * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        // Every component drew exactly zero; any axis is a fine unit vector.
        *first = 1.0;
    }
    v.into_iter().map(|x| x as f32).collect()
}

/// Whitespace-separated words: the simulator's stand-in for a tokenizer when
/// it counts prompt tokens.
pub(crate) fn count_words(s: &str) -> usize {
    s.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_text_and_capped_text_is_a_prefix() {
        let long = Words::new(42).text(20);
        assert_eq!(long, Words::new(42).text(20));
        assert!(long.starts_with(&Words::new(42).text(5)));
        assert_ne!(long, Words::new(43).text(20));
        assert!(!long.starts_with(' '));
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        for dims in [1, 2, 8, 384] {
            let v = unit_vector(7, dims);
            assert_eq!(v.len(), dims);
            let norm: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert!((norm - 1.0).abs() < 1e-5, "dims {dims}: norm² {norm}");
            assert_eq!(v, unit_vector(7, dims));
        }
    }

    #[test]
    fn hash_separates_fields() {
        let ab_c = Fnv::new().str("ab").str("c").finish();
        let a_bc = Fnv::new().str("a").str("bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn unit_stays_in_range() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u64::MAX) < 1.0);
    }
}
