//! Durations written the Kubernetes way ("500ms", "5s", "1m30s"), with errors that say what is expected.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration in Go's `time.ParseDuration` format, as `metav1.Duration` uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(kube::core::Duration);

impl Duration {
    pub fn is_negative(&self) -> bool {
        self.0.is_negative()
    }

    /// The length, treating a negative duration as zero.
    pub fn std(&self) -> std::time::Duration {
        if self.is_negative() {
            std::time::Duration::ZERO
        } else {
            self.0.into()
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d.into())
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.std()
    }
}

impl PartialEq<std::time::Duration> for Duration {
    fn eq(&self, other: &std::time::Duration) -> bool {
        self.0 == *other
    }
}

impl PartialOrd<std::time::Duration> for Duration {
    fn partial_cmp(&self, other: &std::time::Duration) -> Option<std::cmp::Ordering> {
        self.0.partial_cmp(other)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<kube::core::Duration>().map(Self).map_err(|e| {
            format!("{s:?} is not a duration such as \"500ms\", \"5s\" or \"1m30s\" ({e})")
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"5s\" or \"1m30s\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write \"{v}s\" or \"{v}ms\""
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write \"{v}s\" or \"{v}ms\""
                )))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!("{v} has no unit: write \"{v}s\"")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^-?([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Duration;

    #[test]
    fn parses_go_durations() {
        let d: Duration = "1m30s".parse().unwrap();
        assert_eq!(d.std(), std::time::Duration::from_secs(90));
        assert_eq!("500ms".parse::<Duration>().unwrap().std().as_millis(), 500);
        assert!("-5s".parse::<Duration>().unwrap().is_negative());
        assert_eq!(
            "-5s".parse::<Duration>().unwrap().std(),
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn errors_say_what_is_expected() {
        let e = serde_yaml::from_str::<Duration>("fast")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"fast\" is not a duration such as \"500ms\""),
            "{e}"
        );
        let e = serde_yaml::from_str::<Duration>("30")
            .unwrap_err()
            .to_string();
        assert!(e.contains("30 has no unit"), "{e}");
    }
}
