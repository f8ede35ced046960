//! A path-tracking reader over parsed YAML, so that a topology file's problems are all found
//! in one pass, each with its YAML path and a hint.
//!
//! serde's derived deserializers stop at the first problem and cannot suggest the field that
//! was meant; this reader asks for each field by name, records what it asked for, and reports
//! everything else as an unknown field with a "did you mean" drawn from the fields it knows.

use std::cell::RefCell;

use serde_yaml_ng::{Mapping, Value as Yaml};

use super::Problem;
use crate::hint;

/// Every problem found while reading, in the order found.
#[derive(Default)]
pub(crate) struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    /// Records a problem at `path`.
    pub(crate) fn report(&self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.0.borrow_mut().push(Problem { path: path.to_owned(), message: message.into(), hint });
    }

    /// The problems, in the order found.
    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// One YAML node and where it is.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    pub(crate) path: &'a str,
    pub(crate) value: &'a Yaml,
    pub(crate) problems: &'a Problems,
}

/// The path of `key` inside `path`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

impl<'a> Node<'a> {
    /// Reports a problem at this node.
    pub(crate) fn report(&self, message: impl Into<String>, hint: Option<String>) {
        self.problems.report(self.path, message, hint);
    }

    /// The node as a mapping, reporting anything else.
    pub(crate) fn object(&self) -> Option<Obj<'a>> {
        match self.value {
            Yaml::Mapping(map) => Some(Obj {
                path: self.path.to_owned(),
                map,
                known: RefCell::new(Vec::new()),
                problems: self.problems,
            }),
            other => {
                self.report(format!("expected a mapping, found {}", kind(other)), None);
                None
            }
        }
    }

    /// The node as text; numbers and booleans are taken as written.
    pub(crate) fn string(&self) -> Option<String> {
        match self.value {
            Yaml::String(s) => Some(s.clone()),
            Yaml::Number(n) => Some(n.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            other => {
                self.report(format!("expected text, found {}", kind(other)), None);
                None
            }
        }
    }

    /// The node as a list, each item with its path.
    pub(crate) fn list(&self) -> Vec<(String, &'a Yaml)> {
        match self.value {
            Yaml::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{}[{i}]", self.path), item))
                .collect(),
            other => {
                self.report(format!("expected a list, found {}", kind(other)), None);
                Vec::new()
            }
        }
    }
}

/// A mapping being read field by field.
pub(crate) struct Obj<'a> {
    pub(crate) path: String,
    map: &'a Mapping,
    known: RefCell<Vec<&'static str>>,
    pub(crate) problems: &'a Problems,
}

impl<'a> Obj<'a> {
    /// Reports a problem at this mapping.
    pub(crate) fn report(&self, message: impl Into<String>, hint: Option<String>) {
        self.problems.report(&self.path, message, hint);
    }

    /// Field `key`, which this mapping may have.
    pub(crate) fn field(&self, key: &'static str) -> Option<Yaml> {
        self.known.borrow_mut().push(key);
        self.map.get(key).filter(|value| !value.is_null()).cloned()
    }

    /// Whether field `key` is written, even as null.
    pub(crate) fn present(&self, key: &'static str) -> bool {
        self.known.borrow_mut().push(key);
        self.map.contains_key(key)
    }

