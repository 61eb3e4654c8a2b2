//! Compose's variable interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?message}`, `${VAR?message}`, `$VAR` and `$$`, resolved from the process
//! environment first and then the `.env` file beside the compose file (compose's order).
//! An unset variable without a default is reported, and reads as empty text as compose
//! makes it.

use std::collections::BTreeMap;

/// Where variables come from: the process environment wins over `.env`.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub env: BTreeMap<String, String>,
    pub dotenv: BTreeMap<String, String>,
}

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .or_else(|| self.dotenv.get(name))
            .map(String::as_str)
    }
}

/// A variable that could not be resolved: its name and why (compose's `?message`, or
/// "is not set").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub var: String,
    pub reason: String,
}

/// Resolves every variable of `text`; unresolved ones are pushed to `missing` and read as
/// empty text.
pub fn interpolate(text: &str, vars: &Vars, missing: &mut Vec<Unresolved>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = closing_brace(inner) else {
                // No closing brace: compose refuses the file; keep the text as written.
                out.push_str(&rest[at..]);
                return out;
            };
            out.push_str(&braced(&inner[..end], vars, missing));
            rest = &inner[end + 1..];
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            if len == 0 || after.as_bytes()[0].is_ascii_digit() {
                out.push('$');
                rest = after;
                continue;
            }
            out.push_str(&lookup(&after[..len], vars, missing));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// The index of the `}` that closes a `${`, counting nested `${…}` in defaults.
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn lookup(name: &str, vars: &Vars, missing: &mut Vec<Unresolved>) -> String {
    match vars.get(name) {
        Some(v) => v.to_string(),
        None => {
            missing.push(Unresolved {
                var: name.to_string(),
                reason: "is not set".to_string(),
            });
            String::new()
        }
    }
}

/// One `${…}` body.
fn braced(body: &str, vars: &Vars, missing: &mut Vec<Unresolved>) -> String {
    let name_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let (name, op) = body.split_at(name_len);
    let value = vars.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, op),
    };
    let usable = if colon { set_nonempty } else { value.is_some() };
    if op.is_empty() && !colon {
        return lookup(name, vars, missing);
    }
    let (kind, arg) = op.split_at(op.chars().next().map_or(0, char::len_utf8));
    match kind {
        "-" if usable => value.unwrap_or_default().to_string(),
        "-" => interpolate(arg, vars, missing),
        "+" if usable => interpolate(arg, vars, missing),
        "+" => String::new(),
        "?" if usable => value.unwrap_or_default().to_string(),
        "?" => {
            let reason = if arg.is_empty() {
                "is not set".to_string()
            } else {
                format!("is not set: {arg}")
            };
            missing.push(Unresolved {
                var: name.to_string(),
                reason,
            });
            String::new()
        }
        _ => {
            missing.push(Unresolved {
                var: body.to_string(),
                reason: "is not a variable compose understands".to_string(),
            });
            String::new()
        }
    }
}

/// Reads a `.env` file: `KEY=VALUE` lines (an `export ` prefix allowed), `#` comments,
/// values in single quotes taken as written, in double quotes with `\n`, `\"` and `\\`
/// escapes, unquoted ones cut at ` #`.
pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            v.to_string()
        } else if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            v.replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else {
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim()
                .to_string()
        };
        out.insert(key.trim().to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_resolves_as_compose_does() {
        let mut vars = Vars::default();
        vars.dotenv.insert("A".into(), "dot".into());
        vars.dotenv.insert("B".into(), "b".into());
        vars.env.insert("A".into(), "env".into());
        vars.env.insert("EMPTY".into(), String::new());
        let cases: &[(&str, &str)] = &[
            ("${A}", "env"),
            ("$A-$B", "env-b"),
            ("x$$y", "x$y"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${NOPE-d}", "d"),
            ("${NOPE:-${B}}", "b"),
            ("${B:?must}", "b"),
            ("${B:+set}", "set"),
            ("$1 and $", "$1 and $"),
            ("user:ab$$cd", "user:ab$cd"),
        ];
        for (text, want) in cases {
            let mut missing = Vec::new();
            assert_eq!(interpolate(text, &vars, &mut missing), *want, "{text}");
            assert!(missing.is_empty(), "{text}: {missing:?}");
        }
        let mut missing = Vec::new();
        assert_eq!(
            interpolate("${X}/${Y:?give Y}/${EMPTY?}/$Z", &vars, &mut missing),
            "///"
        );
        let got: Vec<_> = missing
            .iter()
            .map(|u| format!("{} {}", u.var, u.reason))
            .collect();
        assert_eq!(
            got,
            ["X is not set", "Y is not set: give Y", "Z is not set"]
        );
    }

    #[test]
    fn dotenv_lines() {
        let vars =
            parse_dotenv("# c\nexport A=1\nB='x # y'\nC=\"q\\\"\"\nD=plain # note\n\nnot a line\n");
        let got: Vec<_> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["A=1", "B=x # y", "C=q\"", "D=plain"]);
    }
}
