//! The RocksDB implementation of a task's stores: the only file that names `rocksdb`.
//!
//! One database per task, at the task's state directory, with one column family per store
//! (named after the store), one more per window or session store for its time-first index
//! (`<store>.by-time`), and `meta`, which records whose directory this is (identity, store
//! list, key layout version) and the runtime's commit metadata. Every database of the process
//! shares one block cache and one write buffer manager charged to it ([`StateEnv`]), so all
//! stores of all tasks live within one memory budget.
//!
//! Writes go to a pending write set per column family (ordered maps, so reads and scans merge
//! them with RocksDB in key order) and reach RocksDB only at [`TaskState::commit`], in one
//! `WriteBatch` together with the runtime's metadata. The WAL stays on, so a commit survives a
//! process kill; nothing here syncs to disk, so a power loss may lose recent commits, which the
//! changelog restores.
//!
//! Local state is a cache of the changelog. A directory that belongs to another task or store
//! list, or that RocksDB cannot open, is therefore deleted and recreated, never a reason to
//! crash ([`Opened::Wiped`]). Two things are never deleted: a directory another owner has open
//! (RocksDB's lock), and a non-empty directory that does not look like RocksDB at all.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::properties::{CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_LIVE_DATA_SIZE};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    DBWithThreadMode, LogLevel, Options, ReadOptions, SingleThreaded, WriteBatch,
    WriteBufferManager, WriteOptions,
};
use tracing::{error, warn};

use super::keys;
use super::{
    ChangelogEntry, KeyedSession, KeyedWindow, KvStore, SessionStore, StateError, StateResult,
    StoreKind, StoreSpec, Stores, WindowStore,
};

/// Single-threaded column family mode: a task's database is used by one thread at a time and
/// never creates column families after open, and this mode's handles are plain references.
type Db = DBWithThreadMode<SingleThreaded>;

/// The column family of a task's identity, store list and commit metadata.
const META_CF: &str = "meta";
/// RocksDB's column family that always exists; Eddy keeps nothing in it.
const DEFAULT_CF: &str = "default";
/// Suffix of a window or session store's time-first index column family.
const INDEX_SUFFIX: &str = ".by-time";

/// Version of the key layouts (`state/keys.rs`) and meta records; a directory written with
/// another version is wiped and restored from the changelog.
const LAYOUT_VERSION: &[u8] = b"1";
const META_LAYOUT: &[u8] = b"layout";
const META_IDENTITY: &[u8] = b"identity";
const META_STORES: &[u8] = b"stores";
const META_COMMIT: &[u8] = b"commit";

/// The smallest memory budget [`StateEnv::new`] accepts; below it RocksDB thrashes.
const MIN_BUDGET: usize = 16 << 20;

/// Memory shared by every task database of the process: one LRU block cache and one write
/// buffer manager whose memtables are charged to that cache, so that the total memory of all
/// stores stays within one budget however many tasks an instance owns.
///
/// Cheap to clone; clones share the same cache.
#[derive(Clone)]
pub struct StateEnv {
    cache: Cache,
    write_buffers: WriteBufferManager,
    /// Size of one memtable of one column family.
    write_buffer_size: usize,
}

impl StateEnv {
    /// Creates the shared cache for a budget of `memory_budget_bytes` (raised to 16 MiB at
    /// least). A quarter of the budget may hold memtables (unflushed writes); the rest, and
    /// whatever memtables leave, caches data, index and filter blocks.
    pub fn new(memory_budget_bytes: usize) -> StateEnv {
        let budget = memory_budget_bytes.max(MIN_BUDGET);
        let cache = Cache::new_lru_cache(budget);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 4,
            false,
            cache.clone(),
        );
        let write_buffer_size = (budget / 16).clamp(1 << 20, 64 << 20);
        StateEnv { cache, write_buffers, write_buffer_size }
    }

    /// Bytes the shared block cache holds now (memtable reservations included).
    pub fn cache_usage(&self) -> usize {
        self.cache.get_usage()
    }

    /// Bytes all memtables of all task databases hold now.
    pub fn memtable_usage(&self) -> usize {
        self.write_buffers.get_usage()
    }

    fn db_options(&self) -> Options {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_write_buffer_manager(&self.write_buffers);
        // A rarely written store must not pin old WAL files forever.
        opts.set_max_total_wal_size(64 << 20);
        // Each task has its own database: bound its file descriptors and info logs.
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(2);
        opts.set_log_level(LogLevel::Warn);
        opts
    }

    fn cf_options(&self) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks count against the budget too, but L0's stay pinned so point
        // lookups of fresh data do not thrash.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut opts = Options::default();
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_write_buffer_size(self.write_buffer_size);
        opts.set_max_write_buffer_number(3);
        // Closed windows and sessions are deleted in time order, leaving runs of tombstones at
        // the front of the time index that every later scan would step over: compact files
        // that collect them.
        opts.add_compact_on_deletion_collector_factory(128, 64, 0.5);
        opts
    }
}

impl std::fmt::Debug for StateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateEnv")
            .field("cache_usage", &self.cache_usage())
            .field("memtable_usage", &self.memtable_usage())
            .finish_non_exhaustive()
    }
}

/// What [`TaskState::open`] found in the task's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// There was no state: the task restores everything from its changelog.
    Fresh,
    /// The task's own state from an earlier run: the task resumes from its committed metadata.
    Existing,
    /// The directory belonged to another task or store list, or could not be opened; it was
    /// deleted and recreated empty, so the task restores everything from its changelog.
    Wiped {
        /// Why, in words for a log line.
        reason: String,
    },
}

/// The database of one task, shared by its stores (which read it) and the task (which
/// commits to it).
struct Shared {
    db: Db,
    path: PathBuf,
}

impl Shared {
    /// The column family `name`. A lookup in a small ordered map, without allocation; keeping
    /// the handles themselves would make the state self-referential.
    fn cf(&self, name: &str) -> StateResult<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| StateError::Rocks {
            path: self.path.clone(),
            context: format!("looking up column family '{name}'"),
            message: "the column family is not open".to_owned(),
        })
    }

    fn rocks_error(&self, context: String, error: rocksdb::Error) -> StateError {
        StateError::Rocks { path: self.path.clone(), context, message: error.into_string() }
    }

    fn corrupt(&self, store: &str, detail: String) -> StateError {
        StateError::Corrupt { path: self.path.clone(), store: store.to_owned(), detail }
    }
}

/// One pending write: the new value (`None` deletes) and whether the changelog has it yet.
struct Pending {
    value: Option<Vec<u8>>,
    logged: bool,
}

/// One column family of a store and its pending writes.
struct Table {
    cf: String,
    pending: BTreeMap<Vec<u8>, Pending>,
}

impl Table {
    fn new(cf: String) -> Table {
        Table { cf, pending: BTreeMap::new() }
    }

    /// Records a write, reusing the key and value buffers of an earlier pending write of the
    /// same key (hot keys, such as counters, are rewritten often between commits).
    fn write(&mut self, key: &[u8], value: Option<&[u8]>, logged: bool) {
        match self.pending.get_mut(key) {
            Some(pending) => {
                match (&mut pending.value, value) {
                    (Some(buffer), Some(value)) => {
                        buffer.clear();
                        buffer.extend_from_slice(value);
                    }
                    (slot, value) => *slot = value.map(<[u8]>::to_vec),
                }
                pending.logged = logged;
            }
            None => {
                let value = value.map(<[u8]>::to_vec);
                self.pending.insert(key.to_vec(), Pending { value, logged });
            }
        }
    }

    /// Records a write whose key and value are already owned.
    fn write_owned(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, logged: bool) {
        self.pending.insert(key, Pending { value, logged });
    }

