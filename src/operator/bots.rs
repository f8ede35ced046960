//! `type: detect_bots` — scores each event for how likely a bot sent it, and says why.
//!
//! Every event passes through with three fields added to its value: `is_bot` (bool),
//! `bot_score` (0..=1) and `bot_reasons` (list of strings), so a filter or sink downstream can
//! route bots on their own. The score is the sum of the weights of the rules that fired, capped
//! at 1; `is_bot` is `bot_score >= threshold`. The reasons, stable strings in this order:
//!
//! | reason | weight | fires when |
//! | --- | --- | --- |
//! | `user_agent` | 1.0 | the user agent matches a crawler pattern of the rules file |
//! | `headless` | 1.0 | the user agent carries a headless/automation marker (HeadlessChrome, …) |
//! | `datacenter_ip` | 0.5 | the IP lies in a data-centre range of the ranges file |
//! | `rate_key` | 0.6 | the record key sent more than `max_per_key` events in the current window |
//! | `rate_ip` | 0.6 | the IP sent more than `max_per_ip` events in the current window |
//! | `regular_intervals` | 0.6 | the key's last `regular_min_events` intervals are too regular |
//!
//! The user-agent and IP rules are data ([`BotRules`], loaded once from files and shared by every
//! task), so the crawler list can be replaced without a rebuild. The behavioural rules keep a
//! little state per record key and per IP in one key-value store. They use event time only
//! (record timestamps), never the wall clock, so a replay after a crash reproduces the same
//! output. Rate windows are tumbling windows of event time; an event for a window older than
//! the one stored (out of order) is not counted and not judged by rate. Intervals that are not
//! positive (out-of-order or same-millisecond events) are left out of the regularity judgement.
//! Events a page sends on a timer (heartbeats, video progress pings) are clockwork by nature:
//! filter them out upstream, or their users score `regular_intervals`.
//!
//! State layout (little-endian), in the operator's key-value store:
//! - `b'k'` + the record key's [`Value::encode`] bytes → window start `i64`, count in that
//!   window `u32`, latest event time `i64`, then up to `regular_min_events` intervals `u32`
//!   (ms, oldest first). Null keys have no per-key state: they would lump unrelated events.
//! - `b'i'` + the IP text → window start `i64`, count in that window `u32`.
//!
//! Entries are never deleted: one small entry per key and per IP ever seen.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::{Context, OperatorError, Record};
use crate::spec::BotLimits;
use crate::value::{DecodeError, Value};

/// A rule of `detect_bots`: the reason string it adds and its weight in the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BotReason {
    /// `user_agent`: the user agent matches a crawler pattern.
    UserAgent,
    /// `headless`: the user agent carries a headless-browser or automation marker.
    Headless,
    /// `datacenter_ip`: the IP lies in a data-centre range.
    DatacenterIp,
    /// `rate_key`: too many events from the record key in the current window.
    RateKey,
    /// `rate_ip`: too many events from the IP in the current window.
    RateIp,
    /// `regular_intervals`: the key's events come at clockwork intervals.
    RegularIntervals,
}

impl BotReason {
    /// Every reason, in the order reasons appear in `bot_reasons`.
    pub const ALL: [BotReason; 6] = [
        BotReason::UserAgent,
        BotReason::Headless,
        BotReason::DatacenterIp,
        BotReason::RateKey,
        BotReason::RateIp,
        BotReason::RegularIntervals,
    ];

    /// The reason as it appears in `bot_reasons` (stable: downstream filters match on it).
    pub fn as_str(self) -> &'static str {
        match self {
            BotReason::UserAgent => "user_agent",
            BotReason::Headless => "headless",
            BotReason::DatacenterIp => "datacenter_ip",
            BotReason::RateKey => "rate_key",
            BotReason::RateIp => "rate_ip",
            BotReason::RegularIntervals => "regular_intervals",
        }
    }

    /// The rule's weight in the score, in tenths: scores are summed as integers so that they
    /// come out exact (0.6, not 0.6000000000000001).
    fn tenths(self) -> u32 {
        match self {
            BotReason::UserAgent | BotReason::Headless => 10,
            BotReason::DatacenterIp => 5,
            BotReason::RateKey | BotReason::RateIp | BotReason::RegularIntervals => 6,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Substrings (lowercase) that headless browsers and automation frameworks put in their user
/// agents. Built in rather than data: they name tools, not crawlers, and change rarely.
const HEADLESS_MARKERS: [&str; 12] = [
    "headless", // HeadlessChrome/…, HeadlessFirefox
    "phantomjs",
    "slimerjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
    "htmlunit",
    "casperjs",
    "nightmarejs",
    "jsdom/",
    "zombie.js",
];

/// The label of the in-memory pattern list in errors from [`BotRules::from_lines`].
const PATTERNS_LABEL: &str = "<user-agent patterns>";
/// The label of the in-memory range list in errors from [`BotRules::from_lines`].
const RANGES_LABEL: &str = "<datacenter ranges>";

/// Rules loaded from data files, shared by every task (`Arc`): the crawler user-agent
/// patterns, the headless markers and the data-centre IP ranges.
pub struct BotRules {
    /// The pattern texts, in file order.
    patterns: Vec<String>,
    /// All patterns in one alternation, each in its own named group, so a user agent is
    /// scanned once, not once per pattern; `None` when there are no patterns.
    crawlers: Option<Regex>,
    /// The capture group of each pattern in `crawlers`, by pattern index.
    groups: Vec<usize>,
    /// Data-centre IPv4 ranges as sorted, disjoint, inclusive (first, last) pairs.
    v4: Vec<(u32, u32)>,
    /// Data-centre IPv6 ranges, likewise.
    v6: Vec<(u128, u128)>,
}

impl fmt::Debug for BotRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotRules")
            .field("patterns", &self.patterns.len())
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.len())
            .finish()
    }
}

/// Why the bot rules could not be loaded: the file, the line (when one is to blame) and what is
/// wrong, e.g. `topologies/bots/user-agents.txt:12: bad user-agent pattern `(foo`: unclosed
/// group`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", location(.file, *.line))]
pub struct BotRulesError {
    /// The file (or `<user-agent patterns>` / `<datacenter ranges>` for in-memory lists).
    pub file: PathBuf,
    /// The 1-based line, when one line is to blame.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: BotRulesProblem,
}

