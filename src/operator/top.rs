//! `type: top` — the `n` items with the highest score per window of a `count`.
//!
//! The plan routes a count's output through a repartition keyed by window start (keeping the
//! counted key as the field `item`), so every count of one window reaches one task whatever
//! partition counted it. Per open window the task keeps the current top list (item, score) in
//! a window store. An arriving count replaces its item's score or enters the list when it
//! beats the last entry. Scores of counts only grow, so keeping `n` entries is exact for
//! counts and distinct counts; a sum that can decrease may leave an item out that a full
//! ranking would re-admit. Ties are broken by the item, ascending (numbers by value, text by
//! its characters), so the list is the same on every run and every instance.
//!
//! With `emit: final` a window's list is emitted once stream time passes the window's end plus
//! `grace`; with `emit: updates`, whenever it changes. Counts for a closed window are late:
//! counted, and otherwise ignored.

use std::cmp::Ordering;

use super::{Context, OperatorError, Record};
use crate::spec::Emit;
use crate::value::{DecodeError, Value};

/// Top items per window.
pub struct Top {
    name: String,
    store: usize,
    n: usize,
    by: String,
    emit: Emit,
    size_ms: i64,
    grace_ms: i64,
    /// Windows starting at or before this have been closed.
    closed_through: i64,
    late: u64,
}

/// One ranked entry: the item and its score.
type Entry = (Value, Value);

impl Top {
    /// A top named `name` keeping `n` items ranked by field `by` of windows `size_ms` long, in
    /// window store `store`.
    pub fn new(
        name: String,
        store: usize,
        (n, by): (usize, String),
        emit: Emit,
        (size_ms, grace_ms): (i64, i64),
    ) -> Self {
        Top { name, store, n, by, emit, size_ms, grace_ms, closed_through: i64::MIN, late: 0 }
    }

    /// Counts that arrived after their window's list had closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Ranks one count record (value: `window_start`, `item`, the score field).
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let Some(start) = record.value.get("window_start").and_then(Value::as_i64) else {
            return Ok(());
        };
        if start.saturating_add(self.size_ms).saturating_add(self.grace_ms) <= ctx.stream_time {
            self.late += 1;
            return Ok(());
        }
        let item = record.value.get("item").cloned().unwrap_or(Value::Null);
        let score = record.value.get(&self.by).cloned().unwrap_or(Value::Null);
        let store = ctx.stores.window(self.store);
        let stored = store.get(&[], start).map_err(OperatorError::state(&self.name))?;
        let mut list = match stored {
            Some(bytes) => decode(&bytes).map_err(OperatorError::corrupt(&self.name))?,
            None => Vec::new(),
        };
        let before = list.clone();
        list.retain(|(listed, _)| *listed != item);
        list.push((item, score));
        list.sort_by(rank);
        list.truncate(self.n);
        if list == before {
            return Ok(());
        }
        store.put(&[], start, &encode(&list));
        if self.emit == Emit::Updates {
            out.push(self.output(start, list, record.timestamp));
        }
        Ok(())
    }

    /// Emits (with `emit: final`) and forgets the lists of windows stream time has closed.
    pub fn on_stream_time(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let through = ctx.stream_time.saturating_sub(self.size_ms).saturating_sub(self.grace_ms);
        if through <= self.closed_through {
            return Ok(());
        }
        let store = ctx.stores.window(self.store);
        // A window closes once start + size + grace <= stream time.
        let closed =
            store.fetch_all(i64::MIN, through).map_err(OperatorError::state(&self.name))?;
        for (key, start, bytes) in closed {
            store.delete(&key, start);
            if self.emit == Emit::Final {
                let list = decode(&bytes).map_err(OperatorError::corrupt(&self.name))?;
                out.push(self.output(start, list, start + self.size_ms - 1));
            }
        }
        self.closed_through = through;
        Ok(())
    }

    /// The output record of a window's list, keyed by the window start.
    fn output(&self, start: i64, list: Vec<Entry>, timestamp: i64) -> Record {
        let items = list
            .into_iter()
            .map(|(item, score)| Value::from([("item", item), (self.by.as_str(), score)]))
            .collect();
        let value = Value::from([
            ("window_start", Value::Int(start)),
            ("window_end", Value::Int(start + self.size_ms)),
            ("items", Value::Array(items)),
        ]);
        Record { key: Value::Int(start), value, timestamp }
    }
}

/// Higher scores first; equal scores by item, ascending.
fn rank(a: &Entry, b: &Entry) -> Ordering {
    order(&b.1, &a.1).then_with(|| order(&a.0, &b.0))
}

