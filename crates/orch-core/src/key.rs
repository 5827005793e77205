//! Item keys such as `ORCH-113`: a repo's prefix and a per-repo sequence number.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key prefix {0:?} must be 1 to 16 characters: an uppercase ASCII letter, then uppercase letters or digits")]
    BadPrefix(String),
    #[error("item key {0:?} must look like PREFIX-N (for example ORCH-113), with N a positive number")]
    BadKey(String),
}

/// A repo's key prefix: an uppercase ASCII letter followed by up to 15 uppercase
/// letters or digits. Kept short and unambiguous so keys read well in branch names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Validates a prefix.
    ///
    /// # Errors
    /// `KeyError::BadPrefix` when it is empty, too long, or not `[A-Z][A-Z0-9]*`.
    pub fn new(s: &str) -> Result<Self, KeyError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_uppercase());
        let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if first_ok && rest_ok && s.len() <= 16 {
            Ok(Self(s.to_owned()))
        } else {
            Err(KeyError::BadPrefix(s.to_owned()))
        }
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for KeyPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A work item's key, `PREFIX-N`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemKey {
    prefix: KeyPrefix,
    number: NonZeroU64,
}

impl ItemKey {
    /// Builds the key of the `number`th item of a repo.
    pub fn new(prefix: KeyPrefix, number: NonZeroU64) -> Self {
        Self { prefix, number }
    }

    /// The repo's prefix.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The per-repo sequence number.
    pub fn number(&self) -> NonZeroU64 {
        self.number
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.prefix, self.number)
    }
}

impl FromStr for ItemKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError::BadKey(s.to_owned());
        let (prefix, number) = s.rsplit_once('-').ok_or_else(bad)?;
        let prefix = KeyPrefix::new(prefix).map_err(|_| bad())?;
        if number.starts_with('0') || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let number: NonZeroU64 = number.parse().map_err(|_| bad())?;
        Ok(Self { prefix, number })
    }
}

impl Serialize for ItemKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ItemKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_keys() {
        let k: ItemKey = "ORCH-113".parse().unwrap();
        assert_eq!(k.prefix().as_str(), "ORCH");
        assert_eq!(k.number().get(), 113);
        assert_eq!(k.to_string(), "ORCH-113");
        let k: ItemKey = "A1-7".parse().unwrap();
        assert_eq!(k.to_string(), "A1-7");
    }

    #[test]
    fn rejects_malformed_keys() {
        for bad in ["", "ORCH", "ORCH-", "ORCH-0", "ORCH-01", "orch-1", "1X-2", "OR CH-1", "ORCH--1", "ORCH-1a", "-1"] {
            assert!(bad.parse::<ItemKey>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefix_rules() {
        assert!(KeyPrefix::new("SHOP").is_ok());
        assert!(KeyPrefix::new("S2").is_ok());
        assert!(KeyPrefix::new("").is_err());
        assert!(KeyPrefix::new("shop").is_err());
        assert!(KeyPrefix::new("ABCDEFGHIJKLMNOPQ").is_err());
    }
}
