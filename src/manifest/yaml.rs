//! Reading YAML: a serde error turned into `FIELD: line N: reason`, durations, scalar maps
//! and the compact string forms of ports.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::model::OnionPort;
use super::mounts::PortMapping;
use super::Problem;

/// Serializes through `Display` and deserializes through `FromStr`, for the types above
/// whose YAML form is one compact string.
macro_rules! string_form {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StrVisitor;

                impl Visitor<'_> for StrVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(StrVisitor)
            }
        }
    };
}

string_form!(OnionPort, "an onion port such as \"80:3000\"");
string_form!(
    PortMapping,
    "a port mapping such as \"9735:9735\" or \"53:53/udp\""
);

/// Parses YAML into `T`, turning the first error into a [`Problem`] with the field path and
/// the line.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, Problem> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let (field, reason) = describe_yaml_error(&err);
        Problem::new(path, field, reason)
    })
}

/// Splits a serde_yaml error into (field path, `line N: reason`).
pub(crate) fn describe_yaml_error(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> (String, String) {
    let inner = err.inner();
    let mut field = err.path().to_string();
    if field == "." {
        field.clear();
    }
    let mut message = strip_marks(&inner.to_string());
    // serde_yaml prefixes its own idea of the path; the field column already says it.
    if let Some((head, tail)) = message.split_once(": ") {
        let path_like = !head.is_empty()
            && head
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-[]?".contains(&b));
        if path_like
            && (head == field || field.starts_with(head) || head.starts_with(&field) || head == ".")
        {
            message = tail.to_string();
        }
    }
    // For unknown and missing fields, name the field itself.
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((name, _)) = rest.split_once('`') {
                let named = field == name || field.ends_with(&format!(".{name}"));
                if !named {
                    field = if field.is_empty() {
                        name.to_string()
                    } else {
                        format!("{field}.{name}")
                    };
                }
                if prefix.starts_with("missing") {
                    message = "is required".to_string();
                } else if name == "privileged" {
                    message = "unknown field `privileged`: privileged containers are not supported"
                        .to_string();
                }
            }
        }
    }
    if field.is_empty() {
        field = "yaml".to_string();
    }
    let reason = match inner.location() {
        Some(location) => format!("line {}: {message}", location.line()),
        None => message,
    };
    (field, reason)
}

/// Removes serde_yaml's ` at line N column M` marks; the reason carries the line up front.
pub(super) fn strip_marks(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(" at line ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + " at line ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &after[digits..];
        match tail.strip_prefix(" column ") {
            Some(col) if digits > 0 => {
                let col_digits = col.bytes().take_while(u8::is_ascii_digit).count();
                rest = &col[col_digits..];
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Durations written with humantime (`30s`, `5m`, `1h 30m`).
///
/// Hand-written rather than `humantime-serde`: that crate reports every bad duration as
/// `invalid value: string "5x", expected a duration`, dropping humantime's reason (which
/// unit is unknown, the units it takes) and the hint for a bare number (`write e.g. 5s`).
pub(crate) mod serde_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s or 5m")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v)
                    .map_err(|err| E::custom(format_args!("invalid duration {v:?}: {err}")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format_args!(
                    "duration {v} has no unit: write e.g. {v}s"
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format_args!("invalid duration {v}")))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Deserializes a map whose values may be any YAML scalar, read as text (`PORT: 8080`).
pub(super) fn scalar_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ScalarVisitor;

            impl Visitor<'_> for ScalarVisitor {
                type Value = Scalar;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string, number or boolean")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }

                fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                    Err(E::custom("value is empty: write \"\" for an empty string"))
                }
            }

            deserializer.deserialize_any(ScalarVisitor)
        }
    }

    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, Scalar(value))) = map.next_entry::<String, Scalar>()? {
                if out.insert(key.clone(), value).is_some() {
                    return Err(de::Error::custom(format_args!("{key:?} appears twice")));
                }
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(MapVisitor)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn reports_parse_errors_with_field_and_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("1GiB", "512m", "container.memory_limit: line 18: \"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000"),
            ("1GiB", "5Mi", "container.memory_limit: line 18: \"5Mi\" is 5242880 bytes, below the minimum of 6 MiB (6291456 bytes)"),
            ("  network: host\n", "  network: host\n  privileged: true\n", "container.privileged: line 18: unknown field `privileged`: privileged containers are not supported"),
            ("  network: host\n", "  netwrok: host\n", "container.netwrok: line 17: unknown field `netwrok`, expected one of `image`, `build`, `command`, `entrypoint`, `user`, `env`, `ports`, `volumes`, `cap_add`, `cap_drop`, `pids_limit`, `network`, `memory_limit`, `stop_timeout`, `restart`, `health`"),
            ("ui: {port", "color: red\nui: {port", "color: line 35: unknown field `color`, expected one of `id`, `name`, `version`, `description`, `dependencies`, `container`, `hooks`, `secrets`, `ui`, `onion`, `backup`"),
            ("  memory_limit: 1GiB\n", "", "container.memory_limit: line 7: is required"),
            ("name: LND\n", "", "name: line 1: is required"),
            ("stop_timeout: 5m", "stop_timeout: 5x", "container.stop_timeout: line 19: invalid duration \"5x\": unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"),
            ("stop_timeout: 5m", "stop_timeout: 5", "container.stop_timeout: line 19: duration 5 has no unit: write e.g. 5s"),
            ("\"10009:10009/tcp\"", "\"10009:10009/sctp\"", "container.ports[1]: line 15: invalid port mapping \"10009:10009/sctp\": unknown protocol \"sctp\", expected tcp or udp"),
            ("\"conf:/etc/lnd:ro\"", "\"conf\"", "container.volumes[1]: line 16: invalid volume \"conf\": expected NAME:PATH[:ro], e.g. data:/data"),
            ("{kind: hex}", "{kind: hex, length: 3}", "secrets.macaroon_key.length: line 33: unknown field `length`, expected `bytes`"),
            ("{kind: hex}", "{kind: rsa}", "secrets.macaroon_key.kind: line 33: unknown variant `rsa`, expected one of `password`, `hex`, `rpcauth`, `imported`"),
            ("user: archipelago, ", "", "secrets.rpcauth.user: line 34: is required"),
            ("    http: {port: 8080, path: /}\n", "", "container.health: line 22: needs one probe: http, tcp or exec"),
            ("    http: {port: 8080, path: /}\n", "    http: {port: 8080, path: /}\n    tcp: {port: 1}\n", "container.health: line 22: has more than one probe: keep one of http, tcp and exec"),
            ("    retries: 3\n", "    retries: -1\n", "container.health.retries: line 25: invalid type: integer `-1`, expected u32"),
            ("id: lnd", "id: LND", "id: line 1: invalid app id \"LND\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
            ("[bitcoind]", "[../etc]", "dependencies[0]: line 5: invalid app id \"../etc\": use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"),
            ("restart: always", "restart: sometimes", "container.restart: line 20: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
            ("    PORT: 8080\n", "    PORT:\n", "container.env.PORT: line 14: value is empty: write \"\" for an empty string"),
            ("id: lnd\n", "id: 'lnd\n", "id: line 36: found unexpected end of stream, while scanning a quoted scalar"),
        ];
        for (from, to, want) in cases {
            assert!(FULL.contains(from), "{from:?} is not in the example");
            let text = FULL.replacen(from, to, 1);
            let got = parse(&text).map(|_| ()).map_err(|p| lines(&p));
            assert_eq!(
                got,
                Err(vec![format!("apps/lnd/manifest.yml: {want}")]),
                "{from:?} -> {to:?}"
            );
        }
    }
}
