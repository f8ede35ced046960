//! `type: sessionize` — session windows per key (the user) on event time.
//!
//! A session is a run of a key's events with no silence longer than `gap` between them. An
//! event at `t` joins every open session of its key with `start - gap <= t <= end + gap`; when
//! an out-of-order event bridges several sessions they merge into one, stored under the new
//! (start, end) and deleted under the old ones. A session closes when stream time reaches
//! `end + gap + grace`: with `emit: final` its record is emitted then, once; with
//! `emit: updates` every change emits the session's current record and closing only deletes.
//! An event whose session would already be closed is late: it changes nothing, is counted in
//! [`Sessionize::late`] and handed back unchanged so the runtime can route it to a sink.
//!
//! Sessions live in a session store keyed by the record key's binary encoding and the session's
//! (start, end); the value is a compact summary (see [`encode`]) from which the output record
//! is derived. Only event time is used, never the wall clock, so a replay after a crash emits
//! the same records, with the same session ids.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{Context, OperatorError, Record};
use crate::spec::Emit;
use crate::types::Type;
use crate::value::{DecodeError, Value, put_varint, take, varint};

/// How many distinct pages a session remembers exactly. Beyond this it keeps the smallest
/// page hashes only (a bottom-k sketch), which bounds a session's stored size (about 8 KiB)
/// and still estimates the distinct count within a few percent.
const PAGE_CAP: usize = 1000;

/// First byte of a stored session: the layout's version.
const VERSION: u8 = 1;

/// Flag bit of a stored session: more than [`PAGE_CAP`] distinct pages were seen.
const SATURATED: u8 = 1;

/// Session windows per key, with an inactivity gap and a grace period for late events.
pub struct Sessionize {
    name: String,
    store: usize,
    gap_ms: i64,
    grace_ms: i64,
    emit: Emit,
    page_field: String,
    late: u64,
    /// End times of the stored sessions this operator knows of, with how many sessions end
    /// then. The smallest tells [`Sessionize::on_stream_time`] whether anything can close
    /// without reading the store, which is called on almost every record.
    ends: BTreeMap<i64, u32>,
    /// How many sessions `ends` holds.
    open: i64,
    /// Whether `ends` covers every stored session. False until the first stream-time callback
    /// after start-up has read the store once (sessions written before a restart are unknown).
    complete: bool,
    /// How many times stream time made this operator read the store.
    sweeps: u64,
    /// Reused buffers: the record key's encoding, a session's encoding, page hashes.
    key: Vec<u8>,
    value: Vec<u8>,
    hashes: Vec<u64>,
}

