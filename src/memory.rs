//! Memory sizes: parsing `1GiB`, `512Mi`, `1.5G` and friends into a byte count.
//!
//! The rules are the contract's (§3): a plain integer is bytes; IEC units `Ki Mi Gi Ti`
//! (also `KiB MiB GiB TiB`) are powers of 1024; SI units `k K M G T` (also `kB KB MB GB
//! TB`) are powers of 1000; fractions are rounded down to whole bytes. Docker-style
//! lowercase `m`/`g` is refused because it is ambiguous. This module knows nothing of the
//! field a size came from: callers add it to the error.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The smallest limit we accept: 6 MiB, the smallest memory limit Docker allows.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// Fraction digits we keep exact; more would overflow the `u128` arithmetic.
const MAX_FRACTION_DIGITS: usize = 24;

/// Why a memory size was refused. Messages name the value, never the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// The value was empty or only whitespace.
    #[error("memory size is empty")]
    Empty,
    /// The value started with a minus sign.
    #[error("{input:?} is negative")]
    Negative { input: String },
    /// A Docker-style lowercase unit whose meaning (1000 or 1024) is unclear.
    #[error("{input:?} is ambiguous: {hint}")]
    Ambiguous { input: String, hint: String },
    /// The number was followed by something that is not a unit we know.
    #[error(
        "{input:?} has unknown unit {unit:?}: use a plain byte count, \
         Ki Mi Gi Ti (KiB MiB GiB TiB) or k K M G T (kB KB MB GB TB)"
    )]
    UnknownUnit { input: String, unit: String },
    /// The value does not start with a number we can read.
    #[error("{input:?} is not a memory size: expected a number and an optional unit, e.g. 512Mi or 1GiB")]
    Invalid { input: String },
    /// The value does not fit in 64 bits of bytes.
    #[error("{input:?} is too large")]
    Overflow { input: String },
    /// The value is below [`MIN_MEMORY_BYTES`].
    #[error("{input:?} is {bytes} bytes, below the minimum of 6 MiB ({MIN_MEMORY_BYTES} bytes)")]
    TooSmall { input: String, bytes: u64 },
}

/// Parses a memory size (see the module docs) into bytes, refusing anything below 6 MiB.
pub fn parse_memory_limit(s: &str) -> Result<u64, MemoryError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(MemoryError::Empty);
    }
    let owned = || input.to_string();
    if input.starts_with('-') {
        return Err(MemoryError::Negative { input: owned() });
    }
    let number_end = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(input.len());
    let (number, rest) = input.split_at(number_end);
    let unit = rest.trim_start();
    let (int_part, frac_part) = match number.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (number, None),
    };
    let frac_ok = frac_part.is_none_or(|f| {
        !f.is_empty() && f.len() <= MAX_FRACTION_DIGITS && f.bytes().all(|b| b.is_ascii_digit())
    });
    if int_part.is_empty() || !frac_ok {
        return Err(MemoryError::Invalid { input: owned() });
    }
    let multiplier = unit_multiplier(input, int_part, unit)?;

    let int: u128 = int_part
        .parse()
        .map_err(|_| MemoryError::Overflow { input: owned() })?;
    let mut bytes = int
        .checked_mul(multiplier)
        .ok_or_else(|| MemoryError::Overflow { input: owned() })?;
    if let Some(frac) = frac_part {
        // Exact: digits * multiplier / 10^len, rounded down. 10^24 * 1024^4 fits in u128.
        let digits: u128 = frac
            .parse()
            .map_err(|_| MemoryError::Invalid { input: owned() })?;
        let scale = 10u128.pow(frac.len() as u32);
        bytes += digits * multiplier / scale;
    }
    let bytes = u64::try_from(bytes).map_err(|_| MemoryError::Overflow { input: owned() })?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(MemoryError::TooSmall {
            input: owned(),
            bytes,
        });
    }
    Ok(bytes)
}

/// The multiplier of a unit suffix, or why the suffix is refused.
fn unit_multiplier(input: &str, number: &str, unit: &str) -> Result<u128, MemoryError> {
    const KI: u128 = 1024;
    const K: u128 = 1000;
    let multiplier = match unit {
        "" | "B" => 1,
        "Ki" | "KiB" => KI,
        "Mi" | "MiB" => KI.pow(2),
        "Gi" | "GiB" => KI.pow(3),
        "Ti" | "TiB" => KI.pow(4),
        "k" | "K" | "kB" | "KB" => K,
        "M" | "MB" => K.pow(2),
        "G" | "GB" => K.pow(3),
        "T" | "TB" => K.pow(4),
        "b" => {
            return Err(MemoryError::Ambiguous {
                input: input.to_string(),
                hint: format!("write bytes as a plain integer, e.g. {number}"),
            })
        }
        "kb" | "m" | "mb" | "g" | "gb" | "t" | "tb" => {
            let letter = unit[..1].to_ascii_uppercase();
            let si = if letter == "K" { "k" } else { letter.as_str() };
            return Err(MemoryError::Ambiguous {
                input: input.to_string(),
                hint: format!(
                    "write {number}{letter}i for powers of 1024 or {number}{si} for powers of 1000"
                ),
            });
        }
        _ => {
            return Err(MemoryError::UnknownUnit {
                input: input.to_string(),
                unit: unit.to_string(),
            })
        }
    };
    Ok(multiplier)
}

