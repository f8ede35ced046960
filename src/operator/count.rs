//! `type: count` — counts, sums and distinct counts per key in event-time windows.
//!
//! **Tumbling and hopping windows.** A record at time `t` counts in every window
//! `[start, start + size)` holding `t`, where window starts are multiples of `advance`. A
//! window takes records until stream time passes its end plus `grace`; then it closes: with
//! `emit: final` its aggregate is emitted once, and its state is deleted either way. The
//! aggregate of a (key, window) lives in the window store as fixed 8-byte slots: the count, one
//! slot per sum (an `i64`, or an `f64` for a float sum) and one per distinct count. A distinct
//! count also keeps each value seen, per window, in a second window store (key: the record key,
//! the distinct count's index and the value), so it is exact.
//!
//! **Sliding windows** are rolling counters: the aggregate of a key's records in the `size` up
//! to stream time, emitted on every record of the key and again when records leave the window.
//! Records are bucketed at `size / 3600` (the window store, one entry per key and bucket) and
//! the key's running total is kept in a key-value store; as stream time passes a bucket's end
//! plus `size`, the bucket is subtracted and deleted. A record is in the window when its time
//! is after `window_start` and at most `window_end` (stream time), to the bucket resolution.
//!
//! Records for windows already closed are late: they change nothing, are counted
//! ([`Count::late`]) and go to the operator's late output.

use super::{Context, OperatorError, Record, eval};
use crate::expr::Expr;
use crate::spec::{Emit, WindowKind, WindowSpec};
use crate::value::{DecodeError, Value};

/// One aggregated number: a count or integer sum, or a float sum.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Int(i64),
    Float(f64),
}

/// Windowed aggregates per key.
pub struct Count {
    name: String,
    store: usize,
    aux_store: Option<usize>,
    window: WindowSpec,
    emit: Emit,
    sums: Vec<(String, Expr)>,
    /// Per sum: whether it adds floats.
    float_sums: Vec<bool>,
    distinct: Vec<(String, Expr)>,
    /// Windows (or sliding buckets) starting at or before this have been closed.
    closed_through: i64,
    late: u64,
    /// Reused buffers: the key's encoding, a record's sum terms, a distinct member's key, an
    /// aggregate's encoding.
    key: Vec<u8>,
    terms: Vec<Slot>,
    member: Vec<u8>,
    bytes: Vec<u8>,
}

