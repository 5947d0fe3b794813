//! UTC instants in integer nanoseconds.
//!
//! Every instant on the wire, in a manifest and in sample-time arithmetic is a
//! [`UtcNs`]: nanoseconds since the Unix epoch in an `i64` (±292 years).
//! There are no float seconds anywhere: a sample index maps to UTC by
//! [`UtcNs::at_sample`], which is exact integer arithmetic and so never
//! drifts, however long the recording.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Nanoseconds in one second.
pub const NS_PER_S: i64 = 1_000_000_000;

/// A UTC instant, nanoseconds since 1970-01-01T00:00:00Z (leap seconds not
/// counted, as in POSIX time and RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UtcNs(pub i64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// Not RFC 3339 at all. The caller should report the field and skip the input.
    #[error(
        "expected an RFC 3339 UTC timestamp such as 2022-02-08T22:05:13.123456789Z, got {0:?}"
    )]
    Syntax(String),
    /// RFC 3339 but with a non-zero UTC offset. blastnet only accepts UTC
    /// (`Z` or `+00:00`), so that no node can silently shift its clock by a time zone.
    #[error("expected a UTC timestamp ending in Z, got offset {offset} in {text:?}")]
    NotUtc {
        /// The offending text.
        text: String,
        /// The offset found.
        offset: String,
    },
    /// Outside ±292 years of 1970.
    #[error("timestamp {0:?} is outside the representable range (years 1678..2261)")]
    Range(String),
}

impl UtcNs {
    /// The Unix epoch.
    pub const EPOCH: UtcNs = UtcNs(0);

    /// From whole seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        UtcNs(s * NS_PER_S)
    }

    /// Nanoseconds since the epoch.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// The instant of sample `index` of a stream whose first sample is at
    /// `self` and whose rate is `rate_hz` samples per second: exact (rounded
    /// to the nearest nanosecond), computed in 128-bit integers so that a
    /// 24-hour stream at 96 kHz has no accumulated error.
    pub fn at_sample(self, index: u64, rate_hz: u32) -> UtcNs {
        let off = (index as i128 * NS_PER_S as i128 + rate_hz as i128 / 2) / rate_hz as i128;
        UtcNs(self.0 + off as i64)
    }

    /// The instant `self + seconds`, with `seconds` rounded to the nearest nanosecond.
    /// For offsets computed in floating point (a sub-sample onset, a propagation delay).
    #[inline]
    pub fn add_secs_f64(self, seconds: f64) -> UtcNs {
        UtcNs(self.0 + (seconds * NS_PER_S as f64).round() as i64)
    }

    /// `self - other` in seconds, as f64 (for solver arithmetic on short differences).
    #[inline]
    pub fn secs_since(self, other: UtcNs) -> f64 {
        (self.0 - other.0) as f64 / NS_PER_S as f64
    }

    /// Parse RFC 3339, accepting only UTC (`Z`, `+00:00` or `-00:00`).
    pub fn parse(text: &str) -> Result<UtcNs, TimeError> {
        let dt = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| TimeError::Syntax(text.to_string()))?;
        if dt.offset().whole_seconds() != 0 {
            return Err(TimeError::NotUtc {
                text: text.to_string(),
                offset: dt.offset().to_string(),
            });
        }
        let ns = dt.unix_timestamp_nanos();
        i64::try_from(ns)
            .map(UtcNs)
            .map_err(|_| TimeError::Range(text.to_string()))
    }

    /// The current system time.
    pub fn now() -> UtcNs {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UtcNs(d.as_nanos() as i64)
    }
}

impl fmt::Display for UtcNs {
    /// RFC 3339 in UTC with the fewest fractional digits (0 to 9) that
    /// represent the instant exactly: `2022-02-08T22:05:13.5Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(NS_PER_S);
        let frac = self.0.rem_euclid(NS_PER_S);
        let dt = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        if frac != 0 {
            let digits = format!("{frac:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl FromStr for UtcNs {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UtcNs::parse(s)
    }
}

impl Serialize for UtcNs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcNs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UtcNs::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_fewest_digits_and_round_trips() {
        for text in [
            "2022-02-08T22:05:00Z",
            "2022-02-08T22:05:13.5Z",
            "2022-02-08T22:05:13.123456789Z",
            "1969-12-31T23:59:59.999999999Z",
        ] {
            let t = UtcNs::parse(text).expect("valid");
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn epoch_is_zero_and_known_instant_matches_posix_seconds() {
        assert_eq!(UtcNs::parse("1970-01-01T00:00:00Z"), Ok(UtcNs(0)));
        // `date -u -d 2018-12-19T02:26:57Z +%s` = 1545186417
        assert_eq!(
            UtcNs::parse("2018-12-19T02:26:57Z"),
            Ok(UtcNs::from_secs(1_545_186_417))
        );
    }

    #[test]
    fn non_utc_offset_is_refused_with_the_offset_named() {
        let err = UtcNs::parse("2022-02-08T22:05:00+02:00").unwrap_err();
        assert!(err.to_string().contains("+02:00"), "{err}");
        assert!(UtcNs::parse("2022-02-08T22:05:00+00:00").is_ok());
        assert!(matches!(
            UtcNs::parse("2022-02-08 22:05"),
            Err(TimeError::Syntax(_))
        ));
    }

    #[test]
    fn sample_index_maps_to_utc_without_drift_over_24_hours() {
        let t0 = UtcNs::from_secs(1_600_000_000);
        // 24 h at 48 kHz lands exactly on the second.
        assert_eq!(
            t0.at_sample(48_000 * 86_400, 48_000),
            UtcNs::from_secs(1_600_086_400)
        );
        // 44.1 kHz: sample 1 is 22675.7 ns -> rounded to 22676 ns.
        assert_eq!(t0.at_sample(1, 44_100).0 - t0.0, 22_676);
        // and one day later it is still exact.
        assert_eq!(
            t0.at_sample(44_100 * 86_400 + 1, 44_100).0 - t0.0,
            86_400 * NS_PER_S + 22_676
        );
    }
}
