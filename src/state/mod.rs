//! Keyed state of a task: the store traits operators see, and their RocksDB implementation.
//!
//! Operators are synchronous and deterministic and must run the same under the broker-free test
//! driver as in production, so they see only the traits here ([`KvStore`], [`WindowStore`],
//! [`SessionStore`], handed out by [`Stores`]) and never a RocksDB type. Keys and values are
//! opaque bytes: each operator encodes its own state.
//!
//! A task's stores live in one RocksDB database ([`TaskState`], in `rocks.rs`, the only file
//! that names `rocksdb`). Writes collect in a pending write set that reads see first; each write
//! is also recorded for the changelog. The runtime takes the changelog
//! ([`TaskState::take_changelog`]), produces it, and once the broker has acknowledged it writes
//! the pending set and its own commit metadata (input offsets, changelog positions) to RocksDB
//! in one atomic batch ([`TaskState::commit`]). Local state is therefore always a prefix of
//! what the changelog holds, which is what lets a crashed or moved task be restored from the
//! changelog ([`TaskState::apply_changelog`]) and lets a damaged directory simply be wiped.

mod keys;
mod rocks;

use std::path::PathBuf;

pub use rocks::{Opened, StateEnv, TaskState};

/// Result of a state-store call.
pub type StateResult<T> = Result<T, StateError>;

/// A failure of a state store, naming the store or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// RocksDB refused an operation.
    #[error("state in {path}: {context}: RocksDB failed: {message}")]
    Rocks {
        /// The task's state directory.
        path: PathBuf,
        /// What Eddy was doing, naming the store.
        context: String,
        /// RocksDB's own message.
        message: String,
    },
    /// A file-system operation on a state directory failed.
    #[error("state in {path}: {context}: {source}")]
    Io {
        /// The directory or file involved.
        path: PathBuf,
        /// What Eddy was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The state directory is open elsewhere (another task of this process or another
    /// process); it is never wiped, since its owner is alive.
    #[error("state directory {path} is in use by another task or process: {message}")]
    Locked {
        /// The task's state directory.
        path: PathBuf,
        /// RocksDB's message about its lock file.
        message: String,
    },
    /// The directory holds files that are not a RocksDB database; Eddy refuses to delete
    /// them, since a misconfigured state directory could point anywhere.
    #[error(
        "{path} is not empty and does not look like a state directory; refusing to delete it \
         (check the state directory setting)"
    )]
    NotAStateDir {
        /// The directory.
        path: PathBuf,
    },
    /// The store list of a task cannot be laid out (duplicate or reserved names).
    #[error("invalid store list: {0}")]
    InvalidStores(String),
    /// Stored data does not decode the way this version lays it out.
    #[error("state in {path}: store '{store}' holds a malformed entry: {detail}")]
    Corrupt {
        /// The task's state directory.
        path: PathBuf,
        /// The store's name.
        store: String,
        /// What was wrong.
        detail: String,
    },
    /// A changelog entry given to restore does not fit the task's stores.
    #[error("changelog entry for store {store} cannot be applied: {detail}")]
    BadChangelog {
        /// The entry's store index (and name, when the index exists).
        store: String,
        /// What was wrong.
        detail: String,
    },
    /// An operator asked for a store by an index that does not exist or has another kind: a
    /// bug in the plan or the operator, reported instead of crashing the process.
    #[error("state store misuse: {0}")]
    Misuse(String),
}

/// The kind of a store, which decides the trait it is used through and its key layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// Key → value ([`KvStore`]).
    Kv,
    /// (key, window start) → value ([`WindowStore`]).
    Window,
    /// (key, session start, session end) → value ([`SessionStore`]).
    Session,
}

impl StoreKind {
    /// The kind's name as Eddy spells it in metadata and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Kv => "kv",
            StoreKind::Window => "window",
            StoreKind::Session => "session",
        }
    }
}

/// One store of a task, as the plan assigns it. A task addresses its stores by their index in
/// its `&[StoreSpec]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreSpec {
    /// The store's name, unique within the task; also its RocksDB column family.
    pub name: String,
    /// The store's kind.
    pub kind: StoreKind,
}

impl StoreSpec {
    /// A store spec.
    pub fn new(name: impl Into<String>, kind: StoreKind) -> StoreSpec {
        StoreSpec { name: name.into(), kind }
    }
}