impl Count {
    /// A count named `name` over `window`, aggregating in window store `store` (and, for
    /// distinct counts or a sliding window, `aux_store`).
    pub fn new(
        name: String,
        (store, aux_store): (usize, Option<usize>),
        window: WindowSpec,
        emit: Emit,
        sums: Vec<(String, Expr)>,
        distinct: Vec<(String, Expr)>,
    ) -> Self {
        let float_sums =
            sums.iter().map(|(_, expr)| *expr.output_type().non_null() != crate::types::Type::Int);
        Count {
            name,
            store,
            aux_store,
            window,
            emit,
            float_sums: float_sums.collect(),
            sums,
            distinct,
            closed_through: i64::MIN,
            late: 0,
            key: Vec::new(),
            terms: Vec::new(),
            member: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Records that arrived after their windows closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The slots of an empty aggregate: count, sums, distinct counts.
    fn empty(&self) -> Vec<Slot> {
        let mut slots = vec![Slot::Int(0)];
        slots.extend(
            self.float_sums.iter().map(|&f| if f { Slot::Float(0.0) } else { Slot::Int(0) }),
        );
        slots.extend(self.distinct.iter().map(|_| Slot::Int(0)));
        slots
    }

    /// Decodes stored slots (or an empty aggregate when nothing is stored).
    fn decode(&self, stored: Option<Vec<u8>>) -> Result<Vec<Slot>, OperatorError> {
        let mut slots = self.empty();
        let Some(bytes) = stored else { return Ok(slots) };
        if bytes.len() != slots.len() * 8 {
            return Err(OperatorError::corrupt(&self.name)(DecodeError::new(
                "window aggregate has the wrong length",
            )));
        }
        for (slot, chunk) in slots.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut raw = [0; 8];
            raw.copy_from_slice(chunk);
            *slot = match slot {
                Slot::Int(_) => Slot::Int(i64::from_le_bytes(raw)),
                Slot::Float(_) => Slot::Float(f64::from_le_bytes(raw)),
            };
        }
        Ok(slots)
    }

    /// Lays `slots` out in `bytes` (replacing what it held), 8 bytes each.
    fn encode(slots: &[Slot], bytes: &mut Vec<u8>) {
        bytes.clear();
        for slot in slots {
            match slot {
                Slot::Int(n) => bytes.extend_from_slice(&n.to_le_bytes()),
                Slot::Float(x) => bytes.extend_from_slice(&x.to_le_bytes()),
            }
        }
    }

    /// Adds (`sign` 1) or subtracts (`sign` -1) `terms` (count and sums) into `slots`.
    fn add(slots: &mut [Slot], terms: &[Slot], sign: i64) {
        for (slot, term) in slots.iter_mut().zip(terms) {
            *slot = match (*slot, *term) {
                (Slot::Int(a), Slot::Int(b)) => Slot::Int(a.saturating_add(sign * b)),
                (Slot::Float(a), Slot::Float(b)) => Slot::Float(a + sign as f64 * b),
                (Slot::Float(a), Slot::Int(b)) => Slot::Float(a + (sign * b) as f64),
                (Slot::Int(a), Slot::Float(b)) => Slot::Float(a as f64 + sign as f64 * b),
            };
        }
    }

    /// The output record of an aggregate.
    fn output(&self, key: Value, (start, end): (i64, i64), slots: &[Slot], at: i64) -> Record {
        let number = |slot: &Slot| match *slot {
            Slot::Int(n) => Value::Int(n),
            Slot::Float(x) => Value::Float(x),
        };
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("window_start".to_owned(), Value::Int(start));
        fields.insert("window_end".to_owned(), Value::Int(end));
        fields.insert("count".to_owned(), number(&slots[0]));
        let names = self.sums.iter().chain(&self.distinct).map(|(name, _)| name);
        for (name, slot) in names.zip(&slots[1..]) {
            fields.insert(name.clone(), number(slot));
        }
        Record { key, value: Value::Map(fields), timestamp: at }
    }

    /// Whether the window starting at `start` has closed at stream time `now`.
    fn is_closed(&self, start: i64, now: i64) -> bool {
        start.saturating_add(self.window.size_ms).saturating_add(self.window.grace_ms) <= now
    }

    /// The record's count and sum terms, into `self.terms`.
    fn terms(&mut self, record: &Record) -> Result<(), OperatorError> {
        self.terms.clear();
        self.terms.push(Slot::Int(1));
        for ((_, expr), &float) in self.sums.iter().zip(&self.float_sums) {
            let term = match eval(expr, record).map_err(OperatorError::bad_record(&self.name))? {
                Value::Int(n) if float => Slot::Float(n as f64),
                Value::Int(n) => Slot::Int(n),
                Value::Float(x) => Slot::Float(x),
                // Null (and anything the type check let through as unknown) adds nothing.
                _ if float => Slot::Float(0.0),
                _ => Slot::Int(0),
            };
            self.terms.push(term);
        }
        Ok(())
    }

    /// Aggregates `record` into each window that holds it.
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
        late: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        self.key.clear();
        record.key.encode(&mut self.key);
        self.terms(&record)?;
        if self.window.kind == WindowKind::Sliding {
            return self.slide(record, ctx, out, late);
        }
        let WindowSpec { size_ms, advance_ms, .. } = self.window;
        let t = record.timestamp;
        // Distinct members of this record, evaluated once for all its windows.
        let mut members = Vec::with_capacity(self.distinct.len());
        for (_, expr) in &self.distinct {
            members.push(eval(expr, &record).map_err(OperatorError::bad_record(&self.name))?);
        }
        let mut start = t.saturating_sub(t.rem_euclid(advance_ms));
        let mut counted = false;
        while start > t.saturating_sub(size_ms) {
            if !self.is_closed(start, ctx.stream_time) {
                let stored = ctx
                    .stores
                    .window(self.store)
                    .get(&self.key, start)
                    .map_err(OperatorError::state(&self.name))?;
                let mut slots = self.decode(stored)?;
                Self::add(&mut slots, &self.terms, 1);
                let first_distinct = 1 + self.sums.len();
                for (index, member) in members.iter().enumerate() {
                    if member.is_null() || !self.first_sighting(ctx, index, member, start)? {
                        continue;
                    }
                    Self::add(&mut slots[first_distinct + index..], &[Slot::Int(1)], 1);
                }
                Self::encode(&slots, &mut self.bytes);
                ctx.stores.window(self.store).put(&self.key, start, &self.bytes);
                if self.emit == Emit::Updates {
                    out.push(self.output(record.key.clone(), (start, start + size_ms), &slots, t));
                }
                counted = true;
            }
            if start == i64::MIN {
                break;
            }
            start = start.saturating_sub(advance_ms);
        }
        if !counted {
            self.late += 1;
            late.push(record);
        }
        Ok(())
    }