    fn get(&self, shared: &Shared, store: &str, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.value.clone());
        }
        let cf = shared.cf(&self.cf)?;
        match shared.db.get_pinned_cf(cf, key) {
            Ok(value) => Ok(value.map(|value| value.to_vec())),
            Err(error) => Err(shared.rocks_error(format!("reading store '{store}'"), error)),
        }
    }

    /// The values of many keys at once: pending ones from the pending set, the others in one
    /// batched RocksDB lookup.
    fn get_many(
        &self,
        shared: &Shared,
        store: &str,
        keys: &[Vec<u8>],
    ) -> StateResult<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        let mut stored = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            match self.pending.get(key.as_slice()) {
                Some(pending) => values.push(pending.value.clone()),
                None => {
                    values.push(None);
                    stored.push(at);
                }
            }
        }
        if stored.is_empty() {
            return Ok(values);
        }
        let cf = shared.cf(&self.cf)?;
        let found = shared.db.batched_multi_get_cf(cf, stored.iter().map(|at| &keys[*at]), false);
        for (at, value) in stored.into_iter().zip(found) {
            match value {
                Ok(value) => values[at] = value.map(|value| value.to_vec()),
                Err(error) => {
                    return Err(shared.rocks_error(format!("reading store '{store}'"), error));
                }
            }
        }
        Ok(values)
    }

    /// Visits the entries with `lower <= key < upper` (`upper` None = unbounded) in key order,
    /// pending writes merged over RocksDB's: a pending value replaces the stored one, a pending
    /// delete hides it.
    fn scan(
        &self,
        shared: &Shared,
        store: &str,
        lower: &[u8],
        upper: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> StateResult<()>,
    ) -> StateResult<()> {
        if upper.is_some_and(|upper| upper <= lower) {
            return Ok(()); // An empty range (and BTreeMap::range would panic on it).
        }
        let cf = shared.cf(&self.cf)?;
        let mut opts = ReadOptions::default();
        if !lower.is_empty() {
            opts.set_iterate_lower_bound(lower);
        }
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        let mut stored = shared.db.raw_iterator_cf_opt(cf, opts);
        stored.seek(lower);
        let upper_bound = upper.map_or(Bound::Unbounded, Bound::Excluded);
        let mut pending = self.pending.range::<[u8], _>((Bound::Included(lower), upper_bound));
        let mut next_pending = pending.next();
        loop {
            match (stored.item(), next_pending) {
                (None, None) => break,
                (Some((key, value)), None) => {
                    visit(key, value)?;
                    stored.next();
                }
                (None, Some((key, write))) => {
                    if let Some(value) = &write.value {
                        visit(key, value)?;
                    }
                    next_pending = pending.next();
                }
                (Some((key, value)), Some((pending_key, write))) => {
                    match key.cmp(pending_key.as_slice()) {
                        std::cmp::Ordering::Less => {
                            visit(key, value)?;
                            stored.next();
                        }
                        ordering => {
                            if let Some(value) = &write.value {
                                visit(pending_key, value)?;
                            }
                            if ordering == std::cmp::Ordering::Equal {
                                stored.next();
                            }
                            next_pending = pending.next();
                        }
                    }
                }
            }
        }
        stored
            .status()
            .map_err(|error| shared.rocks_error(format!("scanning store '{store}'"), error))
    }

    fn pending_bytes(&self) -> u64 {
        self.pending
            .iter()
            .map(|(key, write)| (key.len() + write.value.as_ref().map_or(0, Vec::len)) as u64)
            .sum()
    }
}

/// A key-value store of a task.
struct KvState {
    name: String,
    shared: Arc<Shared>,
    table: Table,
}