/// A window of some key, as [`WindowStore::fetch_all`] returns it: (key, window start, value).
pub type KeyedWindow = (Vec<u8>, i64, Vec<u8>);

/// A session of some key, as [`SessionStore::ending_before`] returns it: (key, session start,
/// session end, value).
pub type KeyedSession = (Vec<u8>, i64, i64, Vec<u8>);

/// A key → value store.
pub trait KvStore {
    /// The value of `key`, pending writes included.
    fn get(&self, key: &[u8]) -> StateResult<Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]);
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]);
    /// Entries with from <= key < to (to None = unbounded), ascending, pending writes merged in.
    fn range(&self, from: &[u8], to: Option<&[u8]>) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Entries whose key starts with `prefix`, ascending, pending writes merged in.
    fn prefix(&self, prefix: &[u8]) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// A windowed store: one value per (key, window start in ms).
pub trait WindowStore {
    /// The value of `key`'s window starting at `start`.
    fn get(&self, key: &[u8], start: i64) -> StateResult<Option<Vec<u8>>>;
    /// Sets `key`'s window starting at `start` to `value`.
    fn put(&mut self, key: &[u8], start: i64, value: &[u8]);
    /// Removes `key`'s window starting at `start`.
    fn delete(&mut self, key: &[u8], start: i64);
    /// One key's windows with from <= start <= to, ascending by start (a query: "a key's counts
    /// over a time range").
    fn fetch(&self, key: &[u8], from: i64, to: i64) -> StateResult<Vec<(i64, Vec<u8>)>>;
    /// Every key's windows with from <= start <= to, ordered by (start, key), to close windows
    /// as stream time passes. Reads only that time range (a time-first index), never the whole
    /// store.
    fn fetch_all(&self, from: i64, to: i64) -> StateResult<Vec<KeyedWindow>>;
}

/// A session store: one value per (key, session start, session end), times in ms.
pub trait SessionStore {
    /// Sets the session (`key`, `start`, `end`) to `value`.
    fn put(&mut self, key: &[u8], start: i64, end: i64, value: &[u8]);
    /// Removes the session (`key`, `start`, `end`).
    fn delete(&mut self, key: &[u8], start: i64, end: i64);
    /// The key's sessions with end >= earliest_end and start <= latest_start (those a new event
    /// may extend or merge), ascending by start, as (start, end, value).
    fn find(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
    ) -> StateResult<Vec<(i64, i64, Vec<u8>)>>;
    /// All sessions of a key, ascending by start, as (start, end, value) (a query: "a user's
    /// sessions").
    fn fetch(&self, key: &[u8]) -> StateResult<Vec<(i64, i64, Vec<u8>)>>;
    /// Every key's sessions with end < before, ordered by (end, key, start), as (key, start,
    /// end, value), to close sessions as stream time passes. Reads only sessions ending before
    /// `before` (a time-first index), never the whole store.
    fn ending_before(&self, before: i64) -> StateResult<Vec<KeyedSession>>;
}

/// What an operator's context hands out: a task's stores, by their index in the plan's store
/// list.
///
/// The plan assigns each store index a kind, so asking for an index as another kind (or an
/// index out of range) is a bug in the plan or the operator. Implementations must not panic on
/// it: [`TaskState`] hands out a store whose reads fail with [`StateError::Misuse`] and whose
/// writes make the next commit fail, so the task fails and the process lives.
pub trait Stores {
    /// Store `store` as a key-value store.
    fn kv(&mut self, store: usize) -> &mut dyn KvStore;
    /// Store `store` as a window store.
    fn window(&mut self, store: usize) -> &mut dyn WindowStore;
    /// Store `store` as a session store.
    fn session(&mut self, store: usize) -> &mut dyn SessionStore;
}

/// One write of a store, as it goes to (and comes back from) the store's changelog topic.
///
/// For window and session stores `key` is the primary key bytes (see the key layouts in
/// `state/keys.rs`), which carry the user key and times, so restore can rebuild every layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangelogEntry {
    /// The store's index in the task's store list.
    pub store: usize,
    /// The stored key.
    pub key: Vec<u8>,
    /// The full new value; `None` is a tombstone (the key was deleted).
    pub value: Option<Vec<u8>>,
}