/// What is wrong in a bot rules file.
#[derive(Debug, thiserror::Error)]
pub enum BotRulesProblem {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    Read(std::io::Error),
    /// A line is not a valid regular expression.
    #[error("bad user-agent pattern `{pattern}`: {message}")]
    BadPattern {
        /// The line's pattern.
        pattern: String,
        /// What the regex compiler said.
        message: String,
    },
    /// Each pattern compiles on its own but not all of them together (too large, or a pattern
    /// reuses a capture group name `eddy_pattern_N`).
    #[error("the user-agent patterns do not compile together: {0}")]
    Combined(String),
    /// A line is not a CIDR range.
    #[error("bad CIDR `{text}`: {message}")]
    BadCidr {
        /// The line's text.
        text: String,
        /// What is wrong with it.
        message: String,
    },
}

fn location(file: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", file.display()),
        None => file.display().to_string(),
    }
}

/// Limit on the compiled size of the combined patterns: the shipped list (1 500 patterns) needs
/// about 5 MiB; the default (10 MiB) leaves a longer list little room.
const REGEX_SIZE_LIMIT: usize = 32 << 20;
/// Limit on the lazy DFA's cache (per thread using the rules). With the default (2 MiB) a
/// thousand-odd patterns thrash it on every new user agent (~1 ms each, measured); 32 MiB keeps
/// a new user agent at ~60 µs and a known one well under 1 µs.
const DFA_SIZE_LIMIT: usize = 32 << 20;

impl BotRules {
    /// Reads the user-agent pattern file (one regex per line, `#` comments and blank lines
    /// ignored, lines trimmed) and optionally a CIDR file (IPv4 and IPv6, `#` comments). Errors
    /// name the file and line and say what is wrong (bad regex, bad CIDR).
    ///
    /// Patterns use the `regex` crate's syntax matched on bytes with ASCII semantics:
    /// case-insensitive for ASCII letters, `\w` `\d` `\s` `\b` are ASCII classes, `.` is any
    /// byte but newline. User agents are ASCII in practice, and Unicode case folding over a
    /// thousand patterns makes the automaton far larger and slower.
    pub fn load(
        user_agents: &Path,
        datacenter_ranges: Option<&Path>,
    ) -> Result<BotRules, BotRulesError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| BotRulesError {
                file: path.to_owned(),
                line: None,
                problem: BotRulesProblem::Read(source),
            })
        };
        let patterns = read(user_agents)?;
        let ranges = datacenter_ranges.map(read).transpose()?;
        let patterns: Vec<&str> = patterns.lines().collect();
        let ranges: Vec<&str> = ranges.as_deref().map_or_else(Vec::new, |r| r.lines().collect());
        Self::build(&patterns, user_agents, &ranges, datacenter_ranges.unwrap_or(Path::new("")))
    }

    /// Builds from in-memory lists, one entry per line as in the files (tests, and validation
    /// without files). Errors name `<user-agent patterns>` or `<datacenter ranges>` and the
    /// 1-based index.
    pub fn from_lines(
        user_agent_patterns: &[&str],
        cidrs: &[&str],
    ) -> Result<BotRules, BotRulesError> {
        Self::build(user_agent_patterns, Path::new(PATTERNS_LABEL), cidrs, Path::new(RANGES_LABEL))
    }

    fn build(
        pattern_lines: &[&str],
        patterns_file: &Path,
        cidr_lines: &[&str],
        cidrs_file: &Path,
    ) -> Result<BotRules, BotRulesError> {
        let mut patterns = Vec::new();
        let mut line_numbers = Vec::new();
        for (number, text) in data_lines(pattern_lines) {
            patterns.push(text.to_owned());
            line_numbers.push(number);
        }
        let (crawlers, groups) = compile(&patterns).map_err(|(index, problem)| BotRulesError {
            file: patterns_file.to_owned(),
            line: index.and_then(|index| line_numbers.get(index).copied()),
            problem,
        })?;

        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (number, text) in data_lines(cidr_lines) {
            match parse_cidr(text) {
                Ok(Cidr::V4(first, last)) => v4.push((first, last)),
                Ok(Cidr::V6(first, last)) => v6.push((first, last)),
                Err(message) => {
                    return Err(BotRulesError {
                        file: cidrs_file.to_owned(),
                        line: Some(number),
                        problem: BotRulesProblem::BadCidr { text: text.to_owned(), message },
                    });
                }
            }
        }
        Ok(BotRules { patterns, crawlers, groups, v4: merge(v4), v6: merge(v6) })
    }

    /// The number of crawler patterns.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// The first matching crawler pattern (its text) for a user agent, if any: of the patterns
    /// matching at the leftmost position in the user agent, the first in file order. For
    /// explaining a verdict; [`BotRules::is_crawler`] is cheaper.
    pub fn crawler_pattern(&self, user_agent: &str) -> Option<&str> {
        let crawlers = self.crawlers.as_ref()?;
        let mut locations = crawlers.capture_locations();
        crawlers.captures_read(&mut locations, user_agent.as_bytes())?;
        let index = self.groups.iter().position(|&group| locations.get(group).is_some())?;
        self.patterns.get(index).map(String::as_str)
    }

    /// Whether any crawler pattern matches a user agent.
    pub fn is_crawler(&self, user_agent: &str) -> bool {
        self.crawlers.as_ref().is_some_and(|crawlers| crawlers.is_match(user_agent.as_bytes()))
    }

    /// Whether the UA carries headless/automation markers (HeadlessChrome, PhantomJS, SlimerJS,
    /// Selenium, WebDriver, Puppeteer, Playwright, HtmlUnit, CasperJS, Nightmare, jsdom,
    /// Zombie.js), case-insensitively.
    pub fn is_headless(&self, user_agent: &str) -> bool {
        let lower = user_agent.to_ascii_lowercase();
        HEADLESS_MARKERS.iter().any(|marker| lower.contains(marker))
    }

    /// Whether an IP (text, IPv4 or IPv6, surrounding whitespace ignored) falls in a data-centre
    /// range. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as IPv4; text that is
    /// not an address is not in any range.
    pub fn is_datacenter(&self, ip: &str) -> bool {
        match ip.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => contains(&self.v4, u32::from(v4)),
            Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => contains(&self.v4, u32::from(v4)),
                None => contains(&self.v6, u128::from(v6)),
            },
            Err(_) => false,
        }
    }
}