impl Sessionize {
    /// A sessionizer named `name`, keeping sessions in session store `store`
    /// (`ctx.stores.session(store)`).
    ///
    /// A session ends after `gap_ms` of inactivity (must be positive; the planner checks) and
    /// takes late events for `grace_ms` more. `page_field` names the top-level string field of
    /// the value holding the page (e.g. `path`), for entry, exit and distinct pages.
    pub fn new(
        name: String,
        store: usize,
        gap_ms: i64,
        grace_ms: i64,
        emit: Emit,
        page_field: String,
    ) -> Self {
        Sessionize {
            name,
            store,
            gap_ms,
            grace_ms,
            emit,
            page_field,
            late: 0,
            ends: BTreeMap::new(),
            open: 0,
            complete: false,
            sweeps: 0,
            key: Vec::new(),
            value: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// Records that arrived after the session they belong to had closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Sessions currently open in this task's store that this operator knows of, for a metric.
    ///
    /// Exact once stream time has advanced after start-up (the first advance reads the store
    /// once); before that it counts only the sessions written since start-up, so after a
    /// restart it may be low until then.
    pub fn open_sessions(&self) -> i64 {
        self.open
    }

    /// The output value's fields in output order, for the planner's type checks.
    pub fn output_fields() -> Vec<(&'static str, Type)> {
        vec![
            ("session_id", Type::String),
            ("start", Type::Int),
            ("end", Type::Int),
            ("duration_ms", Type::Int),
            ("events", Type::Int),
            ("distinct_pages", Type::Int),
            ("entry_page", Type::String.nullable()),
            ("exit_page", Type::String.nullable()),
            ("bounce", Type::Bool),
        ]
    }

    /// Whether a session ending at `end` has closed at stream time `now`.
    fn is_closed(&self, end: i64, now: i64) -> bool {
        end.saturating_add(self.gap_ms).saturating_add(self.grace_ms) <= now
    }

    /// Notes a stored session ending at `end`.
    fn remember(&mut self, end: i64) {
        *self.ends.entry(end).or_insert(0) += 1;
        self.open += 1;
    }

    /// Notes that a session ending at `end` is no longer stored (if it was known).
    fn forget(&mut self, end: i64) {
        if let Entry::Occupied(mut entry) = self.ends.entry(end) {
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
            self.open -= 1;
        }
    }

    /// Adds `record` to its key's session, merging the sessions it bridges, or hands it back in
    /// `late` if that session would already be closed. With `emit: updates`, emits the
    /// session's new state.
    ///
    /// The event joins the key's open sessions with `start - gap <= t <= end + gap`. It is
    /// late when it joins none and `t + gap + grace <= stream time`: a session of its own
    /// would be closed already. An old event that falls within reach of a session still open
    /// is not late; it joins (and may extend the start of) that session. Sessions stream time
    /// has closed but [`Sessionize::on_stream_time`] has not deleted yet are never joined, so
    /// the result does not depend on when that callback runs.
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
        late: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let t = record.timestamp;
        let now = ctx.stream_time;
        self.key.clear();
        record.key.encode(&mut self.key);
        let store = ctx.stores.session(self.store);
        let mut found = store
            .find(&self.key, t.saturating_sub(self.gap_ms), t.saturating_add(self.gap_ms))
            .map_err(OperatorError::state(&self.name))?;
        found.retain(|&(_, end, _)| !self.is_closed(end, now));
        if found.is_empty() && self.is_closed(t, now) {
            self.late += 1;
            late.push(record);
            return Ok(());
        }

        let page = record.value.get(&self.page_field).and_then(Value::as_str);
        let (mut start, mut end, mut events, mut saturated) = (t, t, 1u64, false);
        // The sessions holding the earliest entry and the latest exit: (time, page).
        let mut first: Option<(i64, Option<&str>)> = None;
        let mut last: Option<(i64, Option<&str>)> = None;
        self.hashes.clear();
        self.hashes.extend(page.map(page_hash));
        for (session_start, session_end, bytes) in &found {
            let view = View::parse(bytes).map_err(OperatorError::corrupt(&self.name))?;
            events = events.saturating_add(view.events);
            saturated |= view.saturated;
            self.hashes.extend(view.hashes());
            start = start.min(*session_start);
            end = end.max(*session_end);
            if first.is_none_or(|(time, _)| *session_start < time) {
                first = Some((*session_start, view.entry));
            }
            if last.is_none_or(|(time, _)| *session_end >= time) {
                last = Some((*session_end, view.exit));
            }
        }
        // On equal times the entry stays with the event seen first (the stored one) and the
        // exit goes to the event seen last (this one), so replays tie-break the same way.
        let entry = match first {
            Some((time, stored)) if time <= t => stored,
            _ => page,
        };
        let exit = match last {
            Some((time, stored)) if time > t => stored,
            _ => page,
        };
        self.hashes.sort_unstable();
        self.hashes.dedup();
        if self.hashes.len() > PAGE_CAP {
            self.hashes.truncate(PAGE_CAP);
            saturated = true;
        }
        encode(&mut self.value, events, entry, exit, saturated, &self.hashes);

        for &(session_start, session_end, _) in &found {
            if (session_start, session_end) != (start, end) {
                store.delete(&self.key, session_start, session_end);
            }
            self.forget(session_end);
        }
        store.put(&self.key, start, end, &self.value);
        self.remember(end);

        if self.emit == Emit::Updates {
            let view = View::parse(&self.value).map_err(OperatorError::corrupt(&self.name))?;
            out.push(session_record(record.key, &self.key, start, end, &view));
        }
        Ok(())
    }

    /// Closes the sessions stream time has passed (`stream time >= end + gap + grace`):
    /// deletes them and, with `emit: final`, emits each one's record, ordered by (end, key,
    /// start).
    ///
    /// Does no store read unless some known session can close. The first call after
    /// start-up reads every stored session once, to learn the ends of sessions written
    /// before a restart.
    pub fn on_stream_time(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let now = ctx.stream_time;
        // Sessions ending at or before this have closed.
        let through = now.saturating_sub(self.gap_ms).saturating_sub(self.grace_ms);
        if self.complete && self.ends.first_key_value().is_none_or(|(&end, _)| through < end) {
            return Ok(());
        }
        self.sweeps += 1;
        let learning = !self.complete;
        let store = ctx.stores.session(self.store);
        let before = if learning { i64::MAX } else { through.saturating_add(1) };
        let sessions = store.ending_before(before).map_err(OperatorError::state(&self.name))?;
        if learning {
            self.ends.clear();
            self.open = 0;
        }
        for (key_bytes, start, end, value) in sessions {
            if !self.is_closed(end, now) {
                if learning {
                    self.remember(end);
                }
                continue;
            }
            store.delete(&key_bytes, start, end);
            self.forget(end);
            if self.emit == Emit::Final {
                let key =
                    Value::from_bytes(&key_bytes).map_err(OperatorError::corrupt(&self.name))?;
                let view = View::parse(&value).map_err(OperatorError::corrupt(&self.name))?;
                out.push(session_record(key, &key_bytes, start, end, &view));
            }
        }
        self.complete = true;
        Ok(())
    }
}

/// The output record of a session: keyed by the session's key, timed at its end.
fn session_record(key: Value, key_bytes: &[u8], start: i64, end: i64, view: &View<'_>) -> Record {
    let page = |page: Option<&str>| page.map_or(Value::Null, Value::from);
    let value = Value::from([
        ("session_id", Value::String(session_id(key_bytes, start))),
        ("start", Value::Int(start)),
        ("end", Value::Int(end)),
        ("duration_ms", Value::Int(end.saturating_sub(start))),
        ("events", Value::Int(i64::try_from(view.events).unwrap_or(i64::MAX))),
        ("distinct_pages", Value::Int(view.distinct_pages())),
        ("entry_page", page(view.entry)),
        ("exit_page", page(view.exit)),
        // A bounce is a session of a single event (one page view, nothing after it).
        ("bounce", Value::Bool(view.events == 1)),
    ]);
    Record { key, value, timestamp: end }
}

/// The session id: 16 hex digits of FNV-1a 64 over the key's binary encoding followed by the
/// start as 8 big-endian bytes. Stable across replays, processes and versions of Rust (unlike
/// std's hasher). A session extended backwards or merged into an earlier one takes the id of
/// its new start.
fn session_id(key_bytes: &[u8], start: i64) -> String {
    format!("{:016x}", fnv1a(fnv1a(FNV_OFFSET, key_bytes), &start.to_be_bytes()))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// A page's 64-bit hash, for the distinct-page set: FNV-1a, then the SplitMix64 finalizer so
/// that every bit is well mixed (the sketch beyond [`PAGE_CAP`] relies on uniform hashes).
fn page_hash(page: &str) -> u64 {
    let mut z = fnv1a(FNV_OFFSET, page.as_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes a stored session to `out` (cleared first). Layout, version 1:
///
/// ```text
/// u8       version (1)
/// varint   events
/// page     entry page: varint 0 when absent, else varint (length + 1) and the UTF-8 bytes
/// page     exit page, the same way
/// u8       flags: bit 0 = saturated (more than PAGE_CAP distinct pages were seen)
/// varint   n, the number of page hashes (at most PAGE_CAP)
/// n × u64  page hashes, little-endian, strictly ascending
/// ```
///
/// Start and end are in the store key. The entry and exit times are the session's start and
/// end by construction, so they are not stored again. Distinct pages are kept as 64-bit hashes
/// (exact up to a hash collision, about 1 in 10^13 for 1000 pages): 8 bytes each however long
/// the URL. While not saturated the set is exact; once more than PAGE_CAP distinct pages
/// are seen it keeps the PAGE_CAP smallest hashes, a bottom-k sketch that merges by union like
/// the exact set and estimates the count (see [`View::distinct_pages`]).
fn encode(
    out: &mut Vec<u8>,
    events: u64,
    entry: Option<&str>,
    exit: Option<&str>,
    saturated: bool,
    hashes: &[u64],
) {
    out.clear();
    out.push(VERSION);
    put_varint(out, events);
    put_page(out, entry);
    put_page(out, exit);
    out.push(if saturated { SATURATED } else { 0 });
    put_varint(out, hashes.len() as u64);
    for hash in hashes {
        out.extend_from_slice(&hash.to_le_bytes());
    }
}

fn put_page(out: &mut Vec<u8>, page: Option<&str>) {
    match page {
        None => out.push(0),
        Some(page) => {
            put_varint(out, page.len() as u64 + 1);
            out.extend_from_slice(page.as_bytes());
        }
    }
}

/// A stored session, decoded in place.
struct View<'a> {
    events: u64,
    entry: Option<&'a str>,
    exit: Option<&'a str>,
    saturated: bool,
    /// The page hashes, 8 little-endian bytes each.
    hashes: &'a [u8],
}

impl<'a> View<'a> {
    /// Decodes a session written by [`encode`], refusing anything else.
    fn parse(bytes: &'a [u8]) -> Result<View<'a>, DecodeError> {
        let mut input = bytes;
        if take(&mut input, 1)? != [VERSION] {
            return Err(DecodeError::new("unknown session layout version"));
        }
        let events = varint(&mut input)?;
        let entry = page(&mut input)?;
        let exit = page(&mut input)?;
        let flags = take(&mut input, 1)?[0];
        let n = varint(&mut input)?;
        let len = usize::try_from(n).ok().and_then(|n| n.checked_mul(8));
        let hashes = take(&mut input, len.ok_or(DecodeError::new("session truncated"))?)?;
        if !input.is_empty() {
            return Err(DecodeError::new("trailing bytes after a session"));
        }
        Ok(View { events, entry, exit, saturated: flags & SATURATED != 0, hashes })
    }

    /// The page hashes, ascending.
    fn hashes(&self) -> impl Iterator<Item = u64> + 'a {
        self.hashes
            .chunks_exact(8)
            .map(|chunk| <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes))
    }

    /// The number of distinct pages: exact while the set is not saturated; beyond that the
    /// bottom-k estimate `(k - 1) · 2^64 / (k-th smallest hash)` (standard error about
    /// 1/√k, 3% for k = 1000), at least k + 1. Pages seen again do not change it.
    fn distinct_pages(&self) -> i64 {
        let k = self.hashes.len() / 8;
        if !self.saturated || k < 2 {
            return k as i64 + i64::from(self.saturated);
        }
        let largest = self.hashes().last().unwrap_or(u64::MAX).max(1);
        let estimate = (k - 1) as f64 * 2f64.powi(64) / largest as f64;
        (estimate.round() as i64).max(k as i64 + 1)
    }
}

fn page<'a>(input: &mut &'a [u8]) -> Result<Option<&'a str>, DecodeError> {
    let n = varint(input)?;
    if n == 0 {
        return Ok(None);
    }
    let len = usize::try_from(n - 1).map_err(|_| DecodeError::new("session truncated"))?;
    std::str::from_utf8(take(input, len)?)
        .map(Some)
        .map_err(|_| DecodeError::new("session page is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateEnv, StoreKind, StoreSpec, Stores, TaskState};
    use crate::tempdir::TempDir;

    const GAP: i64 = 100;
    const GRACE: i64 = 50;
    /// How long after its last event a session closes.
    const CLOSE: i64 = GAP + GRACE;

    /// An operator over a real session store, driven the way a task drives it.
    struct Harness {
        op: Sessionize,
        // Dropped before the environment and the directory.
        state: TaskState,
        now: i64,
        _env: StateEnv,
        _dir: TempDir,
    }

    impl Harness {
        fn new(emit: Emit) -> Harness {
            let dir = TempDir::new("sessionize").unwrap();
            let env = StateEnv::new(32 << 20);
            let specs = [StoreSpec::new("sessions", StoreKind::Session)];
            let (state, _) =
                TaskState::open(&env, dir.path(), "clickstream/clicks-0", &specs).unwrap();
            Harness { op: operator(emit), state, now: i64::MIN, _env: env, _dir: dir }
        }

        /// Processes a click, then (if it advanced stream time) the stream-time callback, as
        /// the task does. Returns (emitted, late).
        fn send(&mut self, key: &str, ts: i64, page: Option<&str>) -> (Vec<Record>, Vec<Record>) {
            let advanced = ts > self.now;
            self.now = self.now.max(ts);
            let mut ctx = Context { stores: &mut self.state, stream_time: self.now };
            let (mut out, mut late) = (Vec::new(), Vec::new());
            self.op.process(click(key, ts, page), &mut ctx, &mut out, &mut late).unwrap();
            if advanced {
                self.op.on_stream_time(&mut ctx, &mut out).unwrap();
            }
            (out, late)
        }

        /// Sends a click that must be neither emitted on nor late.
        fn quiet(&mut self, key: &str, ts: i64, page: &str) {
            let (out, late) = self.send(key, ts, Some(page));
            assert_eq!((out, late), (vec![], vec![]), "click at {ts}");
        }

        fn advance(&mut self, to: i64) -> Vec<Record> {
            let mut out = Vec::new();
            if to > self.now {
                self.now = to;
                let mut ctx = Context { stores: &mut self.state, stream_time: self.now };
                self.op.on_stream_time(&mut ctx, &mut out).unwrap();
            }
            out
        }

        /// The stored sessions of `key`, as (start, end).
        fn stored(&mut self, key: &str) -> Vec<(i64, i64)> {
            let key = Value::from(key).to_bytes();
            let sessions = self.state.session(0).fetch(&key).unwrap();
            sessions.into_iter().map(|(start, end, _)| (start, end)).collect()
        }
    }

    fn operator(emit: Emit) -> Sessionize {
        Sessionize::new("sessions".into(), 0, GAP, GRACE, emit, "path".into())
    }

    fn click(key: &str, ts: i64, page: Option<&str>) -> Record {
        let value = match page {
            Some(page) => Value::from([("path", Value::from(page)), ("ua", Value::from("x"))]),
            None => Value::from([("ua", Value::from("x"))]),
        };
        Record { key: Value::from(key), value, timestamp: ts }
    }

    fn field<'a>(record: &'a Record, name: &str) -> &'a Value {
        record.value.get(name).unwrap()
    }

