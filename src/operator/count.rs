//! `type: count` — counts records per key in tumbling or hopping event-time windows.
//!
//! A record at time `t` counts in every window `[start, start + size)` holding `t`, where
//! window starts are multiples of `advance`. A window takes records until stream time passes
//! its end plus `grace`; then it closes: with `emit: final` its count is emitted once, and its
//! state is deleted either way. Records for windows already closed are late: they change
//! nothing and are counted in [`Count::late`]. Counts live in a window store keyed by the
//! record key's binary encoding and the window start.

use super::{Context, OperatorError, Record};
use crate::spec::{Emit, WindowSpec};
use crate::value::Value;

/// Windowed counts per key.
pub struct Count {
    name: String,
    store: usize,
    window: WindowSpec,
    emit: Emit,
    /// Windows starting at or before this have been closed.
    closed_through: i64,
    late: u64,
    key: Vec<u8>,
}

impl Count {
    /// A count named `name` over `window`, keeping counts in window store `store`.
    pub fn new(name: String, store: usize, window: WindowSpec, emit: Emit) -> Self {
        Count { name, store, window, emit, closed_through: i64::MIN, late: 0, key: Vec::new() }
    }

    /// Records that arrived after their windows closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The output record of a window's count.
    fn output(&self, key: Value, start: i64, count: u64, timestamp: i64) -> Record {
        let value = Value::from([
            ("window_start", Value::Int(start)),
            ("window_end", Value::Int(start.saturating_add(self.window.size_ms))),
            ("count", Value::Int(count as i64)),
        ]);
        Record { key, value, timestamp }
    }

    /// Whether the window starting at `start` has closed at stream time `now`.
    fn is_closed(&self, start: i64, now: i64) -> bool {
        start.saturating_add(self.window.size_ms).saturating_add(self.window.grace_ms) <= now
    }

    /// Counts `record` in each window that holds it.
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let WindowSpec { size_ms, advance_ms, .. } = self.window;
        let t = record.timestamp;
        self.key.clear();
        record.key.encode(&mut self.key);
        let mut start = t.div_euclid(advance_ms) * advance_ms;
        let mut counted = false;
        while start > t.saturating_sub(size_ms) {
            if !self.is_closed(start, ctx.stream_time) {
                let store = ctx.stores.window(self.store);
                let stored =
                    store.get(&self.key, start).map_err(OperatorError::state(&self.name))?;
                let count =
                    stored.and_then(|bytes| bytes.try_into().ok()).map_or(0, u64::from_le_bytes)
                        + 1;
                store.put(&self.key, start, &count.to_le_bytes());
                if self.emit == Emit::Updates {
                    out.push(self.output(record.key.clone(), start, count, t));
                }
                counted = true;
            }
            start -= advance_ms;
        }
        if !counted {
            self.late += 1;
        }
        Ok(())
    }

    /// Closes the windows stream time has passed: emits their final counts (with
    /// `emit: final`) and deletes them.
    pub fn on_stream_time(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let WindowSpec { size_ms, advance_ms, grace_ms } = self.window;
        // The last window start that is closed now; starts are multiples of advance.
        let through = ctx.stream_time.saturating_sub(size_ms).saturating_sub(grace_ms);
        let through = through.div_euclid(advance_ms) * advance_ms;
        if through <= self.closed_through {
            return Ok(());
        }
        let store = ctx.stores.window(self.store);
        let closed =
            store.fetch_all(i64::MIN, through).map_err(OperatorError::state(&self.name))?;
        for (key_bytes, start, count) in closed {
            store.delete(&key_bytes, start);
            if self.emit == Emit::Final {
                let key =
                    Value::from_bytes(&key_bytes).map_err(OperatorError::corrupt(&self.name))?;
                let count = count.try_into().map_or(0, u64::from_le_bytes);
                out.push(self.output(key, start, count, start + size_ms - 1));
            }
        }
        self.closed_through = through;
        Ok(())
    }
}