    /// Whether `member` is new for distinct count `index` in the window at `start` (and
    /// remembers it).
    fn first_sighting(
        &mut self,
        ctx: &mut Context<'_>,
        index: usize,
        member: &Value,
        start: i64,
    ) -> Result<bool, OperatorError> {
        let Some(aux) = self.aux_store else { return Ok(false) };
        self.member.clear();
        self.member.extend_from_slice(&self.key);
        self.member.push(index as u8);
        member.encode(&mut self.member);
        let store = ctx.stores.window(aux);
        let seen = store.get(&self.member, start).map_err(OperatorError::state(&self.name))?;
        if seen.is_none() {
            store.put(&self.member, start, &[]);
        }
        Ok(seen.is_none())
    }

    /// Adds `record` to its key's sliding window.
    fn slide(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
        late: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let (size, resolution, now) =
            (self.window.size_ms, self.window.advance_ms, ctx.stream_time);
        let t = record.timestamp;
        if t <= now.saturating_sub(size) {
            self.late += 1;
            late.push(record);
            return Ok(());
        }
        let Some(totals) = self.aux_store else { return Ok(()) };
        let bucket = t.saturating_sub(t.rem_euclid(resolution));
        let store = ctx.stores.window(self.store);
        let stored = store.get(&self.key, bucket).map_err(OperatorError::state(&self.name))?;
        let mut slots = self.decode(stored)?;
        Self::add(&mut slots, &self.terms, 1);
        Self::encode(&slots, &mut self.bytes);
        store.put(&self.key, bucket, &self.bytes);
        let kv = ctx.stores.kv(totals);
        let stored = kv.get(&self.key).map_err(OperatorError::state(&self.name))?;
        let mut total = self.decode(stored)?;
        Self::add(&mut total, &self.terms, 1);
        Self::encode(&total, &mut self.bytes);
        kv.put(&self.key, &self.bytes);
        out.push(self.output(record.key, (now - size, now), &total, t));
        Ok(())
    }

    /// Closes the windows stream time has passed: emits their final aggregates (with
    /// `emit: final`) and deletes them; for a sliding window, subtracts the buckets that left
    /// it.
    pub fn on_stream_time(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let WindowSpec { kind, size_ms, advance_ms, grace_ms } = self.window;
        let now = ctx.stream_time;
        // The last window start (or bucket) that is closed now: starts are multiples of advance.
        let through = match kind {
            WindowKind::Sliding => now.saturating_sub(size_ms).saturating_sub(advance_ms - 1),
            _ => now.saturating_sub(size_ms).saturating_sub(grace_ms),
        };
        let through = through.saturating_sub(through.rem_euclid(advance_ms));
        if through <= self.closed_through {
            return Ok(());
        }
        let closed = ctx
            .stores
            .window(self.store)
            .fetch_all(i64::MIN, through)
            .map_err(OperatorError::state(&self.name))?;
        if kind == WindowKind::Sliding {
            self.expire(ctx, closed, out)?;
        } else {
            for (key_bytes, start, stored) in closed {
                ctx.stores.window(self.store).delete(&key_bytes, start);
                if self.emit == Emit::Final {
                    let key = Value::from_bytes(&key_bytes)
                        .map_err(OperatorError::corrupt(&self.name))?;
                    let slots = self.decode(Some(stored))?;
                    out.push(self.output(
                        key,
                        (start, start + size_ms),
                        &slots,
                        start + size_ms - 1,
                    ));
                }
            }
            if let Some(aux) = self.aux_store {
                let store = ctx.stores.window(aux);
                let seen =
                    store.fetch_all(i64::MIN, through).map_err(OperatorError::state(&self.name))?;
                for (member, start, _) in seen {
                    store.delete(&member, start);
                }
            }
        }
        self.closed_through = through;
        Ok(())
    }

