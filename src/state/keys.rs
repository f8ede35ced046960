//! Byte layouts of window and session store keys, kept apart from RocksDB so that they can be
//! tested alone and so that the changelog (which carries primary keys) has one definition.
//!
//! Times are i64 milliseconds written big-endian with the sign bit flipped, so that byte order
//! is numeric order and negative times sort first. A user key inside a primary key is preceded
//! by its length (LEB128), so one key's entries are one contiguous range that no other key (not
//! even one that extends it, `a` versus `ab`) can interleave with.
//!
//! | layout | bytes | serves |
//! | --- | --- | --- |
//! | window primary | `len(key) key time(start)` | `get`, `fetch` (one key, a time range) |
//! | window index | `time(start) key` | `fetch_all` (a time range, every key, by (start, key)) |
//! | session primary | `len(key) key time(start) time(end)` | `find`, `fetch` (one key) |
//! | session index | `time(end) key time(start)` | `ending_before` (by end, every key) |
//!
//! Index keys need no length prefix: their time fields have a fixed width, so the user key is
//! whatever lies between them.

/// Width of an encoded time.
pub(crate) const TIME_LEN: usize = 8;

/// Encodes a time so that byte order equals numeric order.
pub(crate) fn time(t: i64) -> [u8; TIME_LEN] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// Decodes [`time`]; `None` unless `bytes` is exactly [`TIME_LEN`] long.
pub(crate) fn decode_time(bytes: &[u8]) -> Option<i64> {
    let bytes: [u8; TIME_LEN] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (`prefix` is empty or all `0xff`), which means "unbounded".
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != 0xff)?;
    let mut upper = prefix[..=last].to_vec();
    upper[last] += 1;
    Some(upper)
}

/// Appends `len(key) key` to `out`: the part of a primary key that names the user key.
pub(crate) fn push_key_prefix(out: &mut Vec<u8>, key: &[u8]) {
    let mut len = key.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(key);
}

/// `len(key) key`: every primary key of `key` starts with this.
pub(crate) fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    push_key_prefix(&mut out, key);
    out
}

/// Splits a primary key into the user key and the fixed-width time fields after it.
fn split_primary(primary: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut at = 0;
    loop {
        let byte = *primary.get(at)?;
        if at >= 10 {
            return None;
        }
        len |= u64::from(byte & 0x7f) << (7 * at);
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len)?;
    Some((primary.get(at..end)?, primary.get(end..)?))
}

/// Writes the window primary key `len(key) key time(start)` into `out` (cleared first), so a
/// hot write path can reuse one buffer.
pub(crate) fn window_primary_into(out: &mut Vec<u8>, key: &[u8], start: i64) {
    out.clear();
    push_key_prefix(out, key);
    out.extend_from_slice(&time(start));
}

/// Window primary key: `len(key) key time(start)`.
pub(crate) fn window_primary(key: &[u8], start: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + TIME_LEN);
    window_primary_into(&mut out, key, start);
    out
}

/// Writes the window index key `time(start) key` into `out` (cleared first).
pub(crate) fn window_index_into(out: &mut Vec<u8>, key: &[u8], start: i64) {
    out.clear();
    out.extend_from_slice(&time(start));
    out.extend_from_slice(key);
}

/// Decodes a window primary key into (key, start).
pub(crate) fn decode_window_primary(primary: &[u8]) -> Option<(&[u8], i64)> {
    let (key, rest) = split_primary(primary)?;
    Some((key, decode_time(rest)?))
}

/// Decodes a window index key into (key, start).
pub(crate) fn decode_window_index(index: &[u8]) -> Option<(&[u8], i64)> {
    let start = decode_time(index.get(..TIME_LEN)?)?;
    Some((&index[TIME_LEN..], start))
}

/// Writes the session primary key `len(key) key time(start) time(end)` into `out` (cleared
/// first).
pub(crate) fn session_primary_into(out: &mut Vec<u8>, key: &[u8], start: i64, end: i64) {
    out.clear();
    push_key_prefix(out, key);
    out.extend_from_slice(&time(start));
    out.extend_from_slice(&time(end));
}

