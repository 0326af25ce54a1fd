//! Servers' version strings, compared leniently (`0.14.2`, `v0.11.1rc1`,
//! `0.11.1.dev5+g12ab`): the leading numbers decide.

/// Whether `version` is at least `min` (`[major, minor, patch]`). An
/// unreadable version is not.
pub fn at_least(version: &str, min: [u64; 3]) -> bool {
    let mut parts = [0u64; 3];
    let trimmed = version.trim().trim_start_matches(['v', 'V']);
    let mut read = 0;
    for (i, piece) in trimmed.split('.').take(3).enumerate() {
        let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
        let Ok(n) = digits.parse() else {
            break;
        };
        parts[i] = n;
        read += 1;
    }
    read > 0 && parts >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_the_leading_numbers() {
        assert!(at_least("0.14.0", [0, 14, 0]));
        assert!(at_least("0.14.2", [0, 14, 0]));
        assert!(at_least("v1.0", [0, 14, 0]));
        assert!(!at_least("0.13.9", [0, 14, 0]));
        assert!(at_least("0.11.1rc1", [0, 11, 1]));
        assert!(at_least("0.11.1.dev5+g12ab", [0, 11, 1]));
        assert!(!at_least("0.11.0", [0, 11, 1]));
        assert!(!at_least("unknown", [0, 0, 0]));
    }
}