    /// Subtracts sliding buckets that left the window from their keys' totals, emitting each
    /// changed total once.
    fn expire(
        &mut self,
        ctx: &mut Context<'_>,
        buckets: Vec<crate::state::KeyedWindow>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let Some(totals) = self.aux_store else { return Ok(()) };
        let mut changed: Vec<Vec<u8>> = Vec::new();
        for (key, bucket, stored) in buckets {
            ctx.stores.window(self.store).delete(&key, bucket);
            let slots = self.decode(Some(stored))?;
            let kv = ctx.stores.kv(totals);
            let stored = kv.get(&key).map_err(OperatorError::state(&self.name))?;
            let mut total = self.decode(stored)?;
            Self::add(&mut total, &slots, -1);
            if total[0] == Slot::Int(0) {
                kv.delete(&key);
            } else {
                Self::encode(&total, &mut self.bytes);
                kv.put(&key, &self.bytes);
            }
            changed.push(key);
        }
        changed.sort_unstable();
        changed.dedup();
        let (size, now) = (self.window.size_ms, ctx.stream_time);
        for key_bytes in changed {
            let stored =
                ctx.stores.kv(totals).get(&key_bytes).map_err(OperatorError::state(&self.name))?;
            let total = self.decode(stored)?;
            let key = Value::from_bytes(&key_bytes).map_err(OperatorError::corrupt(&self.name))?;
            out.push(self.output(key, (now - size, now), &total, now));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::{TopologyDriver, driver_for};
    use crate::value::Value;

    /// A JSON topology counting `clicks` by key with `window` and `extra` settings.
    fn counting(window: &str, extra: &str) -> TopologyDriver {
        driver_for(&format!(
            "application_id: t
sources: {{ clicks: {{ topic: clicks, format: json }} }}
operators:
  counts: {{ type: count, input: clicks, window: {window}, {extra} }}
sinks:
  out: {{ input: counts, topic: out }}
  late: {{ input: counts.late, topic: late }}
"
        ))
    }

    fn send(driver: &mut TopologyDriver, key: &str, ts: i64, value: Value) {
        driver.pipe("clicks", &Value::from(key), &value, ts).expect("piped");
    }

    fn click(user: &str, cents: Option<i64>) -> Value {
        Value::from([
            ("user", Value::from(user)),
            ("cents", cents.map_or(Value::Null, Value::Int)),
            ("weight", Value::Float(0.5)),
        ])
    }

    /// (key, window_start, field) of each output record.
    fn fields(driver: &mut TopologyDriver, sink: &str, field: &str) -> Vec<(String, i64, Value)> {
        driver
            .read_output(sink)
            .expect("output")
            .into_iter()
            .map(|r| {
                let start = r.value.get("window_start").and_then(Value::as_i64).unwrap_or(-1);
                let key = r.key.as_str().unwrap_or_default().to_owned();
                (key, start, r.value.get(field).cloned().unwrap_or(Value::Null))
            })
            .collect()
    }

    #[test]
    fn a_window_holds_its_start_but_not_its_end_and_closes_at_end_plus_grace() {
        let mut d = counting("{ size: 1m, grace: 5s }", "emit: final");
        send(&mut d, "a", 0, click("u1", None));
        send(&mut d, "a", 59_999, click("u1", None));
        send(&mut d, "a", 60_000, click("u1", None));
        // Stream time 64 999: minute 0 is still open (it closes at 65 000).
        send(&mut d, "b", 64_999, click("u1", None));
        assert_eq!(fields(&mut d, "out", "count"), vec![]);
        send(&mut d, "a", 30_000, click("u1", None)); // within grace: counted
        send(&mut d, "b", 65_000, click("u1", None));
        assert_eq!(fields(&mut d, "out", "count"), vec![("a".into(), 0, Value::Int(3))]);
        // Minute 0 is closed: late, routed to the late output unchanged.
        send(&mut d, "a", 10_000, click("u9", None));
        let late = d.read_output("late").expect("late");
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].value.get("user"), Some(&Value::from("u9")));
        d.advance_stream_time(200_000).expect("advanced");
        assert_eq!(
            fields(&mut d, "out", "count"),
            vec![("a".into(), 60_000, Value::Int(1)), ("b".into(), 60_000, Value::Int(2))]
        );
    }