impl KvStore for KvState {
    fn get(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.table.get(&self.shared, &self.name, key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.table.write(key, Some(value), false);
    }

    fn delete(&mut self, key: &[u8]) {
        self.table.write(key, None, false);
    }

    fn range(&self, from: &[u8], to: Option<&[u8]>) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if to.is_some_and(|to| to <= from) {
            return Ok(out);
        }
        self.table.scan(&self.shared, &self.name, from, to, |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    fn prefix(&self, prefix: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let upper = keys::prefix_successor(prefix);
        self.range(prefix, upper.as_deref())
    }
}

/// A window store of a task: primary layout `len(key) key time(start)` in the store's column
/// family, index `time(start) key` (empty values) in `<store>.by-time`.
struct WindowState {
    name: String,
    shared: Arc<Shared>,
    primary: Table,
    index: Table,
    /// Reused key buffer of the write path.
    scratch: Vec<u8>,
}

impl WindowState {
    fn write(&mut self, key: &[u8], start: i64, value: Option<&[u8]>) {
        keys::window_primary_into(&mut self.scratch, key, start);
        self.primary.write(&self.scratch, value, false);
        keys::window_index_into(&mut self.scratch, key, start);
        self.index.write(&self.scratch, value.map(|_| &[][..]), true);
    }
}

impl WindowStore for WindowState {
    fn get(&self, key: &[u8], start: i64) -> StateResult<Option<Vec<u8>>> {
        self.primary.get(&self.shared, &self.name, &keys::window_primary(key, start))
    }

    fn put(&mut self, key: &[u8], start: i64, value: &[u8]) {
        self.write(key, start, Some(value));
    }

    fn delete(&mut self, key: &[u8], start: i64) {
        self.write(key, start, None);
    }

    fn fetch(&self, key: &[u8], from: i64, to: i64) -> StateResult<Vec<(i64, Vec<u8>)>> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let prefix_len = keys::key_prefix(key).len();
        let lower = keys::window_primary(key, from);
        let upper = keys::prefix_successor(&keys::window_primary(key, to));
        self.primary.scan(
            &self.shared,
            &self.name,
            &lower,
            upper.as_deref(),
            |primary, value| {
                let start =
                    primary.get(prefix_len..).and_then(keys::decode_time).ok_or_else(|| {
                        self.shared.corrupt(&self.name, format!("bad window key {primary:02x?}"))
                    })?;
                out.push((start, value.to_vec()));
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn fetch_all(&self, from: i64, to: i64) -> StateResult<Vec<KeyedWindow>> {
        if from > to {
            return Ok(Vec::new());
        }
        let lower = keys::time(from);
        let upper = keys::prefix_successor(&keys::time(to));
        let mut windows = Vec::new();
        self.index.scan(&self.shared, &self.name, &lower, upper.as_deref(), |index, _| {
            let (key, start) = keys::decode_window_index(index).ok_or_else(|| {
                self.shared.corrupt(&self.name, format!("bad window index key {index:02x?}"))
            })?;
            windows.push((key.to_vec(), start));
            Ok(())
        })?;
        let primaries: Vec<Vec<u8>> =
            windows.iter().map(|(key, start)| keys::window_primary(key, *start)).collect();
        let values = self.primary.get_many(&self.shared, &self.name, &primaries)?;
        windows
            .into_iter()
            .zip(values)
            .map(|((key, start), value)| match value {
                Some(value) => Ok((key, start, value)),
                None => Err(self.shared.corrupt(
                    &self.name,
                    format!("the index names window {start} of key {key:02x?}, which is missing"),
                )),
            })
            .collect()
    }
}

/// A session store of a task: primary layout `len(key) key time(start) time(end)` in the
/// store's column family, index `time(end) key time(start)` (empty values) in
/// `<store>.by-time`.
struct SessionState {
    name: String,
    shared: Arc<Shared>,
    primary: Table,
    index: Table,
    /// Reused key buffer of the write path.
    scratch: Vec<u8>,
}

impl SessionState {
    fn write(&mut self, key: &[u8], start: i64, end: i64, value: Option<&[u8]>) {
        keys::session_primary_into(&mut self.scratch, key, start, end);
        self.primary.write(&self.scratch, value, false);
        keys::session_index_into(&mut self.scratch, key, start, end);
        self.index.write(&self.scratch, value.map(|_| &[][..]), true);
    }

    /// The key's sessions with start <= `latest_start`, ascending by (start, end), filtered.
    fn scan_key(
        &self,
        key: &[u8],
        latest_start: i64,
        mut keep: impl FnMut(i64, i64) -> bool,
    ) -> StateResult<Vec<(i64, i64, Vec<u8>)>> {
        let lower = keys::key_prefix(key);
        let prefix_len = lower.len();
        let mut upper = lower.clone();
        upper.extend_from_slice(&keys::time(latest_start));
        let upper = keys::prefix_successor(&upper);
        let mut out = Vec::new();
        self.primary.scan(
            &self.shared,
            &self.name,
            &lower,
            upper.as_deref(),
            |primary, value| {
                let (start, end) = keys::session_times(primary, prefix_len).ok_or_else(|| {
                    self.shared.corrupt(&self.name, format!("bad session key {primary:02x?}"))
                })?;
                if keep(start, end) {
                    out.push((start, end, value.to_vec()));
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}

impl SessionStore for SessionState {
    fn put(&mut self, key: &[u8], start: i64, end: i64, value: &[u8]) {
        self.write(key, start, end, Some(value));
    }

    fn delete(&mut self, key: &[u8], start: i64, end: i64) {
        self.write(key, start, end, None);
    }

    fn find(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
    ) -> StateResult<Vec<(i64, i64, Vec<u8>)>> {
        self.scan_key(key, latest_start, |_, end| end >= earliest_end)
    }

    fn fetch(&self, key: &[u8]) -> StateResult<Vec<(i64, i64, Vec<u8>)>> {
        self.scan_key(key, i64::MAX, |_, _| true)
    }

    fn ending_before(&self, before: i64) -> StateResult<Vec<KeyedSession>> {
        if before == i64::MIN {
            return Ok(Vec::new());
        }
        let mut sessions = Vec::new();
        let upper = keys::time(before);
        self.index.scan(&self.shared, &self.name, &[], Some(&upper), |index, _| {
            let (key, start, end) = keys::decode_session_index(index).ok_or_else(|| {
                self.shared.corrupt(&self.name, format!("bad session index key {index:02x?}"))
            })?;
            sessions.push((key.to_vec(), start, end));
            Ok(())
        })?;
        // The index orders by end, then by the key's raw bytes followed by the start; sorting
        // by (end, key, start) fixes the order among sessions that end together.
        sessions.sort_unstable_by(|a, b| (a.2, &a.0, a.1).cmp(&(b.2, &b.0, b.1)));
        let primaries: Vec<Vec<u8>> = sessions
            .iter()
            .map(|(key, start, end)| keys::session_primary(key, *start, *end))
            .collect();
        let values = self.primary.get_many(&self.shared, &self.name, &primaries)?;
        sessions
            .into_iter()
            .zip(values)
            .map(|((key, start, end), value)| match value {
                Some(value) => Ok((key, start, end, value)),
                None => Err(self.shared.corrupt(
                    &self.name,
                    format!(
                        "the index names session [{start}, {end}] of key {key:02x?}, which is \
                         missing"
                    ),
                )),
            })
            .collect()
    }
}

/// One store of a task, of the kind the plan assigned.
enum Store {
    Kv(KvState),
    Window(WindowState),
    Session(SessionState),
}

impl Store {
    fn name(&self) -> &str {
        match self {
            Store::Kv(store) => &store.name,
            Store::Window(store) => &store.name,
            Store::Session(store) => &store.name,
        }
    }

    /// The primary table (what the changelog carries) and the index table, if any.
    fn tables(&self) -> (&Table, Option<&Table>) {
        match self {
            Store::Kv(store) => (&store.table, None),
            Store::Window(store) => (&store.primary, Some(&store.index)),
            Store::Session(store) => (&store.primary, Some(&store.index)),
        }
    }

    fn tables_mut(&mut self) -> (&mut Table, Option<&mut Table>) {
        match self {
            Store::Kv(store) => (&mut store.table, None),
            Store::Window(store) => (&mut store.primary, Some(&mut store.index)),
            Store::Session(store) => (&mut store.primary, Some(&mut store.index)),
        }
    }

    fn clear_pending(&mut self) {
        let (primary, index) = self.tables_mut();
        primary.pending.clear();
        if let Some(index) = index {
            index.pending.clear();
        }
    }
}

/// What an operator gets when it asks for a store by a wrong index or kind: reads fail, writes
/// are dropped, and the task's next commit fails, so the bug stops the task, not the process.
#[derive(Default)]
struct Misuse {
    first: Option<String>,
}

impl Misuse {
    fn record(&mut self, detail: String) -> &mut Misuse {
        if self.first.is_none() {
            error!(
                %detail,
                "An operator asked for a state store it does not have; the task will fail."
            );
            self.first = Some(detail);
        }
        self
    }

    fn error(&self) -> StateError {
        StateError::Misuse(self.first.clone().unwrap_or_default())
    }
}

impl KvStore for Misuse {
    fn get(&self, _key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        Err(self.error())
    }
    fn put(&mut self, _key: &[u8], _value: &[u8]) {}
    fn delete(&mut self, _key: &[u8]) {}
    fn range(&self, _from: &[u8], _to: Option<&[u8]>) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Err(self.error())
    }
    fn prefix(&self, _prefix: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Err(self.error())
    }
}

impl WindowStore for Misuse {
    fn get(&self, _key: &[u8], _start: i64) -> StateResult<Option<Vec<u8>>> {
        Err(self.error())
    }
    fn put(&mut self, _key: &[u8], _start: i64, _value: &[u8]) {}
    fn delete(&mut self, _key: &[u8], _start: i64) {}
    fn fetch(&self, _key: &[u8], _from: i64, _to: i64) -> StateResult<Vec<(i64, Vec<u8>)>> {
        Err(self.error())
    }
    fn fetch_all(&self, _from: i64, _to: i64) -> StateResult<Vec<KeyedWindow>> {
        Err(self.error())
    }
}

impl SessionStore for Misuse {
    fn put(&mut self, _key: &[u8], _start: i64, _end: i64, _value: &[u8]) {}
    fn delete(&mut self, _key: &[u8], _start: i64, _end: i64) {}
    fn find(&self, _key: &[u8], _end: i64, _start: i64) -> StateResult<Vec<(i64, i64, Vec<u8>)>> {
        Err(self.error())
    }
    fn fetch(&self, _key: &[u8]) -> StateResult<Vec<(i64, i64, Vec<u8>)>> {
        Err(self.error())
    }
    fn ending_before(&self, _before: i64) -> StateResult<Vec<KeyedSession>> {
        Err(self.error())
    }
}

/// The column families a store list needs, checked for clashes.
struct Layout {
    /// Every column family, `default` and `meta` included.
    cfs: Vec<String>,
    /// The store list as recorded in meta.
    stores_record: Vec<u8>,
}

impl Layout {
    fn new(stores: &[StoreSpec]) -> StateResult<Layout> {
        let mut cfs = vec![DEFAULT_CF.to_owned(), META_CF.to_owned()];
        for spec in stores {
            if spec.name.is_empty() {
                return Err(StateError::InvalidStores("a store has an empty name".to_owned()));
            }
            cfs.push(spec.name.clone());
            if spec.kind != StoreKind::Kv {
                cfs.push(index_cf(&spec.name));
            }
        }
        let mut sorted: Vec<&String> = cfs.iter().collect();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(StateError::InvalidStores(format!(
                "the name '{}' is used twice (store names must be unique and must not be \
                 '{DEFAULT_CF}', '{META_CF}' or end in '{INDEX_SUFFIX}')",
                pair[0]
            )));
        }
        let record = serde_json::Value::Array(
            stores.iter().map(|spec| serde_json::json!([spec.kind.as_str(), spec.name])).collect(),
        );
        Ok(Layout { cfs, stores_record: record.to_string().into_bytes() })
    }
}

fn index_cf(store: &str) -> String {
    format!("{store}{INDEX_SUFFIX}")
}

/// Whether an open failed because someone else holds the database's lock (then the directory
/// is alive and must not be wiped).
fn is_lock_error(error: &rocksdb::Error) -> bool {
    let message = error.as_ref();
    message.contains("While lock file") || message.contains("lock hold by current process")
}

/// Whether `dir` holds any file RocksDB writes, so that wiping it cannot delete anything else.
fn looks_like_rocksdb(dir: &Path) -> StateResult<bool> {
    let entries = std::fs::read_dir(dir).map_err(|source| StateError::Io {
        path: dir.to_owned(),
        context: "listing the state directory".to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| StateError::Io {
            path: dir.to_owned(),
            context: "listing the state directory".to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if matches!(name.as_ref(), "CURRENT" | "IDENTITY" | "LOCK" | "LOG")
            || name.starts_with("MANIFEST-")
            || name.starts_with("OPTIONS-")
            || name.starts_with("LOG.old")
            || is_numbered(&name, ".sst")
            || is_numbered(&name, ".log")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `name` is a RocksDB file name: digits, then `suffix` (`000042.sst`).
fn is_numbered(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `dir` is missing or empty.
fn is_empty_dir(dir: &Path) -> StateResult<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(StateError::Io {
            path: dir.to_owned(),
            context: "listing the state directory".to_owned(),
            source,
        }),
    }
}

/// What an existing directory turned out to be.
enum Found {
    Own(Db),
    Missing,
    Unusable(String),
}

/// The state of one task: its stores, in one RocksDB database, and their pending writes.
///
/// Reads see pending writes first. Writes reach RocksDB only at [`TaskState::commit`]; until
/// then [`TaskState::abort`] forgets them. Each write is also recorded for the changelog
/// ([`TaskState::take_changelog`]).
pub struct TaskState {
    shared: Arc<Shared>,
    identity: String,
    specs: Vec<StoreSpec>,
    stores: Vec<Store>,
    misuse: Misuse,
    write_options: WriteOptions,
}

impl TaskState {
    /// Opens (or creates) the database of the task `identity` (e.g. `clickstream/clicks-3`)
    /// with `stores` at `dir`.
    ///
    /// A directory recorded for another identity, store list or key layout, or that RocksDB
    /// cannot open (corrupt files, a half-created database), is deleted and recreated
    /// ([`Opened::Wiped`]): local state is only a cache of the changelog. Errors are left for
    /// what wiping cannot fix: the directory is open elsewhere ([`StateError::Locked`]), is not
    /// a state directory ([`StateError::NotAStateDir`]), the store list clashes
    /// ([`StateError::InvalidStores`]), or the file system fails.
    pub fn open(
        env: &StateEnv,
        dir: &Path,
        identity: &str,
        stores: &[StoreSpec],
    ) -> StateResult<(TaskState, Opened)> {
        let layout = Layout::new(stores)?;
        let (db, opened) = match Self::open_existing(env, dir, identity, &layout)? {
            Found::Own(db) => (db, Opened::Existing),
            Found::Missing => (Self::create(env, dir, identity, &layout)?, Opened::Fresh),
            Found::Unusable(reason) => {
                warn!(
                    dir = %dir.display(),
                    %identity,
                    %reason,
                    "State directory unusable; wiping it, the changelog restores it."
                );
                Self::destroy(dir)?;
                (Self::create(env, dir, identity, &layout)?, Opened::Wiped { reason })
            }
        };
        let shared = Arc::new(Shared { db, path: dir.to_owned() });
        let states: Vec<Store> = stores
            .iter()
            .map(|spec| {
                let name = spec.name.clone();
                let shared = Arc::clone(&shared);
                let primary = Table::new(spec.name.clone());
                match spec.kind {
                    StoreKind::Kv => Store::Kv(KvState { name, shared, table: primary }),
                    StoreKind::Window => Store::Window(WindowState {
                        index: Table::new(index_cf(&name)),
                        name,
                        shared,
                        primary,
                        scratch: Vec::new(),
                    }),
                    StoreKind::Session => Store::Session(SessionState {
                        index: Table::new(index_cf(&name)),
                        name,
                        shared,
                        primary,
                        scratch: Vec::new(),
                    }),
                }
            })
            .collect();
        let mut write_options = WriteOptions::default();
        write_options.set_sync(false);
        write_options.disable_wal(false);
        let state = TaskState {
            shared,
            identity: identity.to_owned(),
            specs: stores.to_vec(),
            stores: states,
            misuse: Misuse::default(),
            write_options,
        };
        Ok((state, opened))
    }

    /// Deletes a task's state directory (for `eddy reset`, or to rebuild a task from its
    /// changelog). A missing directory is fine; a directory that does not look like RocksDB is
    /// refused ([`StateError::NotAStateDir`]). The task's [`TaskState`] must be dropped first.
    pub fn destroy(dir: &Path) -> StateResult<()> {
        if is_empty_dir(dir)? {
            return match std::fs::remove_dir(dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                    path: dir.to_owned(),
                    context: "deleting the state directory".to_owned(),
                    source: error,
                }),
                _ => Ok(()),
            };
        }
        if !looks_like_rocksdb(dir)? {
            return Err(StateError::NotAStateDir { path: dir.to_owned() });
        }
        std::fs::remove_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            context: "deleting the state directory".to_owned(),
            source,
        })
    }

    /// Opens `dir` if it holds this task's database.
    fn open_existing(
        env: &StateEnv,
        dir: &Path,
        identity: &str,
        layout: &Layout,
    ) -> StateResult<Found> {
        if is_empty_dir(dir)? {
            return Ok(Found::Missing);
        }
        if !looks_like_rocksdb(dir)? {
            return Err(StateError::NotAStateDir { path: dir.to_owned() });
        }
        let mut opts = env.db_options();
        opts.create_if_missing(false);
        opts.create_missing_column_families(false);
        let locked = |error: rocksdb::Error| StateError::Locked {
            path: dir.to_owned(),
            message: error.into_string(),
        };
        // RocksDB takes its lock before it reads anything, so every open below fails with a
        // lock error while another owner has the directory: nothing is wiped under a live
        // owner, whatever the directory holds.
        let mut found = match Db::list_cf(&Options::default(), dir) {
            Ok(found) => found,
            Err(error) => {
                return match Db::open(&opts, dir) {
                    Err(lock) if is_lock_error(&lock) => Err(locked(lock)),
                    _ => Ok(Found::Unusable(format!("RocksDB cannot read it: {error}"))),
                };
            }
        };
        // Every existing column family must be opened, ours or not.
        let descriptors =
            found.iter().map(|cf| ColumnFamilyDescriptor::new(cf.as_str(), env.cf_options()));
        let db = match Db::open_cf_descriptors(&opts, dir, descriptors) {
            Ok(db) => db,
            Err(error) if is_lock_error(&error) => return Err(locked(error)),
            Err(error) => return Ok(Found::Unusable(format!("RocksDB cannot open it: {error}"))),
        };
        found.sort();
        let mut wanted = layout.cfs.clone();
        wanted.sort();
        if found != wanted {
            return Ok(Found::Unusable(format!(
                "it holds the column families {found:?}, this task needs {wanted:?}"
            )));
        }
        let Some(meta) = db.cf_handle(META_CF) else {
            return Ok(Found::Unusable("it has no meta column family".to_owned()));
        };
        let read = |key: &[u8]| db.get_cf(meta, key);
        let (layout_version, found_identity, found_stores) =
            match (read(META_LAYOUT), read(META_IDENTITY), read(META_STORES)) {
                (Ok(version), Ok(identity), Ok(stores)) => (version, identity, stores),
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                    return Ok(Found::Unusable(format!("RocksDB cannot read its meta: {error}")));
                }
            };
        let reason = if layout_version.as_deref() != Some(LAYOUT_VERSION) {
            Some(format!(
                "its key layout is {}, this version writes {}",
                show(layout_version.as_deref()),
                show(Some(LAYOUT_VERSION))
            ))
        } else if found_identity.as_deref() != Some(identity.as_bytes()) {
            Some(format!("it belongs to {}, not to '{identity}'", show(found_identity.as_deref())))
        } else if found_stores.as_deref() != Some(layout.stores_record.as_slice()) {
            Some(format!(
                "it holds the stores {}, this task has {}",
                show(found_stores.as_deref()),
                show(Some(&layout.stores_record))
            ))
        } else {
            None
        };
        Ok(match reason {
            Some(reason) => Found::Unusable(reason),
            None => Found::Own(db),
        })
    }

    /// Creates the task's database in an empty or missing `dir` and records whose it is.
    fn create(env: &StateEnv, dir: &Path, identity: &str, layout: &Layout) -> StateResult<Db> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            context: "creating the state directory".to_owned(),
            source,
        })?;
        let descriptors =
            layout.cfs.iter().map(|cf| ColumnFamilyDescriptor::new(cf.as_str(), env.cf_options()));
        let rocks_error = |context: &str, error: rocksdb::Error| {
            if is_lock_error(&error) {
                StateError::Locked { path: dir.to_owned(), message: error.into_string() }
            } else {
                StateError::Rocks {
                    path: dir.to_owned(),
                    context: context.to_owned(),
                    message: error.into_string(),
                }
            }
        };
        let db = Db::open_cf_descriptors(&env.db_options(), dir, descriptors)
            .map_err(|error| rocks_error("creating the database", error))?;
        let meta = db.cf_handle(META_CF).ok_or_else(|| StateError::Rocks {
            path: dir.to_owned(),
            context: "creating the database".to_owned(),
            message: "the meta column family was not created".to_owned(),
        })?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_LAYOUT, LAYOUT_VERSION);
        batch.put_cf(meta, META_IDENTITY, identity.as_bytes());
        batch.put_cf(meta, META_STORES, &layout.stores_record);
        db.write(batch).map_err(|error| rocks_error("recording the task's identity", error))?;
        Ok(db)
    }