    fn int(record: &Record, name: &str) -> i64 {
        field(record, name).as_i64().unwrap()
    }

    fn text<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        field(record, name).as_str()
    }

    /// (start, end, events, distinct pages, entry, exit) of a session record.
    fn summary(record: &Record) -> (i64, i64, i64, i64, Option<&str>, Option<&str>) {
        (
            int(record, "start"),
            int(record, "end"),
            int(record, "events"),
            int(record, "distinct_pages"),
            text(record, "entry_page"),
            text(record, "exit_page"),
        )
    }

    #[test]
    fn a_single_event_session_is_a_bounce_that_closes_after_gap_and_grace() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/home");
        assert_eq!(h.op.open_sessions(), 1);
        assert_eq!(h.advance(1000 + CLOSE - 1), vec![]);
        let out = h.advance(1000 + CLOSE);
        assert_eq!(out.len(), 1);
        let record = &out[0];
        assert_eq!(record.key, Value::from("u1"));
        assert_eq!(record.timestamp, 1000);
        let id = session_id(&Value::from("u1").to_bytes(), 1000);
        let expected = Value::from([
            ("session_id", Value::from(id.as_str())),
            ("start", Value::Int(1000)),
            ("end", Value::Int(1000)),
            ("duration_ms", Value::Int(0)),
            ("events", Value::Int(1)),
            ("distinct_pages", Value::Int(1)),
            ("entry_page", Value::from("/home")),
            ("exit_page", Value::from("/home")),
            ("bounce", Value::Bool(true)),
        ]);
        assert_eq!(record.value, expected);
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        let names: Vec<&str> = Sessionize::output_fields().into_iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        let fields: Vec<&str> = match &record.value {
            Value::Map(fields) => fields.keys().map(String::as_str).collect(),
            _ => vec![],
        };
        assert_eq!(fields, sorted);
        assert_eq!(h.stored("u1"), vec![]);
        assert_eq!(h.op.open_sessions(), 0);
        // Closed once: nothing more later.
        assert_eq!(h.advance(10_000), vec![]);
    }

    #[test]
    fn events_within_the_gap_extend_the_session() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        h.quiet("u1", 1050, "/b");
        h.quiet("u1", 1150, "/a"); // exactly one gap after the last event: still joins
        assert_eq!(h.stored("u1"), vec![(1000, 1150)]);
        assert_eq!(h.advance(1150 + CLOSE - 1), vec![]);
        let out = h.advance(1150 + CLOSE);
        assert_eq!(out.len(), 1);
        assert_eq!(summary(&out[0]), (1000, 1150, 3, 2, Some("/a"), Some("/a")));
        assert_eq!(int(&out[0], "duration_ms"), 150);
        assert_eq!(field(&out[0], "bounce"), &Value::Bool(false));
        assert_eq!(out[0].timestamp, 1150);
    }

    #[test]
    fn a_silence_longer_than_the_gap_splits_sessions() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        h.quiet("u1", 1101, "/b");
        h.quiet("u2", 1101, "/c");
        assert_eq!(h.stored("u1"), vec![(1000, 1000), (1101, 1101)]);
        let first = h.advance(1000 + CLOSE);
        assert_eq!(first.len(), 1);
        assert_eq!(summary(&first[0]), (1000, 1000, 1, 1, Some("/a"), Some("/a")));
        // Sessions that end together close in key order.
        let rest = h.advance(1101 + CLOSE);
        let keys: Vec<&Value> = rest.iter().map(|r| &r.key).collect();
        assert_eq!(keys, [&Value::from("u1"), &Value::from("u2")]);
        assert_eq!(summary(&rest[0]), (1101, 1101, 1, 1, Some("/b"), Some("/b")));
        assert_ne!(text(&first[0], "session_id"), text(&rest[0], "session_id"));
        assert_ne!(text(&rest[0], "session_id"), text(&rest[1], "session_id"));
    }

    #[test]
    fn an_out_of_order_event_bridging_two_sessions_merges_them() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        h.quiet("u1", 1110, "/b");
        h.quiet("u1", 1120, "/d");
        assert_eq!(h.stored("u1"), vec![(1000, 1000), (1110, 1120)]);
        assert_eq!(h.op.open_sessions(), 2);
        // 1050 is within a gap of both: the sessions become one.
        h.quiet("u1", 1050, "/c");
        assert_eq!(h.stored("u1"), vec![(1000, 1120)]);
        assert_eq!(h.op.open_sessions(), 1);
        assert_eq!(h.advance(1000 + CLOSE), vec![]);
        let out = h.advance(1120 + CLOSE);
        assert_eq!(out.len(), 1);
        assert_eq!(summary(&out[0]), (1000, 1120, 4, 4, Some("/a"), Some("/d")));
        let id = session_id(&Value::from("u1").to_bytes(), 1000);
        assert_eq!(text(&out[0], "session_id"), Some(id.as_str()));
        assert_eq!(h.stored("u1"), vec![]);
        assert_eq!(h.op.open_sessions(), 0);
    }

    #[test]
    fn an_event_before_the_start_becomes_the_entry_page() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/b");
        h.quiet("u1", 1010, "/c");
        h.quiet("u1", 930, "/a");
        assert_eq!(h.stored("u1"), vec![(930, 1010)]);
        let out = h.advance(1010 + CLOSE);
        assert_eq!(summary(&out[0]), (930, 1010, 3, 3, Some("/a"), Some("/c")));
    }

    #[test]
    fn grace_keeps_a_session_open_for_a_late_event() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        // Stream time passes the end of u1's gap but not its grace.
        h.quiet("u2", 1120, "/x");
        assert_eq!(h.stored("u1"), vec![(1000, 1000)]);
        h.quiet("u1", 1090, "/b");
        assert_eq!(h.op.late(), 0);
        assert_eq!(h.stored("u1"), vec![(1000, 1090)]);
        assert_eq!(h.advance(1090 + CLOSE - 1).len(), 0);
        let out = h.advance(1090 + CLOSE);
        let u1: Vec<&Record> = out.iter().filter(|r| r.key == Value::from("u1")).collect();
        assert_eq!(u1.len(), 1);
        assert_eq!(summary(u1[0]), (1000, 1090, 2, 2, Some("/a"), Some("/b")));
    }

    #[test]
    fn an_event_beyond_grace_is_late_and_changes_nothing() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        let (out, late) = h.send("u2", 1200, Some("/x"));
        assert_eq!(out.len(), 1, "u1's session closed at 1150");
        assert_eq!(late, vec![]);
        // 1040 + gap + grace <= 1200: its session would have closed already.
        let (out, late) = h.send("u1", 1040, Some("/late"));
        assert_eq!(out, vec![]);
        assert_eq!(late, vec![click("u1", 1040, Some("/late"))]);
        assert_eq!(h.op.late(), 1);
        assert_eq!(h.stored("u1"), vec![]);
        assert_eq!(h.stored("u2"), vec![(1200, 1200)]);
        // Also when it would have joined a session still stored at the time.
        let (_, late) = h.send("u2", 1049, Some("/late"));
        assert_eq!(late.len(), 1);
        assert_eq!(h.op.late(), 2);
        assert_eq!(h.stored("u2"), vec![(1200, 1200)]);
        let out = h.advance(1200 + CLOSE);
        assert_eq!(summary(&out[0]), (1200, 1200, 1, 1, Some("/x"), Some("/x")));
    }

    #[test]
    fn an_old_event_within_reach_of_an_open_session_joins_it() {
        let mut h = Harness::new(Emit::Final);
        for ts in [1200, 1290, 1380] {
            h.quiet("u1", ts, "/a");
        }
        // 1220 + gap + grace <= 1380, but the session holding it is still open.
        let (out, late) = h.send("u1", 1220, Some("/b"));
        assert_eq!((out, late), (vec![], vec![]));
        assert_eq!(h.op.late(), 0);
        let out = h.advance(1380 + CLOSE);
        assert_eq!(summary(&out[0]), (1200, 1380, 4, 2, Some("/a"), Some("/a")));
    }

    #[test]
    fn emit_updates_emits_every_change_and_closing_only_deletes() {
        let mut h = Harness::new(Emit::Updates);
        let (out, _) = h.send("u1", 1000, Some("/a"));
        assert_eq!(out.len(), 1);
        assert_eq!(summary(&out[0]), (1000, 1000, 1, 1, Some("/a"), Some("/a")));
        assert_eq!(field(&out[0], "bounce"), &Value::Bool(true));
        assert_eq!(out[0].timestamp, 1000);
        let (out, _) = h.send("u1", 1050, Some("/b"));
        assert_eq!(summary(&out[0]), (1000, 1050, 2, 2, Some("/a"), Some("/b")));
        assert_eq!(field(&out[0], "bounce"), &Value::Bool(false));
        assert_eq!(out[0].timestamp, 1050);
        let (out, _) = h.send("u1", 1160, Some("/c"));
        assert_eq!(summary(&out[0]), (1160, 1160, 1, 1, Some("/c"), Some("/c")));
        // A bridging event emits the merged session.
        let (out, _) = h.send("u1", 1100, Some("/d"));
        assert_eq!(out.len(), 1);
        assert_eq!(summary(&out[0]), (1000, 1160, 4, 4, Some("/a"), Some("/c")));
        assert_eq!(h.advance(1160 + CLOSE), vec![]);
        assert_eq!(h.stored("u1"), vec![]);
        assert_eq!(h.op.open_sessions(), 0);
    }

    /// A fixed input with out-of-order events, merges, ties, and several keys.
    fn replay(h: &mut Harness) -> Vec<Record> {
        let input = [
            ("u1", 1000, "/a"),
            ("u2", 1005, "/x"),
            ("u1", 1110, "/b"),
            ("u1", 1050, "/c"),
            ("u2", 1300, "/y"),
            ("u1", 1300, "/d"),
            ("u1", 1300, "/e"),
            ("u3", 1301, "/z"),
        ];
        let mut all = Vec::new();
        for (key, ts, page) in input {
            let (out, late) = h.send(key, ts, Some(page));
            all.extend(out);
            all.extend(late);
        }
        all.extend(h.advance(5000));
        all
    }

    #[test]
    fn a_replay_into_a_fresh_store_emits_the_same_records_and_ids() {
        for emit in [Emit::Final, Emit::Updates] {
            let first = replay(&mut Harness::new(emit));
            let second = replay(&mut Harness::new(emit));
            assert!(!first.is_empty());
            assert_eq!(first, second);
        }
        let out = replay(&mut Harness::new(Emit::Final));
        let u1 = out.iter().find(|r| r.key == Value::from("u1")).unwrap();
        assert_eq!(summary(u1), (1000, 1110, 3, 3, Some("/a"), Some("/b")));
        let id = session_id(&Value::from("u1").to_bytes(), 1000);
        assert_eq!(text(u1, "session_id"), Some(id.as_str()));
        // The id is a fixed function of its input: it must not change between versions.
        assert_eq!(session_id(b"", 0), format!("{:016x}", fnv1a(FNV_OFFSET, &[0; 8])));
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn equal_timestamps_keep_the_first_entry_and_the_last_exit() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/first");
        h.quiet("u1", 1000, "/second");
        h.quiet("u1", 1000, "/third");
        let out = h.advance(1000 + CLOSE);
        assert_eq!(summary(&out[0]), (1000, 1000, 3, 3, Some("/first"), Some("/third")));
        // Ties across a merge: the stored sessions were seen first for the entry, the event
        // last for the exit.
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 2000, "/s1");
        h.quiet("u1", 2110, "/s2");
        h.quiet("u1", 2000, "/e1");
        h.quiet("u1", 2110, "/e2");
        assert_eq!(h.stored("u1"), vec![(2000, 2000), (2110, 2110)]);
        h.quiet("u1", 2050, "/m");
        let out = h.advance(2110 + CLOSE);
        assert_eq!(summary(&out[0]), (2000, 2110, 5, 5, Some("/s1"), Some("/e2")));
    }

    #[test]
    fn a_missing_page_field_gives_null_pages() {
        let mut h = Harness::new(Emit::Final);
        h.send("u1", 1000, None);
        h.send("u1", 1010, Some("/a"));
        h.send("u1", 1020, None);
        let out = h.advance(1020 + CLOSE);
        assert_eq!(summary(&out[0]), (1000, 1020, 3, 1, None, None));
        assert_eq!(field(&out[0], "entry_page"), &Value::Null);
    }

    #[test]
    fn stream_time_reads_the_store_only_when_a_session_can_close() {
        let mut h = Harness::new(Emit::Final);
        for ts in (1000..2000).step_by(10) {
            h.quiet("u1", ts, "/a");
            h.quiet("u2", ts + 5, "/b");
        }
        // One read at start-up to learn what is stored; none while nothing can close.
        assert_eq!(h.op.sweeps, 1);
        assert_eq!(h.advance(1990 + CLOSE - 1), vec![]);
        assert_eq!(h.op.sweeps, 1);
        assert_eq!(h.advance(1990 + CLOSE).len(), 1);
        assert_eq!(h.op.sweeps, 2);
        assert_eq!(h.advance(1995 + CLOSE - 1), vec![]);
        assert_eq!(h.op.sweeps, 2);
        assert_eq!(h.advance(1995 + CLOSE).len(), 1);
        assert_eq!(h.op.sweeps, 3);
        assert_eq!(h.advance(100_000), vec![]);
        assert_eq!(h.op.sweeps, 3);
    }

    #[test]
    fn a_restarted_operator_learns_and_closes_sessions_written_before() {
        let mut h = Harness::new(Emit::Final);
        h.quiet("u1", 1000, "/a");
        h.quiet("u2", 1100, "/b");
        h.quiet("u1", 1010, "/c");
        h.state.commit(b"offsets").unwrap();
        // A new operator over the same store, as after a restart.
        h.op = operator(Emit::Final);
        assert_eq!(h.op.open_sessions(), 0);
        h.quiet("u3", 1120, "/x");
        assert_eq!(h.op.open_sessions(), 3);
        let out = h.advance(1010 + CLOSE);
        assert_eq!(out.len(), 1);
        assert_eq!(summary(&out[0]), (1000, 1010, 2, 2, Some("/a"), Some("/c")));
        assert_eq!(h.advance(1120 + CLOSE).len(), 2);
        assert_eq!(h.op.open_sessions(), 0);
    }

    #[test]
    fn a_malformed_stored_session_is_reported_as_corrupt() {
        let cases: [(&[u8], &str); 4] = [
            (&[], "truncated"),
            (&[VERSION, 1, 0, 0, 0, 0, 9], "trailing bytes"),
            (&[7, 1], "version"),
            (&[VERSION, 1, 2, 0xff], "UTF-8"),
        ];
        for (bytes, why) in cases {
            let mut h = Harness::new(Emit::Final);
            let key = Value::from("u1").to_bytes();
            h.state.session(0).put(&key, 1000, 1000, bytes);
            let mut ctx = Context { stores: &mut h.state, stream_time: 1000 };
            let (mut out, mut late) = (Vec::new(), Vec::new());
            let result = h.op.process(click("u1", 1000, Some("/a")), &mut ctx, &mut out, &mut late);
            assert!(matches!(result, Err(OperatorError::Corrupt { .. })), "{bytes:?}");
            let mut ctx = Context { stores: &mut h.state, stream_time: 5000 };
            let result = h.op.on_stream_time(&mut ctx, &mut out);
            assert!(matches!(result, Err(OperatorError::Corrupt { .. })), "{bytes:?}");
            let message = result.err().unwrap().to_string();
            assert!(message.starts_with("sessions: ") && message.contains(why), "{message}");
        }
    }

    #[test]
    fn distinct_pages_beyond_the_cap_are_estimated_and_repeats_do_not_count() {
        let mut h = Harness::new(Emit::Updates);
        let pages = 3 * PAGE_CAP as i64;
        let mut last = None;
        // Each page twice, one event per millisecond: one session.
        for i in 0..2 * pages {
            let (out, _) = h.send("bot", 1000 + i, Some(&format!("/p/{}", i % pages)));
            last = out.into_iter().next();
            if i % 500 == 0 {
                h.state.take_changelog();
                h.state.commit(b"offsets").unwrap();
            }
            if i == PAGE_CAP as i64 - 1 {
                assert_eq!(int(last.as_ref().unwrap(), "distinct_pages"), PAGE_CAP as i64);
            }
            if i == pages - 1 {
                let estimate = int(last.as_ref().unwrap(), "distinct_pages");
                assert!((estimate - pages).abs() < pages / 10, "{estimate}");
            }
        }
        let last = last.unwrap();
        assert_eq!(int(&last, "events"), 2 * pages);
        let estimate = int(&last, "distinct_pages");
        assert!((estimate - pages).abs() < pages / 10, "{estimate} vs {pages}");
        let key = Value::from("bot").to_bytes();
        let stored = h.state.session(0).fetch(&key).unwrap();
        assert!(stored[0].2.len() < 8 * PAGE_CAP + 64);
    }
}