/// The lines that hold data, trimmed, with their 1-based numbers: not blank, not `#` comments.
fn data_lines<'a>(lines: &'a [&'a str]) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Why the patterns do not compile, and the index of the pattern to blame (if one is).
type Culprit = (Option<usize>, BotRulesProblem);

/// The prefix of the capture group names that wrap each pattern in the combined regex.
const GROUP_PREFIX: &str = "eddy_pattern_";

/// Compiles the patterns into one alternation, `(?P<eddy_pattern_0>p0)|(?P<eddy_pattern_1>p1)|…`,
/// and returns it with each pattern's capture group. On failure, says which pattern (by index)
/// is to blame, or none when only the combination fails.
///
/// One alternation, not a `RegexSet`: the set takes seconds to build over the shipped list and
/// matches no faster. Wrapping is only sound if no pattern can reach outside its group; a
/// pattern can only do that with an unbalanced group or class or a trailing backslash, so every
/// pattern holding `(`, `)`, `[`, `]` or ending in `\` is first compiled on its own (a few dozen
/// of the shipped ones; compiling all of them alone would cost far more than the alternation).
fn compile(patterns: &[String]) -> Result<(Option<Regex>, Vec<usize>), Culprit> {
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .case_insensitive(true)
            .unicode(false)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
    };
    let bad = |index: usize, error: &regex::Error| {
        let problem = BotRulesProblem::BadPattern {
            pattern: patterns[index].clone(),
            message: regex_message(error),
        };
        (Some(index), problem)
    };
    let risky = |pattern: &str| pattern.contains(['(', ')', '[', ']']) || pattern.ends_with('\\');
    for (index, pattern) in patterns.iter().enumerate() {
        if risky(pattern) {
            build(pattern).map_err(|error| bad(index, &error))?;
        }
    }
    if patterns.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut combined = String::with_capacity(patterns.iter().map(|p| p.len() + 24).sum());
    for (index, pattern) in patterns.iter().enumerate() {
        if index > 0 {
            combined.push('|');
        }
        combined.push_str(&format!("(?P<{GROUP_PREFIX}{index}>{pattern})"));
    }
    let regex = match build(&combined) {
        Ok(regex) => regex,
        Err(combined_error) => {
            // Find the culprit by compiling each pattern alone (slow, but only on this path).
            for (index, pattern) in patterns.iter().enumerate() {
                build(pattern).map_err(|error| bad(index, &error))?;
            }
            return Err((None, BotRulesProblem::Combined(regex_message(&combined_error))));
        }
    };
    let mut groups = vec![usize::MAX; patterns.len()];
    for (group, name) in regex.capture_names().enumerate() {
        let index = name.and_then(|name| name.strip_prefix(GROUP_PREFIX));
        if let Some(slot) = index
            .and_then(|index| index.parse::<usize>().ok())
            .and_then(|index| groups.get_mut(index))
        {
            *slot = group;
        }
    }
    Ok((Some(regex), groups))
}

/// The gist of a regex error on one line: its `error: …` line when it has one.
fn regex_message(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map_or_else(|| text.trim().replace('\n', " "), str::to_owned)
}

/// A parsed CIDR range, as inclusive (first, last) addresses.
enum Cidr {
    V4(u32, u32),
    V6(u128, u128),
}

/// Parses `a.b.c.d/n`, `x:y::/n`, or a bare address (a single host). Refuses host bits set
/// under the prefix: they usually mean a typo in the address or the prefix length.
fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address.trim(), Some(prefix.trim())),
        None => (text, None),
    };
    let address: IpAddr =
        address.parse().map_err(|_| format!("`{address}` is not an IPv4 or IPv6 address"))?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => bits,
        Some(prefix) => match prefix.parse::<u32>() {
            Ok(prefix) if prefix <= bits => prefix,
            _ => return Err(format!("prefix length `{prefix}` is not a number from 0 to {bits}")),
        },
    };
    // The host part as a mask: all ones below the prefix (checked_shr: a /0 shifts by 128).
    let host = u128::MAX.checked_shr(prefix + 128 - bits).unwrap_or(0);
    let value = match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    if value & host != 0 {
        let network = match address {
            IpAddr::V4(_) => IpAddr::V4(u32::try_from(value & !host).unwrap_or(0).into()),
            IpAddr::V6(_) => IpAddr::V6((value & !host).into()),
        };
        return Err(format!(
            "host bits are set after the /{prefix} (did you mean {network}/{prefix}?)"
        ));
    }
    let last = value | host;
    Ok(match address {
        IpAddr::V4(_) => {
            // Both fit: for IPv4, value and host are below 2^32.
            let first = u32::try_from(value).unwrap_or(0);
            Cidr::V4(first, u32::try_from(last).unwrap_or(u32::MAX))
        }
        IpAddr::V6(_) => Cidr::V6(value, last),
    })
}

/// Sorts ranges and merges overlapping and adjacent ones, for binary search.
fn merge<T: Ord + Copy + From<u8> + std::ops::Add<Output = T>>(
    mut ranges: Vec<(T, T)>,
) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            // Adjacent when first == previous last + 1; previous last < first here, so no overflow.
            Some(previous) if first <= previous.1 || first == previous.1 + T::from(1) => {
                previous.1 = previous.1.max(last);
            }
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Whether `address` lies in one of the sorted, disjoint `ranges`.
fn contains<T: Ord + Copy>(ranges: &[(T, T)], address: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= address);
    after > 0 && ranges[after - 1].1 >= address
}

/// The most intervals kept per key, bounding each key's state to about 4 KiB; a larger
/// `regular_intervals.min_events` is refused by the spec reader.
pub const MAX_REGULAR_EVENTS: u32 = 1024;

/// How many distinct user agents an operator remembers verdicts for; the cache is cleared when
/// full, which is cheap and keeps memory bounded whatever the traffic.
const UA_CACHE_CAPACITY: usize = 4096;

/// The user-agent rules' verdict for one user agent.
#[derive(Clone, Copy, Debug)]
struct UaVerdict {
    crawler: bool,
    headless: bool,
}

/// Prefix of per-key state entries.
const KEY_PREFIX: u8 = b'k';
/// Prefix of per-IP state entries.
const IP_PREFIX: u8 = b'i';
/// Bytes of a per-key entry before its intervals: window start, count, latest event time.
const KEY_HEADER: usize = 8 + 4 + 8;
/// Bytes of a per-IP entry: window start, count.
const IP_STATE: usize = 8 + 4;