    /// The task's identity, as given to [`TaskState::open`].
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The task's state directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The task's stores, in the order [`Stores`] indexes them.
    pub fn specs(&self) -> &[StoreSpec] {
        &self.specs
    }

    /// The writes since the last call, for the changelog: the last write per (store, key), in
    /// order of store, then key (deterministic, so a replayed batch produces the same records).
    ///
    /// Writes not taken before [`TaskState::commit`] or [`TaskState::abort`] are never
    /// returned: the runtime takes the changelog of a batch before committing it.
    pub fn take_changelog(&mut self) -> Vec<ChangelogEntry> {
        let mut entries = Vec::new();
        for (store, state) in self.stores.iter_mut().enumerate() {
            let (primary, _) = state.tables_mut();
            for (key, write) in primary.pending.iter_mut().filter(|(_, write)| !write.logged) {
                write.logged = true;
                entries.push(ChangelogEntry {
                    store,
                    key: key.clone(),
                    value: write.value.clone(),
                });
            }
        }
        entries
    }

    /// Applies changelog entries (the restore path): they join the pending writes (indexes
    /// included) as if written by operators, but are not recorded for the changelog again.
    /// They reach RocksDB at the next [`TaskState::commit`].
    ///
    /// On an entry that does not fit the task's stores (unknown store index, undecodable window
    /// or session key) this stops with [`StateError::BadChangelog`], leaving the entries before
    /// it applied; the caller aborts.
    pub fn apply_changelog(
        &mut self,
        entries: impl IntoIterator<Item = ChangelogEntry>,
    ) -> StateResult<()> {
        for entry in entries {
            let Some(state) = self.stores.get_mut(entry.store) else {
                return Err(StateError::BadChangelog {
                    store: entry.store.to_string(),
                    detail: format!("the task has {} store(s)", self.specs.len()),
                });
            };
            let bad = |state: &Store, what: &str| StateError::BadChangelog {
                store: format!("{} ('{}')", entry.store, state.name()),
                detail: format!("the key {:02x?} is not a {what} key", entry.key),
            };
            match state {
                Store::Kv(store) => store.table.write_owned(entry.key, entry.value, true),
                Store::Window(store) => {
                    let Some((key, start)) = keys::decode_window_primary(&entry.key) else {
                        return Err(bad(state, "window"));
                    };
                    keys::window_index_into(&mut store.scratch, key, start);
                    store.index.write(&store.scratch, entry.value.as_ref().map(|_| &[][..]), true);
                    store.primary.write_owned(entry.key, entry.value, true);
                }
                Store::Session(store) => {
                    let Some((key, start, end)) = keys::decode_session_primary(&entry.key) else {
                        return Err(bad(state, "session"));
                    };
                    keys::session_index_into(&mut store.scratch, key, start, end);
                    store.index.write(&store.scratch, entry.value.as_ref().map(|_| &[][..]), true);
                    store.primary.write_owned(entry.key, entry.value, true);
                }
            }
        }
        Ok(())
    }

