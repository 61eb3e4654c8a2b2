//! Finding secrets in what an imported service says (env keys, rpcauth lines, `-key=value`
//! arguments) and taking them out: each becomes a declared `{kind: imported}` secret of
//! the app, or a reference to the same value of a dependency, and its text a
//! `${secret:…}` reference wherever it appears.

use std::collections::{BTreeMap, BTreeSet};

use super::draft::{sanitize_name, unique};
use crate::manifest::is_valid_secret_name;

/// True for env keys that hold secrets: PASSWORD, PASSWD, PASS (as a word or suffix),
/// SECRET, TOKEN, APIKEY, API_KEY, PRIVATE_KEY, RPCAUTH, in any case.
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    const ANYWHERE: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "APIKEY",
        "API_KEY",
        "PRIVATE_KEY",
        "RPCAUTH",
    ];
    ANYWHERE.iter().any(|w| upper.contains(w))
        || upper.ends_with("PASS")
        || upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "PASS")
}

/// True for a bitcoind rpcauth line: `user:<32 hex>$<64 hex>`.
pub fn is_rpcauth(value: &str) -> bool {
    let Some((user, rest)) = value.split_once(':') else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('$') else {
        return false;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    !user.is_empty()
        && !user.starts_with('-')
        && !user.contains(|c: char| c.is_whitespace() || c == '=')
        && hex(salt, 32)
        && hex(hash, 64)
}

/// A secret taken out of a draft, with its value for the secret file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSecret {
    pub app: String,
    pub name: String,
    pub value: String,
}

/// Secrets known so far: per app, value → name.
#[derive(Debug, Default)]
pub(super) struct SecretBook {
    by_app: BTreeMap<String, BTreeMap<String, String>>,
    pub(super) taken: Vec<TakenSecret>,
}

impl SecretBook {
    /// The reference for `value` in app `id` (with dependencies `deps`): a known one of the
    /// app or a dependency, else a new secret named from `hint` when `declare`.
    pub(super) fn reference(
        &mut self,
        id: &str,
        deps: &[String],
        value: &str,
        hint: &str,
        declare: bool,
    ) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        if let Some(name) = self.by_app.get(id).and_then(|m| m.get(value)) {
            return Some(format!("${{secret:{name}}}"));
        }
        for dep in deps {
            if let Some(name) = self.by_app.get(dep).and_then(|m| m.get(value)) {
                return Some(format!("${{secret:{dep}/{name}}}"));
            }
        }
        if !declare {
            return None;
        }
        let own = self.by_app.entry(id.to_string()).or_default();
        let mut names: BTreeSet<String> = own.values().cloned().collect();
        let base = if is_rpcauth(value) {
            "rpcauth".to_string()
        } else {
            sanitize_name(&hint.to_ascii_lowercase(), "secret")
        };
        let name = unique(base, &mut names);
        debug_assert!(is_valid_secret_name(&name));
        own.insert(value.to_string(), name.clone());
        self.taken.push(TakenSecret {
            app: id.to_string(),
            name: name.clone(),
            value: value.to_string(),
        });
        Some(format!("${{secret:{name}}}"))
    }

    /// An argument with its secret part replaced: a whole rpcauth line or known value, or
    /// the value of `-key=value` when the key or the value says it is a secret.
    pub(super) fn argument(&mut self, id: &str, deps: &[String], arg: &str) -> String {
        if let Some(r) = self.reference(id, deps, arg, "rpcauth", is_rpcauth(arg)) {
            return r;
        }
        if let Some((key, value)) = arg.split_once('=') {
            let bare = key.trim_start_matches('-');
            if !bare.is_empty() && !bare.contains(char::is_whitespace) {
                let declare = is_rpcauth(value) || is_secret_key(bare);
                if let Some(r) = self.reference(id, deps, value, bare, declare) {
                    return format!("{key}={r}");
                }
            }
        }
        arg.to_string()
    }

    /// `text` with every known secret value of the app or its dependencies (8 characters
    /// or more, so that short common words are left alone) replaced by its reference:
    /// a password inside a URL does not reach the draft either.
    pub(super) fn scrub(&self, id: &str, deps: &[String], text: &str) -> String {
        let mut known: Vec<(&String, String)> = Vec::new();
        if let Some(own) = self.by_app.get(id) {
            known.extend(own.iter().map(|(v, n)| (v, format!("${{secret:{n}}}"))));
        }
        for dep in deps {
            if let Some(theirs) = self.by_app.get(dep) {
                known.extend(
                    theirs
                        .iter()
                        .map(|(v, n)| (v, format!("${{secret:{dep}/{n}}}"))),
                );
            }
        }
        known.retain(|(v, _)| v.len() >= 8);
        known.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (value, reference) in known {
            out = out.replace(value.as_str(), &reference);
        }
        out
    }

    /// An argument as the draft writes it: [`SecretBook::argument`], then scrubbed.
    pub(super) fn render_argument(&mut self, id: &str, deps: &[String], arg: &str) -> String {
        let replaced = self.argument(id, deps, arg);
        if replaced == arg {
            self.scrub(id, deps, arg)
        } else {
            replaced
        }
    }

    pub(super) fn declared(&self, id: &str) -> Vec<&String> {
        self.by_app
            .get(id)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_and_rpcauth_lines() {
        for k in [
            "PASSWORD",
            "db_passwd",
            "RPCPASS",
            "BITCOIN_RPC_PASS",
            "PASS_FILE",
            "client_secret",
            "API_TOKEN",
            "apikey",
            "X_API_KEY",
            "PRIVATE_KEY",
            "RPCAUTH",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["PASSAGE", "COMPASS_HOST", "USER", "PATH", "KEYS"] {
            assert!(!is_secret_key(k), "{k}");
        }
        let line = format!("u:{}${}", "a1".repeat(16), "0f".repeat(32));
        assert!(is_rpcauth(&line));
        assert!(!is_rpcauth(&line[..line.len() - 1]));
        assert!(!is_rpcauth("user:pass"));
        assert!(!is_rpcauth(&format!("-rpcauth={line}")));
    }
}