/// Bot scoring of each event (`type: detect_bots`).
pub struct DetectBots {
    name: String,
    store: usize,
    rules: Arc<BotRules>,
    limits: BotLimits,
    user_agent_field: String,
    ip_field: String,
    verdicts: HashMap<Box<str>, UaVerdict>,
    /// Reused buffers for a state entry's key and value.
    state_key: Vec<u8>,
    state_value: Vec<u8>,
    detected: u64,
}

impl DetectBots {
    /// A bot detector named `name`, reading the user agent and IP from the top-level string
    /// fields `user_agent_field` and `ip_field` of each value, keeping its behavioural state in
    /// key-value store `store` (`ctx.stores.kv(store)`).
    pub fn new(
        name: String,
        store: usize,
        rules: Arc<BotRules>,
        limits: BotLimits,
        user_agent_field: String,
        ip_field: String,
    ) -> Self {
        DetectBots {
            name,
            store,
            rules,
            limits,
            user_agent_field,
            ip_field,
            verdicts: HashMap::new(),
            state_key: Vec::new(),
            state_value: Vec::new(),
            detected: 0,
        }
    }

    /// Events flagged so far (for a metric).
    pub fn detected(&self) -> u64 {
        self.detected
    }

    /// Emits `record` with `is_bot`, `bot_score` and `bot_reasons` added to its value (a value
    /// that is not a map is first wrapped as `{value: …}`). A missing, null or non-string user
    /// agent or IP skips the rules that need it; a null key skips the per-key rules.
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        let Record { key, value, timestamp } = record;
        let mut fields = match value {
            Value::Map(fields) => fields,
            other => BTreeMap::from([("value".to_owned(), other)]),
        };
        let mut reasons = 0u8;
        if let Some(user_agent) = fields.get(&self.user_agent_field).and_then(Value::as_str) {
            let verdict = self.verdict(user_agent);
            if verdict.crawler {
                reasons |= BotReason::UserAgent.bit();
            }
            if verdict.headless {
                reasons |= BotReason::Headless.bit();
            }
        }
        let ip = fields.get(&self.ip_field).and_then(Value::as_str).map(str::trim);
        let ip = ip.filter(|ip| !ip.is_empty());
        if let Some(ip) = ip {
            if self.rules.is_datacenter(ip) {
                reasons |= BotReason::DatacenterIp.bit();
            }
            if self.ip_rate(ip, timestamp, ctx)? {
                reasons |= BotReason::RateIp.bit();
            }
        }
        if !key.is_null() {
            let (rate, regular) = self.key_behaviour(&key, timestamp, ctx)?;
            if rate {
                reasons |= BotReason::RateKey.bit();
            }
            if regular {
                reasons |= BotReason::RegularIntervals.bit();
            }
        }

