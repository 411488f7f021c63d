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
        let quoted = crate::bounded::quoted(s);
        // kube's parser panics on a value beyond what a Duration holds: refuse those first.
        if !within_range(s) {
            return Err(format!(
                "{quoted} is out of range: a duration is at most {MAX_HOURS}h"
            ));
        }
        s.parse::<kube::core::Duration>().map(Self).map_err(|e| {
            format!("{quoted} is not a duration such as \"500ms\", \"5s\" or \"1m30s\" ({e})")
        })
    }
}

/// Longest duration accepted, in hours: about 114 years, far inside what every clock holds.
const MAX_HOURS: u64 = 1_000_000;

/// Whether the sum of the number-unit pairs in `s` stays within [`MAX_HOURS`]. Text that is
/// not a duration passes, and the parser says what is wrong with it.
fn within_range(s: &str) -> bool {
    let limit = MAX_HOURS as f64 * 3600.0;
    let mut total = 0.0f64;
    let mut rest = s.trim_start_matches(['-', '+']);
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return true,
        };
        let Ok(value) = number.parse::<f64>() else {
            return true;
        };
        total += value * seconds_per_unit;
        if !total.is_finite() || total > limit {
            return false;
        }
        rest = next;
    }
    true
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

    #[test]
    fn durations_beyond_any_clock_are_refused_not_a_panic() {
        for text in [
            "92233720368547758081s",
            "99999999999999999999999999999999h",
            "-92233720368547758081s",
            "1000001h",
            "3600000001s1ns",
            &format!("{}h", "9".repeat(400)),
        ] {
            let e = text.parse::<Duration>().unwrap_err();
            assert!(e.contains("is out of range"), "{text}: {e}");
        }
        assert!("1000000h".parse::<Duration>().is_ok());
        assert!("1.5h30m".parse::<Duration>().is_ok());
    }
}
