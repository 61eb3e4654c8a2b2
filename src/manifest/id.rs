//! The app id: validated once at parse, so it can never name a path outside its folder.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an [`AppId`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid app id {id:?}: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct InvalidAppId {
    /// The refused text.
    pub id: String,
}

/// An app's id: `^[a-z0-9][a-z0-9-]{0,62}$`. It names the app's folder, container, volumes
/// and secrets, so it is validated once here and can never hold `/` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppId {
    type Error = InvalidAppId;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let bytes = id.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(AppId(id))
        } else {
            Err(InvalidAppId { id })
        }
    }
}

impl FromStr for AppId {
    type Err = InvalidAppId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppId::try_from(s.to_string())
    }
}

impl From<AppId> for String {
    fn from(id: AppId) -> String {
        id.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AppId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::*;

    #[test]
    fn validates_app_ids() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        let cases = [
            ("lnd", true),
            ("0x", true),
            ("a-b-1", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("", false),
            ("-a", false),
            ("A", false),
            ("a_b", false),
            ("a/b", false),
            ("..", false),
            ("a.b", false),
        ];
        for (id, ok) in cases {
            assert_eq!(id.parse::<AppId>().is_ok(), ok, "{id:?}");
        }
        let id: AppId = serde_yaml::from_str("lnd").expect("valid id");
        assert_eq!((id.as_str(), id.to_string()), ("lnd", "lnd".to_string()));
        assert_eq!(serde_yaml::to_string(&id).expect("ids serialize"), "lnd\n");
    }
}
