//! Domain paths (`global`, `global/acme`, `global/acme/emea`) and the subtree
//! rule that domain separation rests on. Pure values, no storage.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A domain path. Segments are non-empty and hold letters, digits, `_` or `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

/// The root of every domain tree.
pub const GLOBAL: &str = "global";

impl Domain {
    pub fn global() -> Domain {
        Domain(GLOBAL.to_string())
    }

    /// Parses a domain path, saying what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Domain, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a domain may not be empty; use `global` for the root".to_string());
        }
        for segment in text.split('/') {
            if segment.is_empty() {
                return Err(format!(
                    "domain `{text}` has an empty segment; write paths like `global/acme/emea`"
                ));
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "domain `{text}` has segment `{segment}` with characters other than letters, digits, `_` and `-`"
                ));
            }
        }
        Ok(Domain(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root, `global`.
    pub fn is_global(&self) -> bool {
        self.0 == GLOBAL
    }

    /// Whether `self` is `ancestor` or lies beneath it.
    pub fn is_within(&self, ancestor: &Domain) -> bool {
        self.0 == ancestor.0
            || (self.0.starts_with(&ancestor.0) && self.0.as_bytes()[ancestor.0.len()] == b'/')
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(value: Domain) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_rule() {
        let global = Domain::parse("global").unwrap();
        let acme = Domain::parse("global/acme").unwrap();
        let acme_emea = Domain::parse("global/acme/emea").unwrap();
        let acmex = Domain::parse("global/acmex").unwrap();
        assert!(acme.is_within(&global));
        assert!(acme_emea.is_within(&acme));
        assert!(acme.is_within(&acme));
        assert!(!acmex.is_within(&acme));
        assert!(!global.is_within(&acme));
    }

    #[test]
    fn bad_paths_are_explained() {
        assert!(
            Domain::parse("global//acme")
                .unwrap_err()
                .contains("empty segment")
        );
        assert!(Domain::parse("").is_err());
        assert!(Domain::parse("global/a b").is_err());
    }
}