    /// Records the current value of `key` (a primary key, as the changelog carries it) in store
    /// `store` for the changelog again, or a tombstone if it has none: how a restore overrides
    /// records that a crashed or fenced writer left in the changelog after the last valid ones.
    pub fn relog(&mut self, store: usize, key: Vec<u8>) -> StateResult<()> {
        let Some(state) = self.stores.get_mut(store) else {
            return Err(StateError::BadChangelog {
                store: store.to_string(),
                detail: format!("the task has {} store(s)", self.specs.len()),
            });
        };
        let name = state.name().to_owned();
        let (primary, _) = state.tables_mut();
        let value = primary.get(&self.shared, &name, &key)?;
        primary.write_owned(key, value, false);
        Ok(())
    }

    /// Writes every store's pending writes and `meta` (the runtime's opaque record: input
    /// offsets, changelog positions) to RocksDB in one atomic batch, then clears the pending
    /// writes. The WAL is written but not synced: a commit survives a process kill, not
    /// necessarily a power loss.
    ///
    /// Fails without writing anything if an operator misused a store since the last commit or
    /// abort ([`StateError::Misuse`]); pending writes stay pending on any failure.
    pub fn commit(&mut self, meta: &[u8]) -> StateResult<()> {
        if self.misuse.first.is_some() {
            return Err(self.misuse.error());
        }
        let shared = &self.shared;
        let mut batch = WriteBatch::default();
        for state in &self.stores {
            let (primary, index) = state.tables();
            for table in std::iter::once(primary).chain(index) {
                let cf = shared.cf(&table.cf)?;
                for (key, write) in &table.pending {
                    match &write.value {
                        Some(value) => batch.put_cf(cf, key, value),
                        None => batch.delete_cf(cf, key),
                    }
                }
            }
        }
        batch.put_cf(shared.cf(META_CF)?, META_COMMIT, meta);
        shared
            .db
            .write_opt(batch, &self.write_options)
            .map_err(|error| shared.rocks_error("committing".to_owned(), error))?;
        for state in &mut self.stores {
            state.clear_pending();
        }
        Ok(())
    }

    /// The `meta` of the last commit, or `None` if the database never had one.
    pub fn committed_meta(&self) -> StateResult<Option<Vec<u8>>> {
        let shared = &self.shared;
        shared
            .db
            .get_cf(shared.cf(META_CF)?, META_COMMIT)
            .map_err(|error| shared.rocks_error("reading the committed meta".to_owned(), error))
    }

    /// Forgets every write since the last commit, taken by the changelog or not, and any store
    /// misuse: the stores read as they did after the last commit.
    pub fn abort(&mut self) {
        for state in &mut self.stores {
            state.clear_pending();
        }
        self.misuse = Misuse::default();
    }

    /// An estimate of the bytes store `store` holds, for metrics: RocksDB's live data and
    /// memtables of its column families plus its pending writes. 0 for an unknown store; a
    /// property RocksDB cannot report counts as 0, since metrics must not fail a task.
    pub fn approximate_bytes(&self, store: usize) -> u64 {
        let Some(state) = self.stores.get(store) else {
            return 0;
        };
        let (primary, index) = state.tables();
        let mut bytes = 0;
        for table in std::iter::once(primary).chain(index) {
            bytes += table.pending_bytes();
            if let Ok(cf) = self.shared.cf(&table.cf) {
                for property in [ESTIMATE_LIVE_DATA_SIZE, CUR_SIZE_ALL_MEM_TABLES] {
                    let value = self.shared.db.property_int_value_cf(cf, property);
                    bytes += value.ok().flatten().unwrap_or(0);
                }
            }
        }
        bytes
    }
}

impl std::fmt::Debug for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskState")
            .field("identity", &self.identity)
            .field("path", &self.shared.path)
            .field("stores", &self.specs)
            .finish_non_exhaustive()
    }
}

impl Stores for TaskState {
    fn kv(&mut self, store: usize) -> &mut dyn KvStore {
        let TaskState { stores, specs, misuse, .. } = self;
        match stores.get_mut(store) {
            Some(Store::Kv(state)) => state,
            _ => misuse.record(misuse_detail(specs, store, StoreKind::Kv)),
        }
    }

    fn window(&mut self, store: usize) -> &mut dyn WindowStore {
        let TaskState { stores, specs, misuse, .. } = self;
        match stores.get_mut(store) {
            Some(Store::Window(state)) => state,
            _ => misuse.record(misuse_detail(specs, store, StoreKind::Window)),
        }
    }

    fn session(&mut self, store: usize) -> &mut dyn SessionStore {
        let TaskState { stores, specs, misuse, .. } = self;
        match stores.get_mut(store) {
            Some(Store::Session(state)) => state,
            _ => misuse.record(misuse_detail(specs, store, StoreKind::Session)),
        }
    }
}

/// Describes why store `store` cannot be used as `kind`, for [`Misuse`].
fn misuse_detail(specs: &[StoreSpec], store: usize, kind: StoreKind) -> String {
    match specs.get(store) {
        Some(spec) => format!(
            "store {store} ('{}') is a {} store, not a {} store",
            spec.name,
            spec.kind.as_str(),
            kind.as_str()
        ),
        None => format!(
            "store {store} was asked for as a {} store, but the task has {} store(s)",
            kind.as_str(),
            specs.len()
        ),
    }
}

