//! Byte sizes written the Kubernetes way ("512Ki", "1Mi", "10G", or a plain number of bytes).

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A size in bytes, kept together with the text the user wrote so it round-trips unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteSize {
    bytes: u64,
    text: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ByteSizeError {
    #[error("empty size")]
    Empty,
    #[error(
        "{0:?} is not a size: expected a whole number with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T (e.g. \"1Mi\")"
    )]
    Invalid(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

const SUFFIXES: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl ByteSize {
    pub fn from_bytes(bytes: u64) -> Self {
        Self {
            bytes,
            text: bytes.to_string(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(ByteSizeError::Empty);
        }
        let (digits, multiplier) = SUFFIXES
            .iter()
            .find_map(|(suffix, mult)| text.strip_suffix(suffix).map(|d| (d, *mult)))
            .unwrap_or((text, 1));
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ByteSizeError::Invalid(s.to_string()));
        }
        let value: u64 = digits
            .parse()
            .map_err(|_| ByteSizeError::Overflow(s.to_string()))?;
        let bytes = value
            .checked_mul(multiplier)
            .ok_or_else(|| ByteSizeError::Overflow(s.to_string()))?;
        Ok(Self {
            bytes,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Renders a byte count for people: "784 MiB", "12 KiB", "512 B".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= *size {
            let whole = bytes / size;
            let tenth = (bytes % size) * 10 / size;
            return if tenth == 0 || whole >= 100 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenth} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1Mi\" or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize::from_bytes(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize::from_bytes)
                    .map_err(|_| E::custom(format!("size {v} must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The shape Kubernetes uses for resource quantities: int-or-string with a pattern.
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        for (text, bytes) in [
            ("0", 0),
            ("1024", 1024),
            ("1Ki", 1024),
            ("1Mi", 1 << 20),
            ("3Gi", 3 << 30),
            ("2k", 2000),
            ("5M", 5_000_000),
        ] {
            assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes, "{text}");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for text in [
            "",
            "Mi",
            "1.5Mi",
            "-1",
            "1 MB",
            "1mb",
            "99999999999999999999",
            "20000000Ti",
        ] {
            assert!(
                text.parse::<ByteSize>().is_err(),
                "{text} should be rejected"
            );
        }
    }

    #[test]
    fn accepts_integers_in_yaml() {
        let size: ByteSize = serde_yaml::from_str("1048576").unwrap();
        assert_eq!(size.bytes(), 1 << 20);
        let size: ByteSize = serde_yaml::from_str("\"1Mi\"").unwrap();
        assert_eq!(size.to_string(), "1Mi");
        assert!(serde_yaml::from_str::<ByteSize>("-5").is_err());
    }

    #[test]
    fn human_readable_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(784 * (1 << 20)), "784 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
