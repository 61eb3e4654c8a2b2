//! App secrets: generated once at install, one 0600 file per secret under
//! `<data_dir>/secrets/<id>/`, and rendered into a container's env and command where a
//! manifest says `${secret:NAME}` (its own) or `${secret:APP/NAME}` (a dependency's).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::manifest::SecretSpec;
use crate::store::{set_mode, Store, StoreError};

/// A secret that could not be made or read, naming it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {app}/{name}: {source}")]
    Io {
        app: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {app}/{name}: not generated yet (is {app} installed?)")]
    Missing { app: String, name: String },
    #[error(
        "secret {app}/{name}: imported from the old node but missing: put its value in {}",
        path.display()
    )]
    ImportedMissing {
        app: String,
        name: String,
        path: PathBuf,
    },
    #[error("secret {app}/{name}: rpcauth refers to unknown secret {password}")]
    UnknownPassword {
        app: String,
        name: String,
        password: String,
    },
    #[error("secret reference in {text:?}: {reason}")]
    BadReference { text: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("os random source failed: {0}")]
    Random(String),
}

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_bytes(n: usize) -> Result<Vec<u8>, SecretError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(buf)
}

/// A password of `length` characters from `[A-Za-z0-9]`, safe in URLs and config files.
pub fn random_password(length: usize) -> Result<String, SecretError> {
    let mut out = String::with_capacity(length);
    while out.len() < length {
        for b in random_bytes(length * 2)? {
            // 62 * 4 = 248: rejecting bytes >= 248 keeps the choice uniform.
            if b < 248 && out.len() < length {
                out.push(ALPHANUMERIC[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// `bytes` random bytes, hex encoded.
pub fn random_hex(bytes: usize) -> Result<String, SecretError> {
    Ok(hex::encode(random_bytes(bytes)?))
}

/// bitcoind's rpcauth line: `user:salt$hmac-sha256(key = salt, message = password)` in
/// hex, exactly as bitcoind's `share/rpcauth/rpcauth.py` writes it.
pub fn rpcauth_line(user: &str, salt_hex: &str, password: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(salt_hex.as_bytes()).expect("any key length");
    mac.update(password.as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("{user}:{salt_hex}${digest}")
}

fn secret_path(store: &Store, app: &str, name: &str) -> PathBuf {
    store.secrets_dir(app).join(name)
}

/// Reads one secret.
pub fn read(store: &Store, app: &str, name: &str) -> Result<String, SecretError> {
    match fs::read_to_string(secret_path(store, app, name)) {
        Ok(v) => Ok(v.trim_end_matches('\n').to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::Missing {
            app: app.into(),
            name: name.into(),
        }),
        Err(source) => Err(SecretError::Io {
            app: app.into(),
            name: name.into(),
            source,
        }),
    }
}

fn write_new(store: &Store, app: &str, name: &str, value: &str) -> Result<(), SecretError> {
    let path = secret_path(store, app, name);
    let io = |source| SecretError::Io {
        app: app.into(),
        name: name.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(value.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)
}

/// Generates every secret the app declares that does not exist yet. Existing secrets are
/// never changed: a reinstall keeps the passwords its data was made with.
pub fn generate(
    store: &Store,
    app: &str,
    specs: &BTreeMap<String, SecretSpec>,
) -> Result<(), SecretError> {
    let dir = store.secrets_dir(app);
    fs::create_dir_all(&dir).map_err(|source| SecretError::Io {
        app: app.into(),
        name: String::new(),
        source,
    })?;
    set_mode(&dir, 0o700)?;
    // Plain secrets first: rpcauth lines are derived from them.
    let mut ordered: Vec<(&String, &SecretSpec)> = specs.iter().collect();
    ordered.sort_by_key(|(_, s)| matches!(s, SecretSpec::Rpcauth { .. }));
    for (name, spec) in ordered {
        let path = secret_path(store, app, name);
        if path.exists() {
            continue;
        }
        let value = match spec {
            SecretSpec::Imported => {
                return Err(SecretError::ImportedMissing {
                    app: app.into(),
                    name: name.clone(),
                    path,
                })
            }
            SecretSpec::Password { length } => random_password(*length)?,
            SecretSpec::Hex { bytes } => random_hex(*bytes)?,
            SecretSpec::Rpcauth { user, password } => {
                if !specs.contains_key(password) {
                    return Err(SecretError::UnknownPassword {
                        app: app.into(),
                        name: name.clone(),
                        password: password.clone(),
                    });
                }
                let pw = read(store, app, password)?;
                rpcauth_line(user, &random_hex(16)?, &pw)
            }
        };
        write_new(store, app, name, &value)?;
    }
    Ok(())
}

/// What [`write_imported`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The file did not exist and now holds the value.
    Written,
    /// The file already held this value.
    AlreadySame,
    /// The file holds another value; it was left as it is.
    Conflict,
}

/// Stores the value of an imported secret (`{kind: imported}`) taken from the node the
/// app comes from: `<data_dir>/secrets/<app>/<name>`, 0600, in a 0700 folder. An existing
/// file with another value is never overwritten: the app's data may depend on it.
pub fn write_imported(
    store: &Store,
    app: &str,
    name: &str,
    value: &str,
) -> Result<Imported, SecretError> {
    let dir = store.secrets_dir(app);
    fs::create_dir_all(&dir).map_err(|source| SecretError::Io {
        app: app.into(),
        name: name.into(),
        source,
    })?;
    set_mode(&dir, 0o700)?;
    match read(store, app, name) {
        Ok(existing) if existing == value => Ok(Imported::AlreadySame),
        Ok(_) => Ok(Imported::Conflict),
        Err(SecretError::Missing { .. }) => {
            write_new(store, app, name, value)?;
            Ok(Imported::Written)
        }
        Err(e) => Err(e),
    }
}

/// Deletes all of an app's secrets (uninstall with purge).
pub fn remove_all(store: &Store, app: &str) -> Result<(), SecretError> {
    match fs::remove_dir_all(store.secrets_dir(app)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SecretError::Io {
            app: app.into(),
            name: String::new(),
            source,
        }),
    }
}

/// Replaces every `${secret:NAME}` (the app's own) and `${secret:APP/NAME}` in `text`.
pub fn render(store: &Store, app: &str, text: &str) -> Result<String, SecretError> {
    const OPEN: &str = "${secret:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| SecretError::BadReference {
            text: text.into(),
            reason: "missing closing }".into(),
        })?;
        let reference = &after[..end];
        let (owner, name) = match reference.split_once('/') {
            Some((owner, name)) => (owner, name),
            None => (app, reference),
        };
        if name.is_empty() || owner.is_empty() {
            return Err(SecretError::BadReference {
                text: text.into(),
                reason: "empty name".into(),
            });
        }
        out.push_str(&read(store, owner, name)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every argument of a command (hook and health `exec`s) with [`render`].
pub fn render_all(store: &Store, app: &str, args: &[String]) -> Result<Vec<String>, SecretError> {
    args.iter().map(|a| render(store, app, a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector from bitcoind's own functional test `rpc_users.py`.
    #[test]
    fn rpcauth_matches_bitcoind_known_good_vector() {
        assert_eq!(
            rpcauth_line(
                "rt",
                "93648e835a54c573682c2eb19f882535",
                "cA773lm788buwYe4g4WT+05pKyNruVKjQ25x3n0DQcM="
            ),
            "rt:93648e835a54c573682c2eb19f882535$7681e9c5b74bdd85e78166031d2058e1069b3ed7ed967c93fc63abba06f31144"
        );
    }

    #[test]
    fn generate_once_then_keep_and_render() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut specs = BTreeMap::new();
        specs.insert(
            "rpc_password".to_string(),
            SecretSpec::Password { length: 32 },
        );
        specs.insert(
            "rpcauth".to_string(),
            SecretSpec::Rpcauth {
                user: "archipelago".into(),
                password: "rpc_password".into(),
            },
        );
        specs.insert("token".to_string(), SecretSpec::Hex { bytes: 16 });
        generate(&store, "bitcoind", &specs).unwrap();
        let pw = read(&store, "bitcoind", "rpc_password").unwrap();
        assert_eq!(pw.len(), 32);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(read(&store, "bitcoind", "token").unwrap().len(), 32);
        let line = read(&store, "bitcoind", "rpcauth").unwrap();
        let (user, rest) = line.split_once(':').unwrap();
        let (salt, _) = rest.split_once('$').unwrap();
        assert_eq!(user, "archipelago");
        assert_eq!(line, rpcauth_line("archipelago", salt, &pw));
        let mode = fs::metadata(store.secrets_dir("bitcoind").join("rpc_password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        generate(&store, "bitcoind", &specs).unwrap();
        assert_eq!(
            read(&store, "bitcoind", "rpc_password").unwrap(),
            pw,
            "kept"
        );

        let rendered = render(&store, "lnd", "u:${secret:bitcoind/rpc_password}@x").unwrap();
        assert_eq!(rendered, format!("u:{pw}@x"));
        let own = render(&store, "bitcoind", "-rpcauth=${secret:rpcauth}").unwrap();
        assert_eq!(own, format!("-rpcauth={line}"));
        assert_eq!(render(&store, "x", "no refs").unwrap(), "no refs");
        let err = render(&store, "lnd", "${secret:missing}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret lnd/missing: not generated yet (is lnd installed?)"
        );
        assert!(render(&store, "lnd", "${secret:open").is_err());
    }

    #[test]
    fn imported_secrets_are_written_once_and_never_generated() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut specs = BTreeMap::new();
        specs.insert("rpcpassword".to_string(), SecretSpec::Imported);
        let err = generate(&store, "bitcoind", &specs).unwrap_err();
        let path = store.secrets_dir("bitcoind").join("rpcpassword");
        assert_eq!(
            err.to_string(),
            format!(
                "secret bitcoind/rpcpassword: imported from the old node but missing: put its value in {}",
                path.display()
            )
        );
        assert!(!path.exists(), "an imported secret is never generated");

        let write = |value| write_imported(&store, "bitcoind", "rpcpassword", value).unwrap();
        assert_eq!(write("old value"), Imported::Written);
        assert_eq!(write("old value"), Imported::AlreadySame);
        assert_eq!(write("other"), Imported::Conflict);
        assert_eq!(
            read(&store, "bitcoind", "rpcpassword").unwrap(),
            "old value"
        );
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&store.secrets_dir("bitcoind")), 0o700);
        generate(&store, "bitcoind", &specs).expect("present now");
    }
}