/// A meta record for a log line.
fn show(value: Option<&[u8]>) -> String {
    match value {
        Some(value) => format!("'{}'", String::from_utf8_lossy(value)),
        None => "nothing recorded".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    const KV: usize = 0;
    const WINDOW: usize = 1;
    const SESSION: usize = 2;

    fn specs() -> Vec<StoreSpec> {
        vec![
            StoreSpec::new("counts", StoreKind::Kv),
            StoreSpec::new("clicks_5m", StoreKind::Window),
            StoreSpec::new("sessions", StoreKind::Session),
        ]
    }

    fn env() -> StateEnv {
        StateEnv::new(32 << 20)
    }

    fn open(env: &StateEnv, dir: &TempDir) -> (TaskState, Opened) {
        TaskState::open(env, dir.path(), "clickstream/clicks-3", &specs()).unwrap()
    }

    fn kv(entries: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        entries.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    type Dump = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, i64, Vec<u8>)>, Vec<(i64, i64, Vec<u8>)>);

    /// Everything the three stores hold (sessions of the keys `u1` and `u2`).
    fn dump(state: &mut TaskState) -> Dump {
        let kvs = state.kv(KV).range(b"", None).unwrap();
        let windows = state.window(WINDOW).fetch_all(i64::MIN, i64::MAX).unwrap();
        let mut sessions = state.session(SESSION).fetch(b"u1").unwrap();
        sessions.extend(state.session(SESSION).fetch(b"u2").unwrap());
        (kvs, windows, sessions)
    }

    #[test]
    fn state_can_move_between_threads() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<TaskState>();
        send_and_sync::<StateEnv>();
    }

    #[test]
    fn kv_reads_merge_pending_writes_over_committed_data() {
        let dir = TempDir::new("kv").unwrap();
        let (mut state, opened) = open(&env(), &dir);
        assert_eq!(opened, Opened::Fresh);
        let store = state.kv(KV);
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("pa", "4"), ("pb", "5"), ("q", "6")] {
            store.put(k.as_bytes(), v.as_bytes());
        }
        state.commit(b"offsets-1").unwrap();

        let store = state.kv(KV);
        store.put(b"b", b"20"); // overwrites a committed key
        store.delete(b"c"); // hides a committed key
        store.put(b"bb", b"new"); // a new key between committed ones
        store.delete(b"zz"); // deletes a key that never existed
        store.put(b"pc", b"7");
        store.delete(b"pa");
        assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(b"b").unwrap(), Some(b"20".to_vec()));
        assert_eq!(store.get(b"c").unwrap(), None);
        assert_eq!(store.get(b"zz").unwrap(), None);
        let expected_all =
            kv(&[("a", "1"), ("b", "20"), ("bb", "new"), ("pb", "5"), ("pc", "7"), ("q", "6")]);
        assert_eq!(store.range(b"", None).unwrap(), expected_all);
        assert_eq!(store.range(b"b", Some(b"pb")).unwrap(), kv(&[("b", "20"), ("bb", "new")]));
        assert_eq!(
            store.range(b"bb", Some(b"q")).unwrap(),
            kv(&[("bb", "new"), ("pb", "5"), ("pc", "7")])
        );
        assert_eq!(store.range(b"pb", None).unwrap(), kv(&[("pb", "5"), ("pc", "7"), ("q", "6")]));
        assert_eq!(store.range(b"q", Some(b"b")).unwrap(), kv(&[]));
        assert_eq!(store.range(b"b", Some(b"b")).unwrap(), kv(&[]));
        assert_eq!(store.prefix(b"p").unwrap(), kv(&[("pb", "5"), ("pc", "7")]));
        assert_eq!(store.prefix(b"b").unwrap(), kv(&[("b", "20"), ("bb", "new")]));
        assert_eq!(store.prefix(b"x").unwrap(), kv(&[]));
        assert_eq!(store.prefix(b"").unwrap(), expected_all);

        // Committed, the same contents come from RocksDB alone.
        state.commit(b"offsets-2").unwrap();
        let store = state.kv(KV);
        assert_eq!(store.range(b"", None).unwrap(), expected_all);
        assert_eq!(store.prefix(b"p").unwrap(), kv(&[("pb", "5"), ("pc", "7")]));
        assert_eq!(state.committed_meta().unwrap(), Some(b"offsets-2".to_vec()));
    }

    #[test]
    fn kv_prefix_of_0xff_bytes_is_unbounded_above() {
        let dir = TempDir::new("kv-ff").unwrap();
        let (mut state, _) = open(&env(), &dir);
        let store = state.kv(KV);
        store.put(&[0xff], b"1");
        store.put(&[0xff, 0xff, 0x01], b"2");
        store.put(&[0xfe, 0xff], b"3");
        state.commit(b"").unwrap();
        let store = state.kv(KV);
        store.put(&[0xff, 0x00], b"4");
        let found = store.prefix(&[0xff]).unwrap();
        let keys: Vec<Vec<u8>> = found.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![vec![0xff], vec![0xff, 0x00], vec![0xff, 0xff, 0x01]]);
    }

    #[test]
    fn windows_fetch_by_key_and_by_time_range() {
        let dir = TempDir::new("window").unwrap();
        let (mut state, _) = open(&env(), &dir);
        let store = state.window(WINDOW);
        for key in [&b"a"[..], b"ab", b"b"] {
            for start in [-2_000, -1_000, 0, 1_000] {
                store.put(
                    key,
                    start,
                    format!("{}@{start}", String::from_utf8_lossy(key)).as_bytes(),
                );
            }
        }
        store.put(b"a", i64::MIN, b"min");
        store.put(b"a", i64::MAX, b"max");
        state.commit(b"").unwrap();

        let store = state.window(WINDOW);
        store.put(b"a", 500, b"a@500"); // pending, between committed windows
        store.put(b"ab", 0, b"ab@0'"); // pending overwrite
        store.delete(b"b", -1_000); // pending delete of a committed window
        assert_eq!(store.get(b"ab", 0).unwrap(), Some(b"ab@0'".to_vec()));
        assert_eq!(store.get(b"b", -1_000).unwrap(), None);
        assert_eq!(store.get(b"a", i64::MIN).unwrap(), Some(b"min".to_vec()));

        let fetched = store.fetch(b"a", -1_000, 1_000).unwrap();
        let starts: Vec<i64> = fetched.iter().map(|(start, _)| *start).collect();
        assert_eq!(starts, vec![-1_000, 0, 500, 1_000]);
        assert_eq!(fetched[2].1, b"a@500");
        // "a" must not see "ab"'s windows.
        assert_eq!(store.fetch(b"a", 0, 0).unwrap(), vec![(0, b"a@0".to_vec())]);
        assert_eq!(store.fetch(b"a", 1, -1).unwrap(), vec![]);
        let all_a: Vec<i64> =
            store.fetch(b"a", i64::MIN, i64::MAX).unwrap().into_iter().map(|w| w.0).collect();
        assert_eq!(all_a, vec![i64::MIN, -2_000, -1_000, 0, 500, 1_000, i64::MAX]);

        let all = store.fetch_all(-1_000, 0).unwrap();
        let order: Vec<(&[u8], i64)> = all.iter().map(|(k, s, _)| (k.as_slice(), *s)).collect();
        assert_eq!(
            order,
            vec![(&b"a"[..], -1_000), (b"ab", -1_000), (b"a", 0), (b"ab", 0), (b"b", 0)]
        );
        assert_eq!(all[3].2, b"ab@0'");
        assert_eq!(store.fetch_all(-2_000, -2_000).unwrap().len(), 3);
        assert_eq!(store.fetch_all(-1_999, -1_001).unwrap(), vec![]);
        assert_eq!(store.fetch_all(1, 0).unwrap(), vec![]);
        let extremes = store.fetch_all(i64::MAX, i64::MAX).unwrap();
        assert_eq!(extremes, vec![(b"a".to_vec(), i64::MAX, b"max".to_vec())]);
        assert_eq!(store.fetch_all(i64::MIN, i64::MIN).unwrap().len(), 1);

        state.commit(b"").unwrap();
        let store = state.window(WINDOW);
        let after: Vec<(Vec<u8>, i64, Vec<u8>)> = store.fetch_all(-1_000, 0).unwrap();
        assert_eq!(after, all);
    }

    #[test]
    fn sessions_find_merge_and_close() {
        let dir = TempDir::new("session").unwrap();
        let (mut state, _) = open(&env(), &dir);
        let store = state.session(SESSION);
        store.put(b"u1", 0, 10, b"s1");
        store.put(b"u1", 20, 30, b"s2");
        store.put(b"u1", 100, 120, b"s3");
        store.put(b"u10", 5, 6, b"other"); // a key that extends "u1"
        state.commit(b"").unwrap();

        let store = state.session(SESSION);
        // An event at 18 with a gap of 5 may extend sessions ending at >= 13 starting <= 23.
        assert_eq!(store.find(b"u1", 13, 23).unwrap(), vec![(20, 30, b"s2".to_vec())]);
        // Bounds are inclusive.
        assert_eq!(store.find(b"u1", 10, 20).unwrap().len(), 2);
        assert_eq!(store.find(b"u1", 31, 99).unwrap(), vec![]);
        // An event at 12 with a gap of 10 bridges the first two: merge them into one.
        let merged = store.find(b"u1", 2, 22).unwrap();
        assert_eq!(merged, vec![(0, 10, b"s1".to_vec()), (20, 30, b"s2".to_vec())]);
        for (start, end, _) in &merged {
            store.delete(b"u1", *start, *end);
        }
        store.put(b"u1", 0, 30, b"s1+s2");
        let expected = vec![(0, 30, b"s1+s2".to_vec()), (100, 120, b"s3".to_vec())];
        assert_eq!(store.fetch(b"u1").unwrap(), expected);
        assert_eq!(store.find(b"u1", 2, 22).unwrap(), vec![(0, 30, b"s1+s2".to_vec())]);
        assert_eq!(store.fetch(b"u10").unwrap(), vec![(5, 6, b"other".to_vec())]);
        assert_eq!(store.fetch(b"nobody").unwrap(), vec![]);

        // Closing: ordered by (end, key, start), even where raw index bytes would disagree
        // ("u1" + start byte 0x80 sorts after "u10" as bytes).
        store.put(b"u10", 25, 30, b"late");
        store.put(b"u1", -50, -40, b"negative");
        let closing = store.ending_before(31).unwrap();
        let order: Vec<(&[u8], i64, i64)> =
            closing.iter().map(|(k, s, e, _)| (k.as_slice(), *s, *e)).collect();
        assert_eq!(
            order,
            vec![(&b"u1"[..], -50, -40), (b"u10", 5, 6), (b"u1", 0, 30), (b"u10", 25, 30)]
        );
        assert_eq!(closing[2].3, b"s1+s2");
        assert_eq!(store.ending_before(30).unwrap().len(), 2);
        assert_eq!(store.ending_before(i64::MIN).unwrap(), vec![]);

        state.commit(b"").unwrap();
        let store = state.session(SESSION);
        assert_eq!(store.ending_before(31).unwrap(), closing);
        assert_eq!(store.fetch(b"u1").unwrap().len(), 3);
        assert_eq!(store.ending_before(i64::MAX).unwrap().len(), 5);
    }

    #[test]
    fn reopen_sees_committed_data_only() {
        let dir = TempDir::new("reopen").unwrap();
        let env = env();
        {
            let (mut state, _) = open(&env, &dir);
            assert_eq!(state.committed_meta().unwrap(), None);
            state.kv(KV).put(b"k", b"committed");
            state.window(WINDOW).put(b"k", 60_000, b"w");
            state.session(SESSION).put(b"u1", 1, 2, b"s");
            state.commit(b"meta-1").unwrap();
            state.kv(KV).put(b"k", b"uncommitted");
            state.kv(KV).put(b"other", b"uncommitted");
            state.window(WINDOW).delete(b"k", 60_000);
        }
        let (mut state, opened) = open(&env, &dir);
        assert_eq!(opened, Opened::Existing);
        assert_eq!(state.committed_meta().unwrap(), Some(b"meta-1".to_vec()));
        assert_eq!(state.kv(KV).get(b"k").unwrap(), Some(b"committed".to_vec()));
        assert_eq!(state.kv(KV).get(b"other").unwrap(), None);
        assert_eq!(state.window(WINDOW).fetch_all(0, 100_000).unwrap().len(), 1);
        assert_eq!(state.session(SESSION).ending_before(10).unwrap().len(), 1);
        assert!(state.take_changelog().is_empty());
    }

    #[test]
    fn abort_rewinds_to_the_last_commit() {
        let dir = TempDir::new("abort").unwrap();
        let (mut state, _) = open(&env(), &dir);
        state.kv(KV).put(b"k", b"1");
        state.commit(b"m1").unwrap();
        state.kv(KV).put(b"k", b"2");
        state.kv(KV).put(b"j", b"2");
        state.window(WINDOW).put(b"k", 0, b"w");
        state.session(SESSION).put(b"u1", 0, 1, b"s");
        state.abort();
        assert!(state.take_changelog().is_empty());
        let (kvs, windows, sessions) = dump(&mut state);
        assert_eq!(kvs, kv(&[("k", "1")]));
        assert!(windows.is_empty());
        assert!(sessions.is_empty());
        state.commit(b"m2").unwrap();
        assert_eq!(state.kv(KV).get(b"k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(state.committed_meta().unwrap(), Some(b"m2".to_vec()));
    }

    #[test]
    fn changelog_coalesces_and_restores_every_store_kind() {
        let env = env();
        let dir = TempDir::new("changelog").unwrap();
        let (mut state, _) = open(&env, &dir);
        state.kv(KV).put(b"b", b"1");
        state.kv(KV).put(b"a", b"1");
        state.kv(KV).put(b"b", b"2");
        state.kv(KV).delete(b"c");
        state.window(WINDOW).put(b"page", -60_000, b"3");
        state.window(WINDOW).put(b"page", 0, b"1");
        state.window(WINDOW).put(b"page", 0, b"2");
        state.window(WINDOW).put(b"other", 0, b"9");
        state.session(SESSION).put(b"u1", 0, 10, b"s1");
        state.session(SESSION).put(b"u1", 20, 30, b"s2");
        state.session(SESSION).delete(b"u1", 0, 10);
        state.session(SESSION).delete(b"u1", 20, 30);
        state.session(SESSION).put(b"u1", 0, 30, b"merged");
        state.session(SESSION).put(b"u2", -5, 5, b"s");

        let first = state.take_changelog();
        let keys: Vec<(usize, Vec<u8>)> = first.iter().map(|e| (e.store, e.key.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "ordered by store, then key");
        let kv_entries: Vec<&ChangelogEntry> = first.iter().filter(|e| e.store == KV).collect();
        assert_eq!(kv_entries.len(), 3);
        assert_eq!(kv_entries[1].value, Some(b"2".to_vec()), "the last write of b");
        assert_eq!(kv_entries[2].value, None, "a tombstone for c");
        assert_eq!(first.iter().filter(|e| e.store == WINDOW).count(), 3);
        let session_entries: Vec<&ChangelogEntry> =
            first.iter().filter(|e| e.store == SESSION).collect();
        assert_eq!(session_entries.len(), 4, "two tombstones, the merged session, u2");
        assert_eq!(session_entries.iter().filter(|e| e.value.is_none()).count(), 2);
        assert!(session_entries.iter().all(|e| keys::decode_session_primary(&e.key).is_some()));

        // Only writes since the last take, coalesced again.
        assert!(state.take_changelog().is_empty());
        state.kv(KV).put(b"a", b"x");
        state.kv(KV).put(b"a", b"y");
        let second = state.take_changelog();
        assert_eq!(
            second,
            vec![ChangelogEntry { store: KV, key: b"a".to_vec(), value: Some(b"y".to_vec()) }]
        );
        state.commit(b"m").unwrap();

        let restored_dir = TempDir::new("changelog-restored").unwrap();
        let (mut restored, _) = open(&env, &restored_dir);
        restored.apply_changelog(first.into_iter().chain(second)).unwrap();
        assert!(restored.take_changelog().is_empty(), "restored writes are not logged again");
        assert_eq!(dump(&mut restored), dump(&mut state), "pending restore reads the same");
        assert_eq!(
            restored.session(SESSION).ending_before(31).unwrap(),
            state.session(SESSION).ending_before(31).unwrap()
        );
        restored.commit(b"m").unwrap();
        assert_eq!(dump(&mut restored), dump(&mut state), "committed restore reads the same");
        assert_eq!(
            restored.window(WINDOW).fetch_all(i64::MIN, 0).unwrap(),
            state.window(WINDOW).fetch_all(i64::MIN, 0).unwrap()
        );

        // Entries that do not fit are refused.
        let bad = ChangelogEntry { store: 7, key: b"k".to_vec(), value: None };
        assert!(matches!(restored.apply_changelog([bad]), Err(StateError::BadChangelog { .. })));
        let bad = ChangelogEntry { store: SESSION, key: b"k".to_vec(), value: None };
        assert!(matches!(restored.apply_changelog([bad]), Err(StateError::BadChangelog { .. })));
    }

    #[test]
    fn a_foreign_directory_is_wiped() {
        let env = env();
        let dir = TempDir::new("foreign").unwrap();
        {
            let (mut state, _) = open(&env, &dir);
            state.kv(KV).put(b"k", b"v");
            state.commit(b"m").unwrap();
        }
        let (mut state, opened) =
            TaskState::open(&env, dir.path(), "clickstream/clicks-4", &specs()).unwrap();
        let Opened::Wiped { reason } = opened else { panic!("not wiped: {opened:?}") };
        assert!(reason.contains("clickstream/clicks-3"), "{reason}");
        assert_eq!(state.kv(KV).get(b"k").unwrap(), None);
        assert_eq!(state.committed_meta().unwrap(), None);
        drop(state);

        // Same names, another kind: wiped too.
        let mut other = specs();
        other[0].kind = StoreKind::Session;
        other[2].kind = StoreKind::Kv;
        let (_, opened) =
            TaskState::open(&env, dir.path(), "clickstream/clicks-4", &other).unwrap();
        assert!(matches!(opened, Opened::Wiped { .. }), "{opened:?}");
        // Another store list: wiped.
        let (_, opened) = open(&env, &dir);
        assert!(matches!(opened, Opened::Wiped { .. }), "{opened:?}");
        let (_, opened) = open(&env, &dir);
        assert_eq!(opened, Opened::Existing);
    }

    fn assert_wiped_and_usable(env: &StateEnv, dir: &TempDir) {
        let (mut state, opened) = open(env, dir);
        assert!(matches!(opened, Opened::Wiped { .. }), "{opened:?}");
        assert_eq!(state.kv(KV).get(b"k").unwrap(), None);
        state.kv(KV).put(b"k", b"again");
        state.commit(b"m").unwrap();
        drop(state);
        let (mut state, opened) = open(env, dir);
        assert_eq!(opened, Opened::Existing);
        assert_eq!(state.kv(KV).get(b"k").unwrap(), Some(b"again".to_vec()));
    }

    fn committed_dir(env: &StateEnv, name: &str) -> TempDir {
        let dir = TempDir::new(name).unwrap();
        let (mut state, _) = open(env, &dir);
        state.kv(KV).put(b"k", b"v");
        state.commit(b"m").unwrap();
        dir
    }

    fn files_named(dir: &TempDir, matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| matches(&path.file_name().unwrap().to_string_lossy()))
            .collect()
    }

    #[test]
    fn a_directory_with_garbage_in_current_is_wiped() {
        let env = env();
        let dir = committed_dir(&env, "corrupt-current");
        std::fs::write(dir.path().join("CURRENT"), b"\x00garbage\xff no manifest here").unwrap();
        assert_wiped_and_usable(&env, &dir);
    }

    #[test]
    fn a_directory_with_a_truncated_manifest_is_wiped() {
        let env = env();
        let dir = committed_dir(&env, "corrupt-manifest");
        let manifests = files_named(&dir, |name| name.starts_with("MANIFEST-"));
        assert!(!manifests.is_empty());
        for manifest in manifests {
            let file = std::fs::OpenOptions::new().write(true).open(manifest).unwrap();
            file.set_len(10).unwrap();
        }
        assert_wiped_and_usable(&env, &dir);
    }

    #[test]
    fn a_directory_with_a_truncated_table_file_is_wiped() {
        let env = env();
        let dir = committed_dir(&env, "corrupt-sst");
        // Reopening replays the WAL into table files.
        drop(open(&env, &dir));
        let tables = files_named(&dir, |name| name.ends_with(".sst"));
        assert!(!tables.is_empty(), "recovery wrote no table file");
        for table in tables {
            let file = std::fs::OpenOptions::new().write(true).open(table).unwrap();
            file.set_len(100).unwrap();
        }
        assert_wiped_and_usable(&env, &dir);
    }

    #[test]
    fn a_directory_in_use_is_not_wiped() {
        let env = env();
        let dir = committed_dir(&env, "locked");
        let (mut first, _) = open(&env, &dir);
        let second = TaskState::open(&env, dir.path(), "clickstream/clicks-3", &specs());
        assert!(matches!(second, Err(StateError::Locked { .. })), "{:?}", second.err());
        // Even for another identity: the lock is checked before the identity.
        let second = TaskState::open(&env, dir.path(), "other/task-0", &specs());
        assert!(matches!(second, Err(StateError::Locked { .. })), "{:?}", second.err());
        // Or another store list.
        let second = TaskState::open(&env, dir.path(), "clickstream/clicks-3", &specs()[..1]);
        assert!(matches!(second, Err(StateError::Locked { .. })), "{:?}", second.err());
        first.kv(KV).put(b"k2", b"v2");
        first.commit(b"m2").unwrap();
        // Or a directory RocksDB cannot even list.
        std::fs::write(dir.path().join("CURRENT"), b"garbage").unwrap();
        let second = TaskState::open(&env, dir.path(), "clickstream/clicks-3", &specs());
        assert!(matches!(second, Err(StateError::Locked { .. })), "{:?}", second.err());
        assert_eq!(first.kv(KV).get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(first.kv(KV).get(b"k2").unwrap(), Some(b"v2".to_vec()));
    }

    #[test]
    fn a_directory_that_is_not_rocksdb_is_left_alone() {
        let dir = TempDir::new("not-state").unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"precious").unwrap();
        std::fs::write(dir.path().join("app.log"), b"precious").unwrap();
        let opened = TaskState::open(&env(), dir.path(), "clickstream/clicks-3", &specs());
        assert!(matches!(opened, Err(StateError::NotAStateDir { .. })));
        assert!(matches!(TaskState::destroy(dir.path()), Err(StateError::NotAStateDir { .. })));
        assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"precious");
    }

    #[test]
    fn destroy_removes_the_state() {
        let env = env();
        let dir = committed_dir(&env, "destroy");
        TaskState::destroy(dir.path()).unwrap();
        assert!(!dir.path().exists());
        TaskState::destroy(dir.path()).unwrap();
        assert_eq!(open(&env, &dir).1, Opened::Fresh);
    }

    #[test]
    fn two_tasks_share_one_env() {
        let env = env();
        let (dir_a, dir_b) = (TempDir::new("share-a").unwrap(), TempDir::new("share-b").unwrap());
        let (mut a, _) = TaskState::open(&env, dir_a.path(), "app/in-0", &specs()).unwrap();
        let (mut b, _) = TaskState::open(&env.clone(), dir_b.path(), "app/in-1", &specs()).unwrap();
        let value = vec![7u8; 1_000];
        for i in 0..1_000u32 {
            a.kv(KV).put(&i.to_be_bytes(), &value);
            b.kv(KV).put(&i.to_be_bytes(), b"b");
        }
        assert!(a.approximate_bytes(KV) >= 1_000 * 1_000);
        a.commit(b"a").unwrap();
        b.commit(b"b").unwrap();
        assert!(env.memtable_usage() > 0);
        assert!(env.cache_usage() > 0);
        assert!(a.approximate_bytes(KV) > 0);
        assert_eq!(a.approximate_bytes(99), 0);
        assert_eq!(a.kv(KV).get(&5u32.to_be_bytes()).unwrap(), Some(value));
        assert_eq!(b.kv(KV).get(&5u32.to_be_bytes()).unwrap(), Some(b"b".to_vec()));
        assert_eq!(a.committed_meta().unwrap(), Some(b"a".to_vec()));
        assert_eq!(b.committed_meta().unwrap(), Some(b"b".to_vec()));
    }

    #[test]
    fn a_store_misused_fails_the_commit_not_the_process() {
        let dir = TempDir::new("misuse").unwrap();
        let (mut state, _) = open(&env(), &dir);
        state.kv(KV).put(b"k", b"v");
        let wrong = state.kv(WINDOW);
        wrong.put(b"k", b"v");
        let error = wrong.get(b"k").unwrap_err();
        assert!(
            error.to_string().contains("('clicks_5m') is a window store, not a kv store"),
            "{error}"
        );
        assert!(state.session(42).fetch(b"u").is_err());
        assert!(matches!(state.commit(b"m"), Err(StateError::Misuse(_))));
        state.abort();
        state.kv(KV).put(b"k", b"v");
        state.commit(b"m").unwrap();
        assert_eq!(state.kv(KV).get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn clashing_store_names_are_refused() {
        let dir = TempDir::new("names").unwrap();
        for stores in [
            vec![StoreSpec::new("a", StoreKind::Kv), StoreSpec::new("a", StoreKind::Kv)],
            vec![StoreSpec::new("meta", StoreKind::Kv)],
            vec![StoreSpec::new("default", StoreKind::Kv)],
            vec![
                StoreSpec::new("w", StoreKind::Window),
                StoreSpec::new("w.by-time", StoreKind::Kv),
            ],
            vec![StoreSpec::new("", StoreKind::Kv)],
        ] {
            let opened = TaskState::open(&env(), dir.path(), "app/t-0", &stores);
            assert!(matches!(opened, Err(StateError::InvalidStores(_))), "{stores:?}");
        }
        let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(written.is_empty(), "a refused store list wrote {written:?}");
    }
}