    /// Field `key` as a node, for reading structure inside it.
    pub(crate) fn with<T>(&self, key: &'static str, read: impl FnOnce(Node<'_>) -> T) -> Option<T> {
        let value = self.field(key)?;
        let path = join(&self.path, key);
        Some(read(Node { path: &path, value: &value, problems: self.problems }))
    }

    /// Field `key` that must be present.
    pub(crate) fn required<T>(
        &self,
        key: &'static str,
        read: impl FnOnce(Node<'_>) -> Option<T>,
    ) -> Option<T> {
        match self.with(key, read) {
            Some(value) => value,
            None => {
                self.report(format!("missing required field '{key}'"), None);
                None
            }
        }
    }

    /// Optional text field `key`.
    pub(crate) fn string(&self, key: &'static str) -> Option<String> {
        self.with(key, |node| node.string()).flatten()
    }

    /// Required text field `key`.
    pub(crate) fn required_string(&self, key: &'static str) -> Option<String> {
        self.required(key, |node| node.string())
    }

    /// Optional positive integer field `key`.
    pub(crate) fn positive(&self, key: &'static str) -> Option<i64> {
        self.with(key, |node| match node.value.as_i64() {
            Some(n) if n > 0 => Some(n),
            _ => {
                node.report(
                    format!("expected a positive whole number, found {}", show(node.value)),
                    None,
                );
                None
            }
        })
        .flatten()
    }

    /// Optional field `key` holding a number between 0 and 1.
    pub(crate) fn fraction(&self, key: &'static str) -> Option<f64> {
        self.with(key, |node| match node.value.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Some(x),
            _ => {
                node.report(
                    format!("expected a number from 0 to 1, found {}", show(node.value)),
                    None,
                );
                None
            }
        })
        .flatten()
    }

    /// Optional duration field `key` (`100ms`, `30s`, `5m`, `1h`, `1d`), in milliseconds.
    pub(crate) fn duration(&self, key: &'static str) -> Option<i64> {
        self.with(key, |node| {
            let text = node.string()?;
            match parse_duration(&text) {
                Ok(ms) => Some(ms),
                Err(why) => {
                    node.report(
                        format!("'{text}' is not a duration: {why}"),
                        Some("write a number and a unit: 250ms, 30s, 5m, 2h or 1d".to_owned()),
                    );
                    None
                }
            }
        })
        .flatten()
    }

    /// Optional field `key` naming one of `choices`.
    pub(crate) fn choice<T: Copy>(&self, key: &'static str, choices: &[(&str, T)]) -> Option<T> {
        self.with(key, |node| {
            let text = node.string()?;
            match choices.iter().find(|(name, _)| *name == text) {
                Some((_, choice)) => Some(*choice),
                None => {
                    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                    node.report(
                        format!(
                            "unknown value '{text}'{}",
                            hint::suggestion(&text, names.iter().copied())
                        ),
                        Some(format!("one of: {}", names.join(", "))),
                    );
                    None
                }
            }
        })
        .flatten()
    }

    /// Optional list of text `key`.
    pub(crate) fn strings(&self, key: &'static str) -> Vec<String> {
        self.with(key, |node| {
            node.list()
                .into_iter()
                .filter_map(|(path, item)| {
                    Node { path: &path, value: item, problems: self.problems }.string()
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Optional mapping `key` of names to text (e.g. output field to expression), in file order.
    pub(crate) fn string_map(&self, key: &'static str) -> Vec<(String, String)> {
        self.entries(key)
            .into_iter()
            .filter_map(|(name, path, value)| {
                let node = Node { path: &path, value: &value, problems: self.problems };
                node.string().map(|text| (name, text))
            })
            .collect()
    }

    /// Optional mapping `key` of named entries, in file order, each with its path.
    pub(crate) fn entries(&self, key: &'static str) -> Vec<(String, String, Yaml)> {
        let Some(value) = self.field(key) else { return Vec::new() };
        let path = join(&self.path, key);
        let Yaml::Mapping(map) = value else {
            self.problems.report(
                &path,
                format!("expected a mapping, found {}", kind(&value)),
                None,
            );
            return Vec::new();
        };
        map.into_iter()
            .filter_map(|(name, value)| match name {
                Yaml::String(name) => Some((name.clone(), join(&path, &name), value)),
                other => {
                    self.problems.report(
                        &path,
                        format!("a name must be text, found {}", show(&other)),
                        None,
                    );
                    None
                }
            })
            .collect()
    }

    /// Reports a problem at field `key` when `condition` holds.
    pub(crate) fn report_if(&self, condition: bool, key: &str, message: &str) {
        if condition {
            self.problems.report(&join(&self.path, key), message, None);
        }
    }

    /// Takes every field as known: for a mapping whose shape is unknown (after an error that
    /// has been reported), so its fields are not also reported as unknown.
    pub(crate) fn accept_rest(&self) {
        self.known.borrow_mut().push("*");
    }

    /// Reports every field this mapping has that was never asked for.
    pub(crate) fn finish(&self) {
        let mut known = self.known.borrow().clone();
        if known.contains(&"*") {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        known.retain(|key| seen.insert(*key));
        for key in self.map.keys() {
            let name = match key {
                Yaml::String(name) => name.clone(),
                other => show(other),
            };
            if !known.contains(&name.as_str()) {
                self.problems.report(
                    &join(&self.path, &name),
                    format!(
                        "unknown field '{name}'{}",
                        hint::suggestion(&name, known.iter().copied())
                    ),
                    Some(format!("fields here: {}", known.join(", "))),
                );
            }
        }
    }
}

/// The kind of a YAML node, for messages.
fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "text",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// A YAML scalar as written, for messages.
fn show(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => format!("'{s}'"),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => kind(other).to_owned(),
    }
}

/// Milliseconds in `text`: a whole number followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err("it does not start with a number".to_owned());
    }
    let amount: i64 = digits.parse().map_err(|_| "the number is too large".to_owned())?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err("it has no unit".to_owned()),
        other => return Err(format!("unknown unit '{other}'")),
    };
    amount.checked_mul(scale).ok_or_else(|| "it is too long".to_owned())
}

/// Milliseconds since the epoch in `text`: whole milliseconds, a time of day on 1970-01-01
/// (`00:10`, `01:02:03`, `00:00:01.250`, handy in tests), or an RFC 3339 UTC timestamp
/// (`2026-11-23T10:00:00Z`, `2026-11-23T10:00:00.5Z`).
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        format!(
            "'{text}' is not a timestamp: write milliseconds, HH:MM[:SS[.mmm]] or 2026-11-23T10:00:00Z"
        )
    };
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (Some(date), time.strip_suffix('Z').ok_or_else(bad)?),
        None => (None, text),
    };
    let days = match date {
        None => 0,
        Some(date) => {
            let parts: Vec<i64> =
                date.split('-').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
            let [year, month, day] = parts[..] else { return Err(bad()) };
            if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
                return Err(bad());
            }
            days_from_civil(year, month, day)
        }
    };
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let parts: Vec<i64> =
        clock.split(':').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
    let (h, m, s) = match parts[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return Err(bad()),
    };
    if m >= 60 || s >= 60 || h < 0 || m < 0 || s < 0 {
        return Err(bad());
    }
    let millis = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<i64>().map_err(|_| bad())? * 10_i64.pow(3 - f.len() as u32)
        }
        Some(_) => return Err(bad()),
    };
    Ok(days * 86_400_000 + ((h * 60 + m) * 60 + s) * 1_000 + millis)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("100ms"), Ok(100));
        assert_eq!(parse_duration("30m"), Ok(1_800_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("5"), Err("it has no unit".to_owned()));
        assert_eq!(parse_duration("5 parsecs"), Err("unknown unit 'parsecs'".to_owned()));
        assert_eq!(parse_duration("m"), Err("it does not start with a number".to_owned()));
    }

    #[test]
    fn timestamps_parse_in_three_forms() {
        assert_eq!(parse_timestamp("1500"), Ok(1500));
        assert_eq!(parse_timestamp("00:10"), Ok(600_000));
        assert_eq!(parse_timestamp("01:00:01.5"), Ok(3_601_500));
        assert_eq!(parse_timestamp("1970-01-02T00:00:00Z"), Ok(86_400_000));
        assert_eq!(parse_timestamp("2026-11-23T10:00:00Z"), Ok(1_795_428_000_000));
        assert!(parse_timestamp("10 o'clock").is_err());
        assert!(parse_timestamp("00:61").is_err());
    }
}
