//! Request priority: 0 is the lowest, 100 the highest, 50 the default
//! (seed 002's `defaultPriority`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("priority must be an integer from 0 to 100, got {0:?}")]
pub struct PriorityError(pub String);

impl Priority {
    pub const MIN: Priority = Priority(0);
    pub const MAX: Priority = Priority(100);
    pub const DEFAULT: Priority = Priority(50);

    pub fn new(value: u8) -> Result<Self, PriorityError> {
        if value <= 100 {
            Ok(Priority(value))
        } else {
            Err(PriorityError(value.to_string()))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl FromStr for Priority {
    type Err = PriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u8>()
            .ok()
            .and_then(|v| Priority::new(v).ok())
            .ok_or_else(|| PriorityError(s.to_string()))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_valid_range_and_names_bad_input() {
        let cases = [
            ("0", Some(0)),
            ("50", Some(50)),
            (" 100 ", Some(100)),
            ("101", None),
            ("-1", None),
            ("high", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Priority>().ok().map(Priority::get);
            assert_eq!(got, want, "input {input:?}");
        }
        let err = "abc".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("\"abc\""));
    }
}
