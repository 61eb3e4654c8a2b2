//! Secret names and `${secret:…}` references, and the manifest fields that may hold them.

use super::id::AppId;
use super::model::{AppManifest, HealthCheck, HealthProbe};

/// True for a secret name usable as a file name: `^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`.
pub fn is_valid_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A `${secret:NAME}` (own secret, `app: None`) or `${secret:APP/NAME}` reference.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub app: Option<AppId>,
    pub name: String,
}

impl SecretRef {
    /// The app whose secret this is, `owner` for an own reference.
    pub fn app_or<'a>(&'a self, owner: &'a AppId) -> &'a AppId {
        self.app.as_ref().unwrap_or(owner)
    }
}

/// The opening of a secret reference.
pub const SECRET_REF_OPEN: &str = "${secret:";

/// Finds every `${secret:NAME}` and `${secret:APP/NAME}` in `value`, in order. Other `${…}`
/// text is left alone. An unterminated or malformed reference is an error.
pub fn secret_refs(value: &str) -> Result<Vec<SecretRef>, String> {
    let mut refs = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find(SECRET_REF_OPEN) {
        let after = &rest[start + SECRET_REF_OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated secret reference in {value:?}: missing '}}'"))?;
        let inner = &after[..end];
        let (app, name) = match inner.split_once('/') {
            Some((app, name)) => {
                let app = app.parse::<AppId>().map_err(|_| {
                    format!("secret reference ${{secret:{inner}}} names an invalid app id {app:?}")
                })?;
                (Some(app), name)
            }
            None => (None, inner),
        };
        if !is_valid_secret_name(name) {
            return Err(format!(
                "secret reference ${{secret:{inner}}} has an invalid secret name {name:?}"
            ));
        }
        refs.push(SecretRef {
            app,
            name: name.to_string(),
        });
        rest = &after[end + 1..];
    }
    Ok(refs)
}

impl AppManifest {
    /// env values, command, entrypoint, the health exec probe and post_create commands.
    pub fn secret_ref_sites(&self) -> Vec<(String, &str)> {
        let c = &self.container;
        let mut sites = self.onion_ref_sites();
        if let Some(HealthCheck {
            probe: HealthProbe::Exec(command),
            ..
        }) = &c.health
        {
            for (i, arg) in command.iter().enumerate() {
                sites.push((format!("container.health.exec[{i}]"), arg));
            }
        }
        for (step, hook) in self.hooks.post_create.iter().enumerate() {
            for (i, arg) in hook.exec.iter().enumerate() {
                sites.push((format!("hooks.post_create[{step}].exec[{i}]"), arg));
            }
        }
        sites
    }

    /// The places where `${onion}` references are substituted: env values, command and
    /// entrypoint.
    pub fn onion_ref_sites(&self) -> Vec<(String, &str)> {
        let c = &self.container;
        let mut sites: Vec<(String, &str)> = Vec::new();
        for (key, value) in &c.env {
            sites.push((format!("container.env.{key}"), value));
        }
        for (field, list) in [
            ("container.command", &c.command),
            ("container.entrypoint", &c.entrypoint),
        ] {
            for (i, arg) in list.iter().flatten().enumerate() {
                sites.push((format!("{field}[{i}]"), arg));
            }
        }
        sites
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::*;

    #[test]
    fn finds_secret_references() {
        let r = |app: Option<&str>, name: &str| SecretRef {
            app: app.map(|a| a.parse().expect("valid id")),
            name: name.to_string(),
        };
        let cases: Vec<(&str, Result<Vec<SecretRef>, &str>)> = vec![
            ("plain", Ok(vec![])),
            ("${HOME}/x", Ok(vec![])),
            ("${secret:pw}", Ok(vec![r(None, "pw")])),
            (
                "u:${secret:bitcoind/rpc_password}@${secret:a.b-c_d}",
                Ok(vec![
                    r(Some("bitcoind"), "rpc_password"),
                    r(None, "a.b-c_d"),
                ]),
            ),
            ("${secret:pw", Err("unterminated secret reference")),
            ("${secret:}", Err("invalid secret name \"\"")),
            ("${secret:Bad/x}", Err("invalid app id \"Bad\"")),
            ("${secret:a/b/c}", Err("invalid secret name \"b/c\"")),
            ("${secret:../x}", Err("invalid app id \"..\"")),
        ];
        for (input, want) in cases {
            match (secret_refs(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
                (Err(e), Err(text)) => assert!(e.contains(text), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