        let fired = BotReason::ALL.iter().filter(|reason| reasons & reason.bit() != 0);
        let tenths: u32 = fired.clone().map(|reason| reason.tenths()).sum();
        let score = f64::from(tenths.min(10)) / 10.0;
        let is_bot = score >= self.limits.threshold;
        if is_bot {
            self.detected += 1;
        }
        let reasons = fired.map(|reason| Value::from(reason.as_str())).collect();
        fields.insert("is_bot".to_owned(), Value::Bool(is_bot));
        fields.insert("bot_score".to_owned(), Value::Float(score));
        fields.insert("bot_reasons".to_owned(), Value::Array(reasons));
        out.push(Record { key, value: Value::Map(fields), timestamp });
        Ok(())
    }

    /// The rules' verdict on a user agent, computed once per distinct user agent.
    fn verdict(&mut self, user_agent: &str) -> UaVerdict {
        if let Some(verdict) = self.verdicts.get(user_agent) {
            return *verdict;
        }
        let verdict = UaVerdict {
            crawler: self.rules.is_crawler(user_agent),
            headless: self.rules.is_headless(user_agent),
        };
        if self.verdicts.len() >= UA_CACHE_CAPACITY {
            self.verdicts.clear();
        }
        self.verdicts.insert(user_agent.into(), verdict);
        verdict
    }

    /// Counts the event for `ip` and says whether the IP is over its rate.
    fn ip_rate(&mut self, ip: &str, t: i64, ctx: &mut Context<'_>) -> Result<bool, OperatorError> {
        if self.limits.window_ms <= 0 {
            return Ok(false);
        }
        self.state_key.clear();
        self.state_key.push(IP_PREFIX);
        self.state_key.extend_from_slice(ip.as_bytes());
        let store = ctx.stores.kv(self.store);
        let stored = store.get(&self.state_key).map_err(OperatorError::state(&self.name))?;
        let (start, count) = match stored.as_deref() {
            None => (i64::MIN, 0),
            Some(bytes) if bytes.len() != IP_STATE => {
                return Err(self.corrupt("detect_bots IP state is not 12 bytes"));
            }
            Some(bytes) => (read_i64(bytes, 0), read_u32(bytes, 8)),
        };
        let Some((start, count)) = self.count_in_window(start, count, t) else {
            return Ok(false);
        };
        self.state_value.clear();
        self.state_value.extend_from_slice(&start.to_le_bytes());
        self.state_value.extend_from_slice(&count.to_le_bytes());
        store.put(&self.state_key, &self.state_value);
        Ok(count > self.limits.max_per_ip)
    }

    /// Counts the event for `key`, records its interval, and says whether the key is over its
    /// rate and whether its intervals are too regular.
    fn key_behaviour(
        &mut self,
        key: &Value,
        t: i64,
        ctx: &mut Context<'_>,
    ) -> Result<(bool, bool), OperatorError> {
        let keep = self.limits.regular_min_events.min(MAX_REGULAR_EVENTS) as usize;
        if self.limits.window_ms <= 0 && keep == 0 {
            return Ok((false, false));
        }
        self.state_key.clear();
        self.state_key.push(KEY_PREFIX);
        key.encode(&mut self.state_key);
        let store = ctx.stores.kv(self.store);
        let stored = store.get(&self.state_key).map_err(OperatorError::state(&self.name))?;
        let (start, count, latest, intervals) = match stored.as_deref() {
            None => (i64::MIN, 0, None, &[][..]),
            Some(bytes) if bytes.len() < KEY_HEADER => {
                return Err(self.corrupt("detect_bots key state is shorter than its header"));
            }
            Some(bytes) if !(bytes.len() - KEY_HEADER).is_multiple_of(4) => {
                return Err(self.corrupt("detect_bots key state has a partial interval"));
            }
            Some(bytes) => (
                read_i64(bytes, 0),
                read_u32(bytes, 8),
                Some(read_i64(bytes, 12)),
                &bytes[KEY_HEADER..],
            ),
        };

        let counted =
            if self.limits.window_ms > 0 { self.count_in_window(start, count, t) } else { None };
        let (start, count) = counted.unwrap_or((start, count));
        // Only a positive interval says something about timing; others are out of order or
        // simultaneous.
        let interval = match latest {
            Some(latest) if t > latest => {
                Some(u32::try_from(t.saturating_sub(latest)).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        let latest = latest.map_or(t, |latest| latest.max(t));

        self.state_value.clear();
        self.state_value.extend_from_slice(&start.to_le_bytes());
        self.state_value.extend_from_slice(&count.to_le_bytes());
        self.state_value.extend_from_slice(&latest.to_le_bytes());
        let old_keep = if interval.is_some() { keep.saturating_sub(1) } else { keep };
        let old = intervals.len() / 4;
        self.state_value.extend_from_slice(&intervals[old.saturating_sub(old_keep) * 4..]);
        if let (Some(interval), true) = (interval, keep > 0) {
            self.state_value.extend_from_slice(&interval.to_le_bytes());
        }
        store.put(&self.state_key, &self.state_value);

        let rate = counted.is_some() && count > self.limits.max_per_key;
        let regular = keep > 0 && self.too_regular(&self.state_value[KEY_HEADER..], keep);
        Ok((rate, regular))
    }

    /// The window and count after counting an event at `t` into a stored window (`start`,
    /// `count`), or `None` when the event belongs to an earlier window than the stored one (out
    /// of order) and is not counted.
    fn count_in_window(&self, start: i64, count: u32, t: i64) -> Option<(i64, u32)> {
        // Saturating: the window of a time near i64::MIN would start before it.
        let window = t.saturating_sub(t.rem_euclid(self.limits.window_ms));
        match window.cmp(&start) {
            std::cmp::Ordering::Equal => Some((start, count.saturating_add(1))),
            std::cmp::Ordering::Greater => Some((window, 1)),
            std::cmp::Ordering::Less => None,
        }
    }

    /// The error for a malformed state entry.
    fn corrupt(&self, what: &'static str) -> OperatorError {
        OperatorError::corrupt(&self.name)(DecodeError::new(what))
    }

    /// Whether the last `keep` intervals (little-endian `u32`s) vary less than the jitter limit.
    fn too_regular(&self, intervals: &[u8], keep: usize) -> bool {
        if intervals.len() / 4 < keep {
            return false;
        }
        let values = || intervals.chunks_exact(4).map(|chunk| f64::from(read_u32(chunk, 0)));
        let n = keep as f64;
        let mean = values().sum::<f64>() / n;
        if mean <= 0.0 {
            return false;
        }
        let variance = values().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        variance.sqrt() / mean < self.limits.regular_max_jitter
    }
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(buf)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StateEnv, StoreKind, StoreSpec, Stores, TaskState};
    use crate::tempdir::TempDir;

    fn crate_file(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
    }

    fn shipped_rules() -> BotRules {
        BotRules::load(
            &crate_file("topologies/bots/user-agents.txt"),
            Some(&crate_file("topologies/bots/datacenter-ranges.txt")),
        )
        .unwrap()
    }

    /// The user agents of a test data file: every line that is not blank or a `#` comment.
    fn user_agents(relative: &str) -> Vec<String> {
        let text = std::fs::read_to_string(crate_file(relative)).unwrap();
        text.lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn real_browsers_are_neither_crawlers_nor_headless() {
        let rules = shipped_rules();
        let browsers = user_agents("tests/data/user-agents/browsers.txt");
        assert!(browsers.len() >= 300, "{} browsers", browsers.len());
        for ua in &browsers {
            assert_eq!(rules.crawler_pattern(ua), None, "browser taken for a crawler: {ua}");
            assert!(!rules.is_crawler(ua), "{ua}");
            assert!(!rules.is_headless(ua), "browser taken for headless: {ua}");
        }
    }

    #[test]
    fn real_crawlers_match_a_pattern() {
        let rules = shipped_rules();
        assert!(rules.pattern_count() > 1000);
        let crawlers = user_agents("tests/data/user-agents/crawlers.txt");
        assert!(crawlers.len() >= 300, "{} crawlers", crawlers.len());
        for ua in &crawlers {
            assert!(rules.crawler_pattern(ua).is_some(), "crawler not detected: {ua}");
            assert!(rules.is_crawler(ua), "{ua}");
        }
        let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(rules.crawler_pattern(googlebot), Some("Googlebot\\/"));
        // Case-insensitive.
        assert!(rules.is_crawler("mozilla/5.0 (compatible; GOOGLEBOT/2.1)"));
    }

    #[test]
    fn crawler_pattern_names_the_leftmost_then_first_pattern() {
        let rules = BotRules::from_lines(
            &["# c", "(foo|bar)bot", "spider", "(?P<kind>x)crawl", "^curl/"],
            &[],
        )
        .unwrap();
        assert_eq!(rules.crawler_pattern("a spider and a barbot"), Some("spider"));
        assert_eq!(rules.crawler_pattern("a FooBot spider"), Some("(foo|bar)bot"));
        // Groups inside patterns do not shift the others.
        assert_eq!(rules.crawler_pattern("XCRAWL/1.0"), Some("(?P<kind>x)crawl"));
        assert_eq!(rules.crawler_pattern("curl/8.4.0"), Some("^curl/"));
        assert_eq!(rules.crawler_pattern("libcurl/8.4.0"), None);
        assert!(!rules.is_crawler("Mozilla/5.0"));

        let none = BotRules::from_lines(&[], &[]).unwrap();
        assert!(!none.is_crawler("Googlebot/2.1") && none.crawler_pattern("").is_none());
    }

    #[test]
    fn a_pattern_cannot_reach_outside_its_line() {
        // Valid when joined into one alternation, but not on its own line.
        for (patterns, line) in [(&["ok", "a)|(b"][..], 2), (&["[ab", "c]"][..], 1)] {
            let error = BotRules::from_lines(patterns, &[]).unwrap_err();
            assert_eq!(error.line, Some(line), "{error}");
            assert!(matches!(error.problem, BotRulesProblem::BadPattern { .. }), "{error}");
        }
        let error = BotRules::from_lines(&["(?P<eddy_pattern_1>a)", "b"], &[]).unwrap_err();
        assert_eq!(error.line, None);
        assert!(
            error.to_string().starts_with("<user-agent patterns>: the user-agent patterns do not"),
            "{error}"
        );
    }

    #[test]
    fn headless_and_automation_markers_are_detected() {
        let rules = BotRules::from_lines(&[], &[]).unwrap();
        // Real user agents, from the `instances` of crawler-user-agents 1.60.0 (MIT).
        for ua in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             HeadlessChrome/74.0.3729.169 Safari/537.36",
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) \
             PhantomJS/2.1.1 Safari/538.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36 Playwright/1.40.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             HeadlessChrome/120.0.0.0 Safari/537.36 Puppeteer",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36; Selenium",
        ] {
            assert!(rules.is_headless(ua), "{ua}");
            assert_eq!(rules.crawler_pattern(ua), None, "no patterns loaded");
        }
        assert!(!rules.is_headless(""));
    }

    #[test]
    fn bad_pattern_error_names_file_and_line() {
        let dir = TempDir::new("bots-patterns").unwrap();
        let path = dir.path().join("user-agents.txt");
        std::fs::write(&path, "# crawlers\n\nGooglebot\\/\n  bingbot  \n(unclosed\n").unwrap();
        let error = BotRules::load(&path, None).unwrap_err();
        assert_eq!(error.line, Some(5));
        let message = error.to_string();
        assert!(message.starts_with(&format!("{}:5: ", path.display())), "{message}");
        assert!(message.contains("bad user-agent pattern `(unclosed`"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let error = BotRules::from_lines(&["ok", "a{2,1}"], &[]).unwrap_err();
        assert_eq!(error.to_string().split(": ").next(), Some("<user-agent patterns>:2"));

        let missing = dir.path().join("missing.txt");
        let error = BotRules::load(&missing, None).unwrap_err();
        assert!(error.to_string().starts_with(&format!("{}: cannot read", missing.display())));
    }

    #[test]
    fn bad_cidr_error_names_file_and_line() {
        let dir = TempDir::new("bots-cidrs").unwrap();
        let patterns = dir.path().join("user-agents.txt");
        std::fs::write(&patterns, "bot\n").unwrap();
        let ranges = dir.path().join("ranges.txt");
        for (text, line, problem) in [
            ("# ranges\n10.0.0.0/8\n10.0.0.0/33\n", 3, "prefix length `33`"),
            ("10.0.0.0/8\n\n300.1.2.3/8\n", 3, "`300.1.2.3` is not an IPv4 or IPv6 address"),
            ("2001:db8::/129\n", 1, "prefix length `129`"),
            ("10.1.0.0/8\n", 1, "did you mean 10.0.0.0/8?"),
            ("2001:db8::1/32\n", 1, "did you mean 2001:db8::/32?"),
            ("10.0.0.0/x\n", 1, "prefix length `x`"),
        ] {
            std::fs::write(&ranges, text).unwrap();
            let error = BotRules::load(&patterns, Some(&ranges)).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{}:{line}: bad CIDR", ranges.display())),
                "{message}"
            );
            assert!(message.contains(problem), "{message}");
        }
        let error = BotRules::from_lines(&[], &["192.0.2.0/24", "bogus"]).unwrap_err();
        assert!(error.to_string().starts_with("<datacenter ranges>:2: bad CIDR `bogus`"));
    }

    #[test]
    fn datacenter_ranges_match_ipv4_and_ipv6() {
        let rules = BotRules::from_lines(
            &[],
            &[
                "# documentation ranges",
                "192.0.2.0/24",
                "198.51.100.7",
                "2001:db8::/32",
                "0.0.0.0/32",
            ],
        )
        .unwrap();
        for ip in ["192.0.2.0", "192.0.2.77", "192.0.2.255", " 198.51.100.7 ", "2001:db8::1"] {
            assert!(rules.is_datacenter(ip), "{ip}");
        }
        assert!(rules.is_datacenter("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(rules.is_datacenter("::ffff:192.0.2.9"), "IPv4-mapped IPv6 is judged as IPv4");
        assert!(rules.is_datacenter("0.0.0.0"));
        for ip in ["192.0.3.0", "192.0.1.255", "198.51.100.8", "2001:db9::", "2001:db7:ffff::1"] {
            assert!(!rules.is_datacenter(ip), "{ip}");
        }
        for ip in ["", "not an ip", "192.0.2.1:443", "::1"] {
            assert!(!rules.is_datacenter(ip), "{ip}");
        }

        // Overlapping, adjacent and whole-space ranges merge without overflow.
        let rules = BotRules::from_lines(
            &[],
            &["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16", "255.255.255.0/24", "::/0"],
        )
        .unwrap();
        assert_eq!(rules.v4, vec![(0x0a00_0000, 0x0aff_ffff), (0xffff_ff00, u32::MAX)]);
        assert!(rules.is_datacenter("10.200.3.4") && rules.is_datacenter("255.255.255.255"));
        assert!(!rules.is_datacenter("11.0.0.0"));
        assert!(rules.is_datacenter("fe80::1"));

        let shipped = shipped_rules();
        for ip in ["3.5.140.2", "34.120.0.1", "2a01:4f8:c0c:1::1", "2600:1f18:1234::1"] {
            assert!(shipped.is_datacenter(ip), "{ip}");
        }
        for ip in ["192.0.2.1", "81.2.69.142", "2001:db8::1", "2a02:1810::1"] {
            assert!(!shipped.is_datacenter(ip), "{ip}");
        }
    }

    const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                           (KHTML, like Gecko) Chrome/145.0.0.0 Safari/537.36";
    const HOME_IP: &str = "81.2.69.142";

    /// A detector over a real store in a temporary directory.
    struct Harness {
        op: DetectBots,
        state: TaskState,
        _env: StateEnv,
        _dir: TempDir,
    }

    impl Harness {
        fn new(limits: BotLimits) -> Harness {
            let dir = TempDir::new("bots").unwrap();
            let env = StateEnv::new(32 << 20);
            let stores = [StoreSpec::new("bots", StoreKind::Kv)];
            let (state, _) = TaskState::open(&env, dir.path(), "test/bots-0", &stores).unwrap();
            let rules = Arc::new(
                BotRules::from_lines(
                    &["Googlebot\\/", "^curl/"],
                    &["192.0.2.0/24", "2001:db8::/32"],
                )
                .unwrap(),
            );
            let op = DetectBots::new(
                "bots".to_owned(),
                0,
                rules,
                limits,
                "user_agent".to_owned(),
                "ip".to_owned(),
            );
            Harness { op, state, _env: env, _dir: dir }
        }

        fn try_send(
            &mut self,
            key: Value,
            value: Value,
            t: i64,
        ) -> Result<Vec<Record>, OperatorError> {
            let mut out = Vec::new();
            let mut ctx = Context { stores: &mut self.state, stream_time: t };
            self.op.process(Record { key, value, timestamp: t }, &mut ctx, &mut out)?;
            Ok(out)
        }

        /// Sends one click and returns (is_bot, score, reasons).
        fn click(&mut self, user: &str, ua: &str, ip: &str, t: i64) -> (bool, f64, Vec<String>) {
            let value = Value::from([
                ("user_agent", Value::from(ua)),
                ("ip", Value::from(ip)),
                ("page_url", Value::from("/a")),
            ]);
            let out = self.try_send(Value::from(user), value, t).unwrap();
            assert_eq!(out.len(), 1);
            verdict(&out[0])
        }
    }

    fn verdict(record: &Record) -> (bool, f64, Vec<String>) {
        let value = &record.value;
        let Some(Value::Bool(is_bot)) = value.get("is_bot") else { panic!("{value:?}") };
        let Some(Value::Float(score)) = value.get("bot_score") else { panic!("{value:?}") };
        let Some(Value::Array(reasons)) = value.get("bot_reasons") else { panic!("{value:?}") };
        let reasons = reasons.iter().map(|r| r.as_str().unwrap().to_owned()).collect();
        (*is_bot, *score, reasons)
    }

    /// Human-like gaps between clicks, in ms: seconds to a minute, never regular.
    const HUMAN_GAPS: [i64; 12] =
        [4_200, 11_800, 2_300, 35_000, 7_700, 1_900, 16_400, 5_100, 48_000, 3_300, 9_900, 2_700];

    #[test]
    fn a_browser_from_a_home_ip_with_human_timing_is_not_a_bot() {
        let mut h = Harness::new(BotLimits::default());
        let mut t = 1_700_000_000_000;
        for gap in HUMAN_GAPS {
            t += gap;
            assert_eq!(h.click("u1", BROWSER, HOME_IP, t), (false, 0.0, vec![]));
        }
        assert_eq!(h.op.detected(), 0);
    }

    #[test]
    fn user_agent_headless_and_datacenter_rules_score_and_explain() {
        let mut h = Harness::new(BotLimits::default());
        let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(
            h.click("u1", googlebot, HOME_IP, 1_000),
            (true, 1.0, vec!["user_agent".into()])
        );
        let headless = "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0 Safari/537.36";
        assert_eq!(h.click("u2", headless, HOME_IP, 1_000), (true, 1.0, vec!["headless".into()]));
        assert_eq!(
            h.click("u3", BROWSER, "192.0.2.10", 1_000),
            (true, 0.5, vec!["datacenter_ip".into()])
        );
        assert_eq!(h.click("u4", BROWSER, "2001:db8::5", 1_000).2, vec!["datacenter_ip"]);
        let both = "curl/8.0 HeadlessChrome";
        assert_eq!(
            h.click("u5", both, "192.0.2.10", 1_000),
            (true, 1.0, vec!["user_agent".into(), "headless".into(), "datacenter_ip".into()])
        );
        assert_eq!(h.op.detected(), 5);
        // The verdict cache serves a repeated user agent the same answer.
        assert_eq!(h.click("u6", googlebot, HOME_IP, 1_000).2, vec!["user_agent"]);
        assert_eq!(h.op.verdicts.len(), 4);

        // Below the threshold: flagged reasons, but not a bot.
        let mut h = Harness::new(BotLimits { threshold: 0.6, ..BotLimits::default() });
        assert_eq!(
            h.click("u1", BROWSER, "192.0.2.10", 1_000),
            (false, 0.5, vec!["datacenter_ip".into()])
        );
        assert_eq!(h.op.detected(), 0);
    }

    #[test]
    fn missing_null_or_non_string_fields_skip_their_rules() {
        let mut h = Harness::new(BotLimits::default());
        let value = Value::from([("page_url", Value::from("/a"))]);
        let out = h.try_send(Value::from("u1"), value, 1_000).unwrap();
        assert_eq!(verdict(&out[0]), (false, 0.0, vec![]));
        assert_eq!(out[0].value.get("page_url"), Some(&Value::from("/a")));
        let value = Value::from([("user_agent", Value::Null), ("ip", Value::Int(7))]);
        let out = h.try_send(Value::Null, value, 2_000).unwrap();
        assert_eq!(verdict(&out[0]), (false, 0.0, vec![]));
        // A value that is not a map is wrapped, like join does.
        let out = h.try_send(Value::from("u1"), Value::Int(5), 3_000).unwrap();
        assert_eq!(out[0].value.get("value"), Some(&Value::Int(5)));
        assert_eq!(out[0].key, Value::from("u1"));
        assert_eq!(out[0].timestamp, 3_000);
    }

    #[test]
    fn a_burst_above_max_per_key_is_flagged_only_after_the_limit() {
        let limits = BotLimits { max_per_key: 5, regular_min_events: 0, ..BotLimits::default() };
        let mut h = Harness::new(limits);
        // 5 events in the window [10 000, 20 000) pass; the 6th and 7th are over.
        for (i, t) in [10_000, 10_300, 11_000, 12_500, 13_000].into_iter().enumerate() {
            assert_eq!(h.click("u1", BROWSER, HOME_IP, t).2, Vec::<String>::new(), "event {i}");
        }
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 14_000), (true, 0.6, vec!["rate_key".into()]));
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 19_999).2, vec!["rate_key"]);
        // Another key is counted on its own.
        assert_eq!(h.click("u2", BROWSER, HOME_IP, 15_000).2, Vec::<String>::new());
        // The next window starts afresh.
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 20_000).2, Vec::<String>::new());
        assert_eq!(h.op.detected(), 2);
    }

    #[test]
    fn per_ip_rate_counts_across_keys() {
        let limits = BotLimits { max_per_ip: 3, regular_min_events: 0, ..BotLimits::default() };
        let mut h = Harness::new(limits);
        for (user, t) in [("u1", 0), ("u2", 100), ("u3", 200)] {
            assert_eq!(h.click(user, BROWSER, "203.0.113.9", t).2, Vec::<String>::new());
        }
        assert_eq!(h.click("u4", BROWSER, "203.0.113.9", 300).2, vec!["rate_ip"]);
        // Another IP, and the same IP with surrounding spaces trimmed.
        assert_eq!(h.click("u4", BROWSER, "203.0.113.10", 400).2, Vec::<String>::new());
        assert_eq!(h.click("u5", BROWSER, " 203.0.113.9 ", 500).2, vec!["rate_ip"]);
        assert_eq!(h.click("u5", BROWSER, "203.0.113.9", 10_000).2, Vec::<String>::new());
    }

    #[test]
    fn clockwork_intervals_are_flagged_after_regular_min_events() {
        let mut h = Harness::new(BotLimits::default());
        let start = 1_700_000_000_000;
        // Event 0 has no interval; events 1..=8 bring the 8 intervals needed.
        for i in 0..8 {
            let (_, _, reasons) = h.click("u1", BROWSER, HOME_IP, start + i * 1_000);
            assert!(reasons.is_empty(), "event {i}: {reasons:?}");
        }
        for i in 8..12 {
            let got = h.click("u1", BROWSER, HOME_IP, start + i * 1_000);
            assert_eq!(got, (true, 0.6, vec!["regular_intervals".into()]), "event {i}");
        }
        // A little jitter (±2 %) is still clockwork.
        let mut t = start + 100_000;
        for (i, jitter) in [0, 20, -15, 10, -20, 5, 0, -10, 15, 20].into_iter().enumerate() {
            t += 5_000 + jitter;
            let reasons = h.click("u2", BROWSER, HOME_IP, t).2;
            assert_eq!(!reasons.is_empty(), i >= 8, "event {i}: {reasons:?}");
        }
    }

    #[test]
    fn human_jittered_intervals_are_not_regular() {
        let mut h = Harness::new(BotLimits::default());
        let mut t = 0;
        for gap in HUMAN_GAPS.into_iter().chain(HUMAN_GAPS) {
            t += gap;
            assert_eq!(h.click("u1", BROWSER, HOME_IP, t).2, Vec::<String>::new());
        }
    }

    #[test]
    fn out_of_order_and_simultaneous_events_do_not_panic() {
        let limits = BotLimits { max_per_key: 3, ..BotLimits::default() };
        let mut h = Harness::new(limits);
        let times = [
            50_000,
            20_000,
            50_000,
            49_999,
            i64::MAX,
            i64::MIN,
            0,
            -5_000,
            60_000,
            59_000,
            60_000,
            i64::MAX,
            1,
        ];
        for t in times {
            h.click("u1", BROWSER, HOME_IP, t);
            h.click("u2", BROWSER, "2001:db8::1", t);
        }
        // Late events (an earlier window than the stored one) are neither counted nor judged.
        let mut h = Harness::new(limits);
        for t in [20_000, 20_001, 20_002] {
            h.click("u1", BROWSER, HOME_IP, t);
        }
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 5_000).2, Vec::<String>::new());
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 20_003).2, vec!["rate_key"]);
    }

    #[test]
    fn limits_change_between_runs_without_corrupting_state() {
        let mut h = Harness::new(BotLimits { regular_min_events: 12, ..BotLimits::default() });
        for i in 0..20 {
            h.click("u1", BROWSER, HOME_IP, i * 1_000);
        }
        // Fewer intervals kept now: the stored longer list is cut, not refused.
        h.op.limits.regular_min_events = 4;
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 20_000).2, vec!["regular_intervals"]);
        h.op.limits.regular_min_events = 30;
        assert_eq!(h.click("u1", BROWSER, HOME_IP, 21_000).2, Vec::<String>::new());
    }

    #[test]
    fn a_replay_reproduces_the_same_output() {
        let run = || {
            let mut h = Harness::new(BotLimits { max_per_key: 4, ..BotLimits::default() });
            let mut verdicts = Vec::new();
            let mut t = 0;
            for (i, gap) in HUMAN_GAPS.into_iter().chain([1_000; 12]).enumerate() {
                t += gap % 3_000;
                let ip = if i % 3 == 0 { "192.0.2.1" } else { HOME_IP };
                verdicts.push(h.click(["u1", "u2"][i % 2], BROWSER, ip, t));
            }
            verdicts
        };
        let first = run();
        assert!(first.iter().any(|(is_bot, ..)| *is_bot));
        assert_eq!(first, run());
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let mut h = Harness::new(BotLimits::default());
        let mut key = vec![KEY_PREFIX];
        Value::from("u1").encode(&mut key);
        let click =
            || Value::from([("user_agent", Value::from(BROWSER)), ("ip", Value::from(HOME_IP))]);
        for bytes in [&[1u8, 2, 3][..], &[0; KEY_HEADER + 3]] {
            h.state.kv(0).put(&key, bytes);
            let error = h.try_send(Value::from("u1"), click(), 1_000).unwrap_err();
            assert!(matches!(error, OperatorError::Corrupt { .. }), "{error}");
            assert!(error.to_string().starts_with("bots: stored value does not decode"), "{error}");
        }
        h.state.kv(0).delete(&key);
        let mut ip_key = vec![IP_PREFIX];
        ip_key.extend_from_slice(HOME_IP.as_bytes());
        h.state.kv(0).put(&ip_key, &[0; IP_STATE + 1]);
        let error = h.try_send(Value::from("u1"), click(), 1_000).unwrap_err();
        assert!(matches!(error, OperatorError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn the_verdict_cache_stays_bounded() {
        let mut h =
            Harness::new(BotLimits { window_ms: 0, regular_min_events: 0, ..BotLimits::default() });
        for i in 0..(UA_CACHE_CAPACITY + 10) {
            h.click("u1", &format!("agent/{i}"), HOME_IP, 0);
        }
        assert!(h.op.verdicts.len() <= UA_CACHE_CAPACITY);
        // Rates off: nothing stored for the key or the IP.
        assert_eq!(h.state.kv(0).range(b"", None).unwrap(), vec![]);
    }

    #[test]
    fn rules_can_be_shared_between_tasks() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<BotRules>();
        send_and_sync::<Arc<BotRules>>();
    }

    #[test]
    fn reasons_are_stable_strings() {
        let names: Vec<_> = BotReason::ALL.iter().map(|r| (r.as_str(), r.tenths())).collect();
        assert_eq!(
            names,
            [
                ("user_agent", 10),
                ("headless", 10),
                ("datacenter_ip", 5),
                ("rate_key", 6),
                ("rate_ip", 6),
                ("regular_intervals", 6),
            ]
        );
    }
}