/// Session primary key: `len(key) key time(start) time(end)`.
pub(crate) fn session_primary(key: &[u8], start: i64, end: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + 2 * TIME_LEN);
    session_primary_into(&mut out, key, start, end);
    out
}

/// Writes the session index key `time(end) key time(start)` into `out` (cleared first).
pub(crate) fn session_index_into(out: &mut Vec<u8>, key: &[u8], start: i64, end: i64) {
    out.clear();
    out.extend_from_slice(&time(end));
    out.extend_from_slice(key);
    out.extend_from_slice(&time(start));
}

/// Decodes a session primary key into (key, start, end).
pub(crate) fn decode_session_primary(primary: &[u8]) -> Option<(&[u8], i64, i64)> {
    let (key, rest) = split_primary(primary)?;
    if rest.len() != 2 * TIME_LEN {
        return None;
    }
    Some((key, decode_time(&rest[..TIME_LEN])?, decode_time(&rest[TIME_LEN..])?))
}

/// Decodes the (start, end) of a session primary key whose key part is already known to be
/// `prefix_len` bytes long (a scan within one key's prefix).
pub(crate) fn session_times(primary: &[u8], prefix_len: usize) -> Option<(i64, i64)> {
    let rest = primary.get(prefix_len..)?;
    if rest.len() != 2 * TIME_LEN {
        return None;
    }
    Some((decode_time(&rest[..TIME_LEN])?, decode_time(&rest[TIME_LEN..])?))
}

/// Decodes a session index key into (key, start, end).
pub(crate) fn decode_session_index(index: &[u8]) -> Option<(&[u8], i64, i64)> {
    if index.len() < 2 * TIME_LEN {
        return None;
    }
    let end = decode_time(&index[..TIME_LEN])?;
    let start = decode_time(&index[index.len() - TIME_LEN..])?;
    Some((&index[TIME_LEN..index.len() - TIME_LEN], start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_index(key: &[u8], start: i64) -> Vec<u8> {
        let mut out = Vec::new();
        window_index_into(&mut out, key, start);
        out
    }

    fn session_index(key: &[u8], start: i64, end: i64) -> Vec<u8> {
        let mut out = Vec::new();
        session_index_into(&mut out, key, start, end);
        out
    }

    #[test]
    fn time_order_is_numeric_order() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 1_000, i64::MAX];
        for pair in times.windows(2) {
            assert!(time(pair[0]) < time(pair[1]), "{pair:?}");
        }
        for t in times {
            assert_eq!(decode_time(&time(t)), Some(t));
        }
        assert_eq!(decode_time(&[0; 7]), None);
    }

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(&[]), None);
    }

    #[test]
    fn primary_keys_round_trip_and_keep_keys_apart() {
        let long = vec![7u8; 300];
        for key in [&b""[..], b"a", b"ab", &long] {
            for t in [i64::MIN, -5, 0, 5, i64::MAX] {
                let w = window_primary(key, t);
                assert!(w.starts_with(&key_prefix(key)));
                assert_eq!(decode_window_primary(&w), Some((key, t)));
                let s = session_primary(key, t, t.saturating_add(3));
                assert_eq!(decode_session_primary(&s), Some((key, t, t.saturating_add(3))));
                assert_eq!(
                    session_times(&s, key_prefix(key).len()),
                    Some((t, t.saturating_add(3)))
                );
                assert_eq!(decode_window_index(&window_index(key, t)), Some((key, t)));
                assert_eq!(decode_session_index(&session_index(key, t, 9)), Some((key, t, 9)));
            }
        }
        // "a" must not be a prefix of "ab"'s entries.
        assert!(!window_primary(b"ab", 0).starts_with(&key_prefix(b"a")));
        assert_eq!(decode_window_primary(b"\x05ab"), None);
        assert_eq!(decode_session_primary(&window_primary(b"a", 1)), None);
        assert_eq!(decode_session_index(b"short"), None);
    }
}
