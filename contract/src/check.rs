//! One small field checker for every validator of outside input (node and
//! aggregator configs, simulator specs): each refusal is a [`FieldError`]
//! that names the file, the dotted field and what was expected, and reads
//! `file: field `f`: expected X, got Y` (STYLE: errors name the
//! file/field and what was expected).
//!
//! [`Check`] answers with `Result`, so a validator stops at the first bad
//! field with `?`; [`Check::collect`] keeps going and gathers every error
//! where a caller wants them all at once.

use std::fmt::Display;
use std::time::Duration;

/// A refused field. The caller reports it and stops (a CLI exits
/// non-zero); the user fixes the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: field `{field}`: {message}")]
#[non_exhaustive]
pub struct FieldError {
    /// The file (or `<built-in>`, a preset name, ...).
    pub file: String,
    /// Dotted key, e.g. `mqtt.url` or `nodes[2].id`.
    pub field: String,
    /// What was expected (and what was given).
    pub message: String,
}

/// A checker for the fields of one file.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    file: &'a str,
    errors: Vec<FieldError>,
}

impl<'a> Check<'a> {
    /// A checker naming `file` in its errors.
    pub fn new(file: &'a str) -> Check<'a> {
        Check {
            file,
            errors: Vec::new(),
        }
    }

    /// The file named in errors.
    pub fn file(&self) -> &'a str {
        self.file
    }

    /// An error on `field` saying `message` (start it with "expected").
    pub fn err(&self, field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// `Err(err(field, message))` unless `ok`.
    pub fn ensure(
        &self,
        ok: bool,
        field: &str,
        message: impl Into<String>,
    ) -> Result<(), FieldError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(field, message))
        }
    }

    /// A finite number in `min..=max`.
    pub fn range(&self, field: &str, v: f64, min: f64, max: f64) -> Result<f64, FieldError> {
        if v.is_finite() && v >= min && v <= max {
            Ok(v)
        } else {
            Err(self.err(field, format!("expected a value in {min}..={max}, got {v}")))
        }
    }

    /// A finite number of seconds in `min..=max`, as a duration.
    pub fn secs(&self, field: &str, v: f64, min: f64, max: f64) -> Result<Duration, FieldError> {
        if v.is_finite() && v >= min && v <= max {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(self.err(field, format!("expected seconds in {min}..={max}, got {v}")))
        }
    }

    /// An integer (or any ordered value) in `min..=max`; `unit` follows the
    /// bounds in the message ("bytes", "Hz", or "").
    pub fn within<T: PartialOrd + Display + Copy>(
        &self,
        field: &str,
        v: T,
        min: T,
        max: T,
        unit: &str,
    ) -> Result<T, FieldError> {
        if v >= min && v <= max {
            Ok(v)
        } else {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            Err(self.err(field, format!("expected {min}..={max}{unit}, got {v}")))
        }
    }

    /// One of the named choices: the value of the matching name, else an
    /// error listing every name.
    pub fn one_of<T: Copy>(
        &self,
        field: &str,
        v: &str,
        choices: &[(&str, T)],
    ) -> Result<T, FieldError> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v) {
            return Ok(*t);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let list = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "nothing".to_string(),
        };
        Err(self.err(field, format!("expected {list}, got {v:?}")))
    }

    /// An identifier: 1..=64 characters of `[A-Za-z0-9_.-]` (node ids,
    /// sites, client ids: safe as a topic level and a file name).
    pub fn name(&self, field: &str, v: &str) -> Result<String, FieldError> {
        let ok = !v.is_empty()
            && v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(v.to_string())
        } else {
            Err(self.err(
                field,
                format!("expected 1..64 characters of [A-Za-z0-9_.-], got {v:?}"),
            ))
        }
    }

    /// The ids of a `nodes` list: each one non-empty MQTT topic level (no
    /// '/', '+', '#', nor any of `also_refused`), none twice; errors name
    /// `nodes[i].id`.
    pub fn node_ids<'n>(
        &self,
        ids: impl IntoIterator<Item = &'n str>,
        also_refused: &[char],
    ) -> Result<(), FieldError> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, id) in ids.into_iter().enumerate() {
            let field = format!("nodes[{i}].id");
            let bad = id.is_empty() || id.contains(['/', '+', '#']) || id.contains(also_refused);
            self.ensure(
                !bad,
                &field,
                format!("expected a non-empty id without '/', '+' or '#', got {id:?}"),
            )?;
            self.ensure(seen.insert(id), &field, format!("duplicate node id {id:?}"))?;
        }
        Ok(())
    }

    /// Keep going: remember the error of `r` (if any) and return its value.
    pub fn collect<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    /// Every error collected so far, in order; empty when all was well.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_the_field_and_what_was_expected() {
        let c = Check::new("node.toml");
        let e = c
            .range("position.lat", 91.0, -90.0, 90.0)
            .expect_err("out of range");
        assert_eq!(
            e.to_string(),
            "node.toml: field `position.lat`: expected a value in -90..=90, got 91"
        );
        assert!(c.range("x", f64::NAN, 0.0, 1.0).is_err());
        assert_eq!(c.range("x", 0.5, 0.0, 1.0), Ok(0.5));
        assert_eq!(c.secs("t", 2.0, 0.0, 3.0), Ok(Duration::from_secs(2)));
        assert!(c.secs("t", f64::INFINITY, 0.0, 3.0).is_err());
        assert_eq!(c.within("n", 5u64, 1, 10, "bytes"), Ok(5));
        assert_eq!(
            c.within("n", 0u64, 1, 10, "bytes")
                .expect_err("low")
                .message,
            "expected 1..=10 bytes, got 0"
        );
    }

    #[test]
    fn choices_and_names() {
        let c = Check::new("a.toml");
        let choices = [("wall", 1), ("nodes", 2)];
        assert_eq!(c.one_of("time.base", "nodes", &choices), Ok(2));
        let e = c.one_of("time.base", "sundial", &choices).expect_err("bad");
        assert_eq!(e.message, "expected \"wall\" or \"nodes\", got \"sundial\"");
        let three = [("a", 0), ("b", 1), ("c", 2)];
        let e = c.one_of("f", "d", &three).expect_err("bad");
        assert_eq!(e.message, "expected \"a\", \"b\" or \"c\", got \"d\"");
        assert_eq!(c.name("node_id", "pi-7.a_b"), Ok("pi-7.a_b".to_string()));
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(c.name("node_id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn collect_gathers_every_error_in_order() {
        let mut c = Check::new("s.toml");
        let a = c.range("a", 2.0, 0.0, 1.0);
        let b = c.range("b", 0.5, 0.0, 1.0);
        let z = c.ensure(false, "c", "expected c");
        assert_eq!(c.collect(a), None);
        assert_eq!(c.collect(b), Some(0.5));
        assert_eq!(c.collect(z), None);
        let errs = c.finish().expect_err("two errors");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "c"]);
        assert!(Check::new("ok").finish().is_ok());
    }
}