    #[test]
    fn sums_skip_nulls_and_distinct_counts_are_exact_per_window() {
        let mut d = counting(
            "{ size: 1m, advance: 30s }",
            "emit: final, sum: { cents: cents, weight: weight }, distinct: { users: user }",
        );
        send(&mut d, "a", 40_000, click("u1", Some(100)));
        send(&mut d, "a", 41_000, click("u1", None));
        send(&mut d, "a", 70_000, click("u2", Some(5)));
        d.advance_stream_time(1_000_000).expect("advanced");
        let out = d.read_output("out").expect("out");
        let row = |i: usize, f: &str| out[i].value.get(f).cloned().unwrap_or(Value::Null);
        // Windows holding 40 s: [0, 60 s) and [30 s, 90 s); 70 s: [30 s, 90 s) and [60 s, 120 s).
        assert_eq!(out.len(), 3);
        assert_eq!((row(0, "window_start"), row(0, "count")), (Value::Int(0), Value::Int(2)));
        // Schemaless (JSON) fields are summed as floats; a schema's int field sums as an int.
        assert_eq!((row(0, "cents"), row(0, "users")), (Value::Float(100.0), Value::Int(1)));
        assert_eq!(row(0, "weight"), Value::Float(1.0));
        assert_eq!((row(1, "window_start"), row(1, "count")), (Value::Int(30_000), Value::Int(3)));
        assert_eq!((row(1, "cents"), row(1, "users")), (Value::Float(105.0), Value::Int(2)));
        assert_eq!((row(2, "window_start"), row(2, "users")), (Value::Int(60_000), Value::Int(1)));
    }

    #[test]
    fn a_sliding_count_rises_with_records_and_falls_as_they_leave_the_window() {
        let mut d = counting("{ type: sliding, size: 1h }", "sum: { cents: cents }");
        let minute = 60_000;
        send(&mut d, "p", 10 * minute, click("u1", Some(10)));
        send(&mut d, "p", 40 * minute, click("u2", Some(20)));
        // Out of order but inside the hour: counted.
        send(&mut d, "p", 5 * minute, click("u3", Some(40)));
        assert_eq!(
            fields(&mut d, "out", "count"),
            vec![
                ("p".into(), 10 * minute - 60 * minute, Value::Int(1)),
                ("p".into(), 40 * minute - 60 * minute, Value::Int(2)),
                ("p".into(), 40 * minute - 60 * minute, Value::Int(3)),
            ]
        );
        // An hour after 00:05 and 00:10 (and their 1 s buckets), those views leave; the key's
        // total follows, once.
        d.advance_stream_time(71 * minute).expect("advanced");
        assert_eq!(
            fields(&mut d, "out", "cents"),
            vec![("p".into(), 11 * minute, Value::Float(20.0))]
        );
        // Older than the hour before stream time: late.
        send(&mut d, "p", 10 * minute, click("u4", Some(1)));
        assert_eq!(d.read_output("late").expect("late").len(), 1);
        // The last view leaves: the count drops to zero and the key's state is gone.
        d.advance_stream_time(101 * minute).expect("advanced");
        assert_eq!(fields(&mut d, "out", "count"), vec![("p".into(), 41 * minute, Value::Int(0))]);
    }
}
