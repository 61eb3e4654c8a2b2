//! First-run onboarding: while no password is set, a one-time setup code lets whoever can
//! read the node's console (or its data_dir, as root) choose the dashboard password in the
//! browser. A neighbour on the LAN who opens the dashboard first cannot claim the node
//! without the code.
//!
//! The code is 12 characters (three groups of four) of an alphabet without look-alikes
//! (no 0/O, 1/I/L), drawn from the OS random source: 60 bits. It is written to
//! `<data_dir>/setup-code` (0600) for the console unit and logged once; `auth.setup`
//! checks it in constant time and deletes the file once a password is set.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Characters of a setup code: digits and capitals without 0, 1, I, L, O.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// Name of the code file in data_dir.
pub const CODE_FILE: &str = "setup-code";

/// Shortest password `auth.setup` accepts.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Wrong codes accepted before onboarding closes until the next start (which makes a new
/// code): with 60 bits of code, this is about guessing nothing at all.
pub const CODE_ATTEMPTS: u32 = 10;

/// Params of `auth.setup`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupParams {
    /// The setup code from the console, as typed (case, spaces and dashes do not matter).
    pub code: String,
    /// The new dashboard password.
    pub password: String,
}

/// The code of this run and where it is kept.
#[derive(Debug, Clone)]
pub struct SetupCode {
    /// `ABCD-EFGH-JKMN`.
    pub code: String,
    /// `<data_dir>/setup-code`.
    pub file: PathBuf,
}

/// A fresh code, `XXXX-XXXX-XXXX`, from the OS random source (rejection sampling, so every
/// character is equally likely).
pub fn new_code() -> String {
    let mut out = String::with_capacity(14);
    let mut picked = 0;
    while picked < 12 {
        let mut bytes = [0u8; 32];
        // The OS random source failing leaves no safe way to make a code; this cannot go on.
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        for b in bytes {
            // 248 = 8 × 31: values past it would favour the first characters.
            if b >= 248 || picked == 12 {
                continue;
            }
            if picked > 0 && picked % 4 == 0 {
                out.push('-');
            }
            out.push(char::from(ALPHABET[usize::from(b % 31)]));
            picked += 1;
        }
    }
    out
}

/// A code as typed, in the form it is compared: capitals, without spaces or dashes.
pub fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Makes this run's code and writes it to `<data_dir>/setup-code` (0600, replaced whole).
pub fn open(data_dir: &Path) -> std::io::Result<SetupCode> {
    let code = new_code();
    let file = data_dir.join(CODE_FILE);
    crate::web::auth::write_private(&file, format!("{code}\n").as_bytes())?;
    Ok(SetupCode { code, file })
}

/// When `password_file` does not exist, opens onboarding: makes the code, writes it to
/// data_dir (created 0700 if need be) and logs it. Answers `None` when a password file
/// exists (or exists but cannot be read: the caller reports that).
pub fn open_if_no_password(
    password_file: &Path,
    data_dir: &Path,
) -> std::io::Result<Option<SetupCode>> {
    match std::fs::metadata(password_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return Ok(None),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    let code = open(data_dir)?;
    tracing::warn!(
        "no password is set: open the dashboard and choose one with setup code {} \
         (also in {}); until then nobody can log in",
        code.code,
        code.file.display()
    );
    Ok(Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_three_groups_of_four_from_the_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_code();
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 3, "{code}");
            assert!(groups.iter().all(|g| g.len() == 4), "{code}");
            assert!(normalize(&code).bytes().all(|b| ALPHABET.contains(&b)));
            seen.insert(code);
        }
        assert_eq!(seen.len(), 200, "codes repeat");
    }

    #[test]
    fn typed_codes_are_normalized() {
        assert_eq!(normalize(" abcd-efgh jkmn\n"), "ABCDEFGHJKMN");
    }

    #[test]
    fn the_code_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let code = open(dir.path()).unwrap();
        let text = std::fs::read_to_string(&code.file).unwrap();
        assert_eq!(text.trim_end(), code.code);
        let mode = std::fs::metadata(&code.file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