/// A validated memory size in bytes (at least 6 MiB).
///
/// Deserializes from a YAML string (`1GiB`) or integer (bytes); serializes as bytes.
/// Displays in the largest IEC unit that divides it exactly (`1 GiB`, `1536 MiB`), or in
/// bytes (`6500000 B`); the displayed form parses back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryLimit(u64);

impl MemoryLimit {
    /// Wraps a byte count, refusing values below [`MIN_MEMORY_BYTES`].
    pub fn from_bytes(bytes: u64) -> Result<MemoryLimit, MemoryError> {
        if bytes < MIN_MEMORY_BYTES {
            return Err(MemoryError::TooSmall {
                input: bytes.to_string(),
                bytes,
            });
        }
        Ok(MemoryLimit(bytes))
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for MemoryLimit {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_memory_limit(s).map(MemoryLimit)
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 % size == 0 {
                return write!(f, "{} {name}", self.0 / size);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl Serialize for MemoryLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;

        impl Visitor<'_> for LimitVisitor {
            type Value = MemoryLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a memory size such as 512Mi or 1GiB, or a byte count")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemoryLimit, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemoryLimit, E> {
                MemoryLimit::from_bytes(v).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemoryLimit, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(MemoryError::Negative {
                        input: v.to_string(),
                    })),
                }
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MemoryLimit, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: write a byte count or a size with a unit, e.g. {v}Gi"
                )))
            }
        }

        deserializer.deserialize_any(LimitVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: u64 = 1024;
    const MI: u64 = 1024 * 1024;
    const GI: u64 = 1024 * 1024 * 1024;
    const TI: u64 = 1024 * 1024 * 1024 * 1024;

    #[test]
    fn parses_valid_sizes() {
        let cases: &[(&str, u64)] = &[
            // IEC, short and long
            ("6144Ki", 6144 * KI),
            ("6144KiB", 6144 * KI),
            ("512Mi", 512 * MI),
            ("512MiB", 512 * MI),
            ("6Mi", MIN_MEMORY_BYTES),
            ("1Gi", GI),
            ("1GiB", GI),
            ("2Ti", 2 * TI),
            ("2TiB", 2 * TI),
            ("1.5Gi", 1536 * MI),
            ("0.5GiB", 512 * MI),
            ("1.3Gi", 1395864371), // 1.3 * 2^30 = 1395864371.2, rounded down
            ("1 GiB", GI),
            ("  256 MiB ", 256 * MI),
            // SI, short and long
            ("7000k", 7_000_000),
            ("7000K", 7_000_000),
            ("7000kB", 7_000_000),
            ("7000KB", 7_000_000),
            ("512M", 512_000_000),
            ("512MB", 512_000_000),
            ("1G", 1_000_000_000),
            ("1GB", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("1.5G", 1_500_000_000),
            ("0.0065G", 6_500_000),
            // plain bytes
            ("6291456", MIN_MEMORY_BYTES),
            ("1073741824", GI),
            ("6291456B", MIN_MEMORY_BYTES),
            ("16777216000", 16_777_216_000),
            ("18446744073709551615", u64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(parse_memory_limit(input), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn refuses_invalid_sizes() {
        use MemoryError as E;
        let s = |v: &str| v.to_string();
        let cases: Vec<(&str, MemoryError)> = vec![
            ("", E::Empty),
            ("   ", E::Empty),
            ("-1Gi", E::Negative { input: s("-1Gi") }),
            ("-5", E::Negative { input: s("-5") }),
            (
                "5Mi",
                E::TooSmall {
                    input: s("5Mi"),
                    bytes: 5 * MI,
                },
            ),
            (
                "0",
                E::TooSmall {
                    input: s("0"),
                    bytes: 0,
                },
            ),
            (
                "6291455",
                E::TooSmall {
                    input: s("6291455"),
                    bytes: 6291455,
                },
            ),
            (
                "6M",
                E::TooSmall {
                    input: s("6M"),
                    bytes: 6_000_000,
                },
            ),
            (
                "0.001Gi",
                E::TooSmall {
                    input: s("0.001Gi"),
                    bytes: 1073741,
                },
            ),
            (
                "16Ei",
                E::UnknownUnit {
                    input: s("16Ei"),
                    unit: s("Ei"),
                },
            ),
            (
                "1gi",
                E::UnknownUnit {
                    input: s("1gi"),
                    unit: s("gi"),
                },
            ),
            (
                "1Gib",
                E::UnknownUnit {
                    input: s("1Gib"),
                    unit: s("Gib"),
                },
            ),
            (
                "1 G i",
                E::UnknownUnit {
                    input: s("1 G i"),
                    unit: s("G i"),
                },
            ),
            (
                "1Gi!",
                E::UnknownUnit {
                    input: s("1Gi!"),
                    unit: s("Gi!"),
                },
            ),
            ("abc", E::Invalid { input: s("abc") }),
            ("Gi", E::Invalid { input: s("Gi") }),
            (".5Gi", E::Invalid { input: s(".5Gi") }),
            ("1.Gi", E::Invalid { input: s("1.Gi") }),
            (
                "1.2.3Gi",
                E::Invalid {
                    input: s("1.2.3Gi"),
                },
            ),
            ("+1Gi", E::Invalid { input: s("+1Gi") }),
            (
                "1e9",
                E::UnknownUnit {
                    input: s("1e9"),
                    unit: s("e9"),
                },
            ),
            (
                "18446744073709551616",
                E::Overflow {
                    input: s("18446744073709551616"),
                },
            ),
            (
                "17179869184Gi",
                E::Overflow {
                    input: s("17179869184Gi"),
                },
            ),
            (
                "99999999999999999999999999999999999999999",
                E::Overflow {
                    input: s("99999999999999999999999999999999999999999"),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_memory_limit(input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn refuses_docker_style_units_with_a_hint() {
        let cases = [
            (
                "512m",
                "write 512Mi for powers of 1024 or 512M for powers of 1000",
            ),
            (
                "512mb",
                "write 512Mi for powers of 1024 or 512M for powers of 1000",
            ),
            (
                "2g",
                "write 2Gi for powers of 1024 or 2G for powers of 1000",
            ),
            (
                "2gb",
                "write 2Gi for powers of 1024 or 2G for powers of 1000",
            ),
            (
                "1t",
                "write 1Ti for powers of 1024 or 1T for powers of 1000",
            ),
            (
                "1tb",
                "write 1Ti for powers of 1024 or 1T for powers of 1000",
            ),
            (
                "7000kb",
                "write 7000Ki for powers of 1024 or 7000k for powers of 1000",
            ),
            ("7000000b", "write bytes as a plain integer, e.g. 7000000"),
        ];
        for (input, hint) in cases {
            let want = MemoryError::Ambiguous {
                input: input.to_string(),
                hint: hint.to_string(),
            };
            assert_eq!(parse_memory_limit(input), Err(want), "input {input:?}");
        }
        let message = parse_memory_limit("512m").unwrap_err().to_string();
        assert_eq!(
            message,
            "\"512m\" is ambiguous: write 512Mi for powers of 1024 or 512M for powers of 1000"
        );
    }

    #[test]
    fn displays_in_iec_units_and_round_trips() {
        let cases = [
            (GI, "1 GiB"),
            (512 * MI, "512 MiB"),
            (1536 * MI, "1536 MiB"),
            (2 * TI, "2 TiB"),
            (6145 * KI, "6145 KiB"),
            (6_500_000, "6500000 B"),
        ];
        for (bytes, want) in cases {
            let limit = MemoryLimit::from_bytes(bytes).expect("above the minimum");
            assert_eq!(limit.to_string(), want);
            assert_eq!(want.parse::<MemoryLimit>(), Ok(limit), "round trip {want}");
        }
    }

    #[test]
    fn deserializes_from_strings_and_integers() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("1GiB", Ok(GI)),
            ("\"512Mi\"", Ok(512 * MI)),
            ("1073741824", Ok(GI)),
            ("512m", Err("\"512m\" is ambiguous")),
            ("-1", Err("\"-1\" is negative")),
            ("1.5", Err("1.5 has no unit")),
            ("100", Err("below the minimum")),
            ("[1]", Err("invalid type: sequence")),
        ];
        for (yaml, want) in cases {
            let got = serde_yaml::from_str::<MemoryLimit>(yaml);
            match (got, want) {
                (Ok(limit), Ok(bytes)) => assert_eq!(limit.bytes(), *bytes, "yaml {yaml}"),
                (Err(err), Err(text)) => {
                    assert!(err.to_string().contains(text), "yaml {yaml}: {err}")
                }
                (got, want) => panic!("yaml {yaml}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            serde_yaml::to_string(&MemoryLimit(GI)).unwrap(),
            "1073741824\n"
        );
    }
}
