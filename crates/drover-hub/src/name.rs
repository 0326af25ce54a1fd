//! The one rule for the names an operator gives backends and keys.

/// `Ok` where `name` is 1-64 ASCII letters, digits, `.`, `-`, `_` or `:`;
/// else the refusal, naming `what` ("backend", "key"). Backends and keys
/// are named by the same people in the same commands and admin paths, so
/// they keep to one rule.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} must be 1-64 letters, digits, '.', '-', '_' or ':'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_to_the_rule() {
        for good in ["a", "gpu-1.local:8080", "Team_B", &"x".repeat(64)] {
            assert!(check_name("key", good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name("key", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name("backend", "a b").unwrap_err(),
            r#"backend name "a b" must be 1-64 letters, digits, '.', '-', '_' or ':'"#
        );
    }
}