/// A total order on values: numbers by value, text by characters, otherwise by encoding.
pub(crate) fn order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).total_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.total_cmp(&(*y as f64)),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => a.to_bytes().cmp(&b.to_bytes()),
    }
}

fn encode(list: &[Entry]) -> Vec<u8> {
    let pairs = list.iter().map(|(item, score)| Value::Array(vec![item.clone(), score.clone()]));
    Value::Array(pairs.collect()).to_bytes()
}

fn decode(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let Value::Array(pairs) = Value::from_bytes(bytes)? else {
        return Err(DecodeError::new("a top list is not a list"));
    };
    pairs
        .into_iter()
        .map(|pair| match pair {
            Value::Array(mut pair) if pair.len() == 2 => {
                let score = pair.pop().unwrap_or_default();
                Ok((pair.pop().unwrap_or_default(), score))
            }
            _ => Err(DecodeError::new("a top entry is not an (item, score) pair")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::testkit::{TopologyDriver, driver_for};
    use crate::value::Value;

    fn ranking(n: i64, emit: &str) -> TopologyDriver {
        driver_for(&format!(
            "application_id: t
sources: {{ views: {{ topic: views, format: json }} }}
operators:
  counts: {{ type: count, input: views, window: {{ size: 1m }} }}
  top_pages: {{ type: top, input: counts, n: {n}, emit: {emit} }}
sinks:
  out: {{ input: top_pages, topic: out }}
"
        ))
    }

    fn view(driver: &mut TopologyDriver, page: &str, ts: i64) {
        driver.pipe("views", &Value::from(page), &Value::from([("x", Value::Int(1))]), ts).unwrap();
    }

    /// Each output list as "page:count" strings.
    fn lists(driver: &mut TopologyDriver) -> Vec<(i64, Vec<String>)> {
        let show = |item: &Value| {
            let page = item.get("item").and_then(Value::as_str).unwrap_or_default().to_owned();
            format!("{page}:{}", item.get("count").and_then(Value::as_i64).unwrap_or(-1))
        };
        driver
            .read_output("out")
            .unwrap()
            .into_iter()
            .map(|r| {
                let start = r.value.get("window_start").and_then(Value::as_i64).unwrap_or(-1);
                let Some(Value::Array(items)) = r.value.get("items") else { panic!("no items") };
                (start, items.iter().map(show).collect())
            })
            .collect()
    }

    #[test]
    fn ties_rank_by_item_and_the_list_keeps_n() {
        let mut d = ranking(3, "final");
        for (page, times) in [("/d", 2), ("/b", 2), ("/a", 1), ("/c", 2), ("/e", 3)] {
            for i in 0..times {
                view(&mut d, page, 1_000 + i);
            }
        }
        view(&mut d, "/z", 61_000);
        d.advance_stream_time(10 * 60_000).unwrap();
        assert_eq!(
            lists(&mut d),
            vec![
                (0, vec!["/e:3".into(), "/b:2".into(), "/c:2".into()]),
                (60_000, vec!["/z:1".into()])
            ]
        );
    }

    #[test]
    fn the_same_input_in_another_order_gives_the_same_list() {
        let mut first = ranking(2, "final");
        let mut second = ranking(2, "final");
        for page in ["/x", "/y", "/w", "/y", "/x", "/w"] {
            view(&mut first, page, 1_000);
        }
        for page in ["/w", "/w", "/y", "/x", "/y", "/x"] {
            view(&mut second, page, 1_000);
        }
        for d in [&mut first, &mut second] {
            d.advance_stream_time(10 * 60_000).unwrap();
        }
        let expected = vec![(0, vec!["/w:2".to_owned(), "/x:2".to_owned()])];
        assert_eq!(lists(&mut first), expected);
        assert_eq!(lists(&mut second), expected);
    }

    #[test]
    fn with_updates_a_list_is_emitted_when_it_changes() {
        // Counts emit updates, so top sees every new count; its list changes with each.
        let mut d = driver_for(
            "application_id: t
sources: { views: { topic: views, format: json } }
operators:
  counts: { type: count, input: views, window: { size: 1m }, emit: updates }
  top_pages: { type: top, input: counts, n: 1, emit: updates }
sinks:
  out: { input: top_pages, topic: out }
",
        );
        view(&mut d, "/a", 1_000);
        view(&mut d, "/b", 2_000); // /b:1 ties /a:1 and loses on the item: no change
        view(&mut d, "/b", 3_000); // /b:2 takes the lead
        assert_eq!(lists(&mut d), vec![(0, vec!["/a:1".into()]), (0, vec!["/b:2".into()])]);
    }
}
