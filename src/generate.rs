//! Realistic, deterministic clickstream data: the input of benchmarks, demos and load tests.
//!
//! A [`Generator`] simulates a web shop in event time. Humans arrive in sessions (a few to ~30
//! events with think times of seconds to minutes, then a rest longer than the 30-minute session
//! gap), navigate a funnel of home, search, category, product, cart and checkout pages, and
//! sometimes add to cart or buy. Crawlers and scrapers visit too, with their real user agents,
//! from a few data-centre addresses, some at perfectly regular intervals and some in fast
//! bursts; their user ids look like anyone else's, so detecting them has to come from user
//! agents and behaviour, as in production. [`Generator::products`] and
//! [`Generator::customers`] give the CDC tables the clicks refer to.
//!
//! The simulation is a discrete-event queue of active sessions and bot visits. New sessions and
//! visits start when a budget of events says so, which keeps the event-time rate at
//! `events_per_second` and the bot share at `bot_share` from the first click on: the simulation
//! starts twenty minutes before `start_ms` and drops what happens before it, so the first
//! clicks already come from a full population of sessions in progress.
//!
//! Everything is drawn from one seeded PRNG (no dependency: xoshiro256**), so one seed gives one
//! sequence on a given platform. Strings that repeat (pages, user agents) are built once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::value::Value;

/// The inactivity gap that ends a session in the reference topology.
const SESSION_GAP_MS: i64 = 30 * 60_000;
/// How long a user rests at least after a session, on top of [`SESSION_GAP_MS`] and the
/// out-of-order jitter, so sessions never merge in a sessionizer.
const REST_MARGIN_MS: i64 = 60_000;
/// How far before `start_ms` the simulation starts, so it is in steady state at `start_ms`.
const WARMUP_MS: i64 = 20 * 60_000;
/// The longest think time; well under the session gap, so a session never splits.
const MAX_THINK_MS: i64 = 10 * 60_000;
/// Share of human events that arrive late (mobile clients batch and retry).
const OUT_OF_ORDER_SHARE: f64 = 0.01;
/// Share of users who are logged-in customers.
const CUSTOMER_SHARE: f64 = 0.6;
/// Share of users whose tracker keeps a session cookie (`session_hint`).
const COOKIE_SHARE: f64 = 0.92;
/// Zipf exponent of user activity.
const USER_SKEW: f64 = 1.1;
/// Zipf exponent of page, product, category and search popularity.
const PAGE_SKEW: f64 = 1.0;
/// The shop's origin, for referrers inside the site.
const SITE: &str = "https://shop.example.com";
/// Marks a session that has not viewed a page yet.
const NO_PAGE: u32 = u32::MAX;
/// Bits of a queue key that hold the actor's slot: up to 16 million concurrent sessions and
/// visits, far more than [`MAX_EVENTS_PER_SECOND`] needs.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// The highest rate honoured (about 10 million concurrent sessions).
const MAX_EVENTS_PER_SECOND: u32 = 500_000;

/// What to generate. [`Default`] is a mid-sized shop whose population sustains its rate.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    /// Seed of every random choice: one seed, one sequence.
    pub seed: u64,
    /// Distinct human users; their activity is Zipf-skewed (s = 1.1). A user is in at most one
    /// session at a time and rests more than 30 minutes between sessions, so the population
    /// must be large enough for the rate: a user is busy over half an hour per session of ~6
    /// events, so keep `users ≥ 1000 × events_per_second` (at 500× a few sessions in a thousand
    /// already find no free user). [`GeneratorStats::crowded_sessions`] counts the sessions
    /// that broke the rules because the population was too small.
    pub users: u32,
    /// Distinct page paths (at least one home, cart, checkout, category and search page):
    /// product pages, categories and searches, each Zipf-skewed in popularity.
    pub pages: u32,
    /// Products: ids `1..=products` exist in [`Generator::products`]; product pages show the
    /// most popular of them when `pages` is too small for all.
    pub products: u32,
    /// Customers: ids `1..=customers` exist in [`Generator::customers`]; about 60% of users
    /// are logged-in customers.
    pub customers: u32,
    /// Share of events made by bots, in `0.0..=1.0`.
    pub bot_share: f64,
    /// Event time of the first event, in milliseconds since the epoch.
    pub start_ms: i64,
    /// Events per second of event time, over humans and bots together (at most 500,000).
    pub events_per_second: u32,
    /// The most a late event's time lies before the events around it; about 1% of human
    /// events are late. Zero makes event times non-decreasing.
    pub out_of_order_ms: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 1_000_000,
            pages: 2_000,
            products: 1_000,
            customers: 10_000,
            bot_share: 0.05,
            start_ms: 1_735_689_600_000, // 2025-01-01T00:00:00Z
            events_per_second: 1_000,
            out_of_order_ms: 2_000,
        }
    }
}

/// One generated click: exactly the fields of `avro/click_event.avsc`.
#[derive(Clone, Debug, PartialEq)]
pub struct Click {
    /// A UUID (v4), unique per event.
    pub event_id: String,
    /// The tracker's visitor id (`<random>.<first seen, unix seconds>`, as analytics cookies
    /// have it); bots get ids of the same shape.
    pub user_id: String,
    /// The tracker's session cookie, when the client keeps cookies.
    pub session_hint: Option<String>,
    /// Event time in milliseconds since the epoch.
    pub event_time: i64,
    /// The page's path (and query), e.g. `/products/17` or `/search?q=rain+jacket`.
    pub page_url: String,
    /// The previous page (absolute URL) or the external site the session came from.
    pub referrer: Option<String>,
    /// The client's `User-Agent` header.
    pub user_agent: String,
    /// The client's IP address (IPv4 or IPv6).
    pub ip: String,
    /// The product of a product page.
    pub product_id: Option<i64>,
    /// The logged-in customer.
    pub customer_id: Option<i64>,
    /// `page_view`, `add_to_cart` or `purchase`.
    pub event_type: String,
}

impl Click {
    /// As an Eddy value: a [`Value::Map`] with every field of `click_event.avsc`, `None` as
    /// [`Value::Null`].
    pub fn to_value(&self) -> Value {
        self.clone().into()
    }
}

impl From<Click> for Value {
    /// As [`Click::to_value`], without copying the strings.
    fn from(click: Click) -> Value {
        let text = |s: Option<String>| s.map_or(Value::Null, Value::String);
        let long = |i: Option<i64>| i.map_or(Value::Null, Value::Int);
        Value::from([
            ("event_id", Value::String(click.event_id)),
            ("user_id", Value::String(click.user_id)),
            ("session_hint", text(click.session_hint)),
            ("event_time", Value::Int(click.event_time)),
            ("page_url", Value::String(click.page_url)),
            ("referrer", text(click.referrer)),
            ("user_agent", Value::String(click.user_agent)),
            ("ip", Value::String(click.ip)),
            ("product_id", long(click.product_id)),
            ("customer_id", long(click.customer_id)),
            ("event_type", Value::String(click.event_type)),
        ])
    }
}

/// Counters of what a generator has produced, for reports and checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeneratorStats {
    /// Clicks returned so far.
    pub clicks: u64,
    /// Of those, clicks made by bots.
    pub bot_clicks: u64,
    /// Of those, clicks whose event time was moved back (late arrivals).
    pub out_of_order: u64,
    /// Human sessions started for a user who was still active or resting, because no free
    /// user was found: non-zero means `users` is too small for `events_per_second`.
    pub crowded_sessions: u64,
}

/// A deterministic, endless clickstream; see the module docs for the model.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    catalog: Catalog,
    keys: Keys,
    /// Per user: the earliest event time at which the user may start a new session.
    free_at: Vec<i64>,
    user_zipf: Zipf,
    actors: Vec<Actor>,
    vacant: Vec<u32>,
    /// Active sessions and visits by their next event time. Keys are
    /// `(event time - origin) << SLOT_BITS | slot`: one `u64` compares fast, and ties break
    /// by slot, which is deterministic.
    queue: BinaryHeap<Reverse<u64>>,
    /// Event time of key 0: the start of the warm-up.
    origin: i64,
    humans: Budget,
    bots: Budget,
    /// Event time of the last event taken from the queue.
    now: i64,
    rest_ms: i64,
    next_session: u64,
    next_bot_user: u64,
    stats: GeneratorStats,
}

impl Generator {
    /// A generator for `config`, already in steady state at `config.start_ms`.
    pub fn new(config: GeneratorConfig) -> Generator {
        let mut rng = Rng::new(config.seed);
        let mut key_state = config.seed ^ 0x5eed_c11c_5eed_c11c;
        let keys = Keys {
            users: splitmix64(&mut key_state),
            ids: splitmix64(&mut key_state),
            products: splitmix64(&mut key_state),
            customers: splitmix64(&mut key_state),
        };
        let catalog = Catalog::new(&config, &keys, &mut rng);
        let users = config.users.max(1);
        let rate = f64::from(config.events_per_second.clamp(1, MAX_EVENTS_PER_SECOND)) / 1000.0;
        let bot_share = config.bot_share.clamp(0.0, 1.0);
        let origin = config.start_ms - WARMUP_MS;
        let mut generator = Generator {
            rng,
            catalog,
            keys,
            free_at: vec![i64::MIN; users as usize],
            user_zipf: Zipf::new(u64::from(users), USER_SKEW),
            actors: Vec::new(),
            vacant: Vec::new(),
            queue: BinaryHeap::new(),
            origin,
            humans: Budget::new(origin, rate * (1.0 - bot_share)),
            bots: Budget::new(origin, rate * bot_share),
            now: config.start_ms,
            rest_ms: SESSION_GAP_MS + REST_MARGIN_MS + config.out_of_order_ms.max(0),
            next_session: 0,
            next_bot_user: 0,
            stats: GeneratorStats::default(),
            config,
        };
        loop {
            let human = generator.humans.due();
            let bot = generator.bots.due();
            if human.min(bot) >= generator.config.start_ms {
                break;
            }
            if human <= bot {
                generator.start_session(human);
            } else {
                generator.start_visit(bot);
            }
        }
        generator
    }

    /// The configuration this generator runs.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// What has been generated so far.
    pub fn stats(&self) -> &GeneratorStats {
        &self.stats
    }

    /// The next click (endless, deterministic for a seed).
    pub fn next_click(&mut self) -> Click {
        let (slot, event) = self.next_slot();
        let click = self.build(slot, &event);
        if self.finish(slot, &event) {
            self.enqueue(slot);
        }
        click
    }

    /// Rows of the products table: `(id, value)` with the fields of `avro/product.avsc`.
    pub fn products(&self) -> Vec<(i64, Value)> {
        (1..=i64::from(self.config.products))
            .map(|id| {
                let category = self.catalog.category_of_product(id);
                let (name, price_cents) = product_details(self.keys.products, id, category);
                let row = Value::from([
                    ("id", Value::Int(id)),
                    ("name", Value::String(name)),
                    ("category", Value::from(category.slug)),
                    ("price_cents", Value::Int(price_cents)),
                ]);
                (id, row)
            })
            .collect()
    }

    /// Rows of the customers table: `(id, value)` with the fields of `avro/customer.avsc`.
    pub fn customers(&self) -> Vec<(i64, Value)> {
        (1..=i64::from(self.config.customers))
            .map(|id| {
                let mut rng = Rng::new(hash(self.keys.customers, id as u64));
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[rng.below_usize(FIRST_NAMES.len())],
                    LAST_NAMES[rng.below_usize(LAST_NAMES.len())]
                );
                let row = Value::from([
                    ("id", Value::Int(id)),
                    ("name", Value::String(name)),
                    ("tier", Value::from(*pick(&TIERS, &mut rng))),
                    ("country", Value::from(*pick(&COUNTRIES, &mut rng))),
                ]);
                (id, row)
            })
            .collect()
    }

    /// The next click and who made it (for tests of the model).
    #[cfg(test)]
    fn next_event(&mut self) -> (Click, Origin) {
        let (slot, event) = self.next_slot();
        let click = self.build(slot, &event);
        let origin = match &self.actors[slot as usize] {
            Actor::Human(session) => {
                Origin { bot: false, user: session.user, session: session.serial }
            }
            Actor::Bot(_) => Origin { bot: true, user: u32::MAX, session: u64::MAX },
        };
        if self.finish(slot, &event) {
            self.enqueue(slot);
        }
        (click, origin)
    }

    /// Starts what is due and runs the next event in event-time order: its actor's slot and
    /// what it did. The caller builds the click (or not) and then calls [`Generator::finish`].
    fn next_slot(&mut self) -> (u32, Event) {
        loop {
            let next = self.queue.peek().map_or(i64::MAX, |&Reverse(key)| self.key_time(key));
            let human = self.humans.due();
            let bot = self.bots.due();
            if human != i64::MAX && human <= next && human <= bot {
                self.start_session(human.max(self.now));
                continue;
            }
            if bot != i64::MAX && bot <= next {
                self.start_visit(bot.max(self.now));
                continue;
            }
            let Some(Reverse(key)) = self.queue.pop() else {
                continue;
            };
            self.now = self.key_time(key);
            let slot = (key & SLOT_MASK) as u32;
            return (slot, self.advance(slot));
        }
    }

    /// Starts a human session at `time`, for a user free to start one.
    fn start_session(&mut self, time: i64) {
        let user = self.pick_user(time);
        self.free_at[user as usize] = i64::MAX;
        let mut profile = Rng::new(hash(self.keys.users, u64::from(user)));
        let agent = pick_index(&HUMAN_AGENTS, &mut profile) as u8;
        let customer_id = (self.config.customers > 0 && profile.chance(CUSTOMER_SHARE))
            .then(|| 1 + profile.below(u64::from(self.config.customers)) as i64);
        let cookies = profile.chance(COOKIE_SHARE);

        let rng = &mut self.rng;
        let loyal = u64::from(user) * 100 < self.free_at.len() as u64;
        let remaining = session_length(loyal, rng);
        self.humans.commit(u32::from(remaining));
        let session = Session {
            user,
            serial: self.next_session,
            user_id: Inline::default(),
            ip: Inline::default(),
            agent,
            customer_id,
            cookies,
            hint: None,
            next_time: time,
            next: *pick(&LANDING_STEPS, rng),
            remaining,
            page: NO_PAGE,
            at: Step::Home,
            category: 0,
            referrer: match pick_index(&LANDING_REFERRERS, rng) {
                0 => Referrer::None,
                i => Referrer::External(i as u8),
            },
        };
        self.next_session += 1;
        let slot = self.place(Actor::Human(session));
        self.catch_up(slot);
    }

    /// Starts a bot visit at `time`.
    fn start_visit(&mut self, time: i64) {
        let rng = &mut self.rng;
        let kind = pick_index_by(&BOT_KINDS, |kind| kind.weight, rng) as u8;
        let spec = &BOT_KINDS[kind as usize];
        let remaining = rng.range(i64::from(spec.visit.0), i64::from(spec.visit.1)) as u32;
        self.bots.commit(remaining);
        let (user_id, hint) = match spec.ids {
            BotIds::PerVisit => {
                let index = u64::from(self.config.users.max(1)) + self.next_bot_user;
                self.next_bot_user += 1;
                let id = client_id(self.keys.ids, index, time, rng);
                (Some(id), Some(uuid_v4(rng)))
            }
            BotIds::PerRequest => (None, None),
        };
        let products = self.catalog.product_pages.len().max(1);
        let visit = Visit {
            kind,
            user_id,
            hint,
            ip: rng.below_usize(spec.ips.len()) as u8,
            next_time: time,
            remaining,
            burst_left: match spec.pace {
                Pace::Bursts { length, .. } => rng.range(length.0, length.1) as u32,
                _ => 0,
            },
            cursor: 0,
            start: rng.below_usize(products) as u32,
            watched: rng.range(3, 8) as u32,
        };
        let slot = self.place(Actor::Bot(visit));
        self.catch_up(slot);
    }

    /// Runs a new actor's events before `start_ms` without emitting them, then queues it.
    fn catch_up(&mut self, slot: u32) {
        loop {
            if self.actors[slot as usize].next_time() >= self.config.start_ms {
                if let Actor::Human(session) = &mut self.actors[slot as usize] {
                    // Built only now: most sessions of the warm-up never emit.
                    let mut profile =
                        Rng::new(hash(self.keys.users ^ 0x1d, u64::from(session.user)));
                    let index = u64::from(session.user);
                    let user_id =
                        client_id(self.keys.ids, index, self.config.start_ms, &mut profile);
                    session.user_id = Inline::new(&user_id);
                    session.ip = Inline::new(&human_ip(&mut profile));
                    session.hint =
                        session.cookies.then(|| Inline { bytes: uuid_bytes(&mut self.rng) });
                }
                self.enqueue(slot);
                return;
            }
            let event = self.advance(slot);
            if !self.finish(slot, &event) {
                return;
            }
        }
    }

    /// A Zipf-distributed user who is free at `time`. The most active users are often busy
    /// (a session or its rest takes over half an hour), so after a few tries any free user
    /// will do; when even those are hard to find, the population is too small for the rate and
    /// the user of those tried who rests the shortest starts a session anyway, counted as
    /// crowded (its rest is cut short, or sessions of one user overlap).
    fn pick_user(&mut self, time: i64) -> u32 {
        for _ in 0..4 {
            let user = self.user_zipf.sample(&mut self.rng);
            if self.free_at[user] <= time {
                return user as u32;
            }
        }
        let users = self.free_at.len();
        let mut soonest = self.rng.below_usize(users);
        for _ in 0..16 {
            let user = self.rng.below_usize(users);
            if self.free_at[user] <= time {
                return user as u32;
            }
            if self.free_at[user] < self.free_at[soonest] {
                soonest = user;
            }
        }
        self.stats.crowded_sessions += 1;
        soonest as u32
    }

    fn place(&mut self, actor: Actor) -> u32 {
        match self.vacant.pop() {
            Some(slot) => {
                self.actors[slot as usize] = actor;
                slot
            }
            None => {
                self.actors.push(actor);
                (self.actors.len() - 1) as u32
            }
        }
    }

    fn enqueue(&mut self, slot: u32) {
        let time = self.actors[slot as usize].next_time();
        debug_assert!(time >= self.origin && u64::from(slot) <= SLOT_MASK);
        self.queue.push(Reverse(((time - self.origin) as u64) << SLOT_BITS | u64::from(slot)));
    }

    fn key_time(&self, key: u64) -> i64 {
        self.origin + (key >> SLOT_BITS) as i64
    }

    /// Runs the next event of the actor in `slot` and schedules the one after it.
    fn advance(&mut self, slot: u32) -> Event {
        match &mut self.actors[slot as usize] {
            Actor::Human(session) => session.advance(&mut self.rng, &self.catalog),
            Actor::Bot(visit) => {
                let time = visit.next_time;
                let spec = &BOT_KINDS[visit.kind as usize];
                let page = visit.advance(spec, &mut self.rng, &self.catalog);
                let ended = visit.remaining == 0;
                Event {
                    time,
                    page,
                    event_type: EventType::PageView,
                    referrer: Referrer::None,
                    ended,
                }
            }
        }
    }

    /// After an event: whether its actor has more (the caller queues it again), or else
    /// retires it.
    fn finish(&mut self, slot: u32, event: &Event) -> bool {
        if !event.ended {
            return true;
        }
        if let Actor::Human(session) = &self.actors[slot as usize] {
            self.free_at[session.user as usize] = event.time + self.rest_ms;
            self.humans.refund(u32::from(session.remaining));
        }
        self.vacant.push(slot);
        false
    }

    /// The click of an event (which `slot`'s actor just made).
    fn build(&mut self, slot: u32, event: &Event) -> Click {
        let catalog = &self.catalog;
        let rng = &mut self.rng;
        self.stats.clicks += 1;
        match &self.actors[slot as usize] {
            Actor::Human(session) => {
                let mut event_time = event.time;
                if self.config.out_of_order_ms > 0 && rng.chance(OUT_OF_ORDER_SHARE) {
                    event_time -= 1 + rng.below(self.config.out_of_order_ms as u64) as i64;
                    self.stats.out_of_order += 1;
                }
                let page = &catalog.pages[event.page as usize];
                Click {
                    event_id: uuid_v4(rng),
                    user_id: session.user_id.string(),
                    session_hint: session.hint.as_ref().map(Inline::string),
                    event_time,
                    page_url: page.path.clone(),
                    referrer: match event.referrer {
                        Referrer::None => None,
                        Referrer::External(i) => LANDING_REFERRERS[i as usize].0.map(str::to_owned),
                        Referrer::Page(p) => Some(catalog.pages[p as usize].url.clone()),
                    },
                    user_agent: HUMAN_AGENTS[session.agent as usize].0.to_owned(),
                    ip: session.ip.string(),
                    product_id: page.product_id,
                    customer_id: session.customer_id,
                    event_type: event.event_type.as_str().to_owned(),
                }
            }
            Actor::Bot(visit) => {
                let time = event.time;
                self.stats.bot_clicks += 1;
                let spec = &BOT_KINDS[visit.kind as usize];
                let user_id = match &visit.user_id {
                    Some(id) => id.clone(),
                    None => {
                        let index = u64::from(self.config.users.max(1)) + self.next_bot_user;
                        self.next_bot_user += 1;
                        client_id(self.keys.ids, index, time, rng)
                    }
                };
                let page = &catalog.pages[event.page as usize];
                Click {
                    event_id: uuid_v4(rng),
                    user_id,
                    session_hint: visit.hint.clone(),
                    event_time: time,
                    page_url: page.path.clone(),
                    referrer: None,
                    user_agent: spec.agent.to_owned(),
                    ip: spec.ips[visit.ip as usize].to_owned(),
                    product_id: page.product_id,
                    customer_id: None,
                    event_type: EventType::PageView.as_str().to_owned(),
                }
            }
        }
    }
}

impl Iterator for Generator {
    type Item = Click;

    /// Always `Some`: the stream is endless.
    fn next(&mut self) -> Option<Click> {
        Some(self.next_click())
    }
}

/// Who made a click: the generator's own marker, never visible in the click itself (read by
/// the tests of the model).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
struct Origin {
    bot: bool,
    /// The human user's index (rank of activity), `u32::MAX` for bots.
    user: u32,
    /// The human session's serial number, `u64::MAX` for bots.
    session: u64,
}

/// Keys of the hashes that derive stable per-entity attributes.
#[derive(Debug)]
struct Keys {
    users: u64,
    ids: u64,
    products: u64,
    customers: u64,
}

/// Spreads the start of sessions (or visits) so their events add up to a rate: every started
/// session commits its events, and the next may start when the rate has paid for them.
#[derive(Debug)]
struct Budget {
    origin: i64,
    /// Events per millisecond.
    rate: f64,
    committed: f64,
}

impl Budget {
    fn new(origin: i64, rate: f64) -> Budget {
        Budget { origin, rate, committed: 0.0 }
    }

    /// When the next session may start (`i64::MAX` for a zero rate).
    fn due(&self) -> i64 {
        if self.rate <= 0.0 {
            return i64::MAX;
        }
        self.origin + (self.committed / self.rate).ceil() as i64
    }

    fn commit(&mut self, events: u32) {
        self.committed += f64::from(events);
    }

    /// Gives back events a session committed but did not make (it ended early).
    fn refund(&mut self, events: u32) {
        self.committed -= f64::from(events);
    }
}

#[derive(Debug)]
enum Actor {
    Human(Session),
    Bot(Visit),
}

impl Actor {
    fn next_time(&self) -> i64 {
        match self {
            Actor::Human(session) => session.next_time,
            Actor::Bot(visit) => visit.next_time,
        }
    }
}

/// Steps of the shop's funnel: the kind of page a session goes to next, or an interaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Home,
    Search,
    Category,
    Product,
    Cart,
    Checkout,
    AddToCart,
    Purchase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    PageView,
    AddToCart,
    Purchase,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Referrer {
    None,
    /// An index into [`LANDING_REFERRERS`].
    External(u8),
    /// A page of the site.
    Page(u32),
}

/// One human session in progress.
#[derive(Debug)]
struct Session {
    user: u32,
    /// The session's number in start order, for tests that follow sessions.
    #[cfg_attr(not(test), allow(dead_code))]
    serial: u64,
    /// Empty until the session reaches `start_ms` (see [`Generator::catch_up`]). Inline, as
    /// are `ip` and `hint`, so a session's strings share its cache lines.
    user_id: Inline<24>,
    ip: Inline<40>,
    agent: u8,
    customer_id: Option<i64>,
    cookies: bool,
    hint: Option<Inline<36>>,
    next_time: i64,
    next: Step,
    remaining: u16,
    /// The page last viewed ([`NO_PAGE`] before the first), its kind and category.
    page: u32,
    at: Step,
    category: u8,
    /// The referrer of the page last viewed (before the first: how the session came in).
    referrer: Referrer,
}

/// What an actor (session or visit) did at one event.
struct Event {
    time: i64,
    page: u32,
    event_type: EventType,
    referrer: Referrer,
    ended: bool,
}

impl Session {
    /// Makes the next event and schedules the one after it.
    fn advance(&mut self, rng: &mut Rng, catalog: &Catalog) -> Event {
        use EventType::{AddToCart, PageView, Purchase};
        let time = self.next_time;
        let (page, kind, event) = match self.next {
            Step::Home => (catalog.home, Step::Home, PageView),
            Step::Cart => (catalog.cart, Step::Cart, PageView),
            Step::Checkout => (catalog.checkout, Step::Checkout, PageView),
            Step::Purchase => (catalog.checkout, Step::Checkout, Purchase),
            Step::Search => (catalog.pick_search(rng), Step::Search, PageView),
            Step::Category => {
                let category = catalog.category_zipf.sample(rng);
                self.category = category as u8;
                (catalog.category_pages[category], Step::Category, PageView)
            }
            Step::Product => {
                let within = match self.at {
                    Step::Category => Some(self.category),
                    Step::Product if rng.chance(0.5) => Some(self.category),
                    _ => None,
                };
                // A related product, not the one on screen (once more if it is).
                let mut choice = catalog.pick_product(within, rng);
                if choice == Some(self.page) {
                    choice = catalog.pick_product(within, rng);
                }
                match choice {
                    Some(page) => {
                        self.category = catalog.pages[page as usize].category;
                        (page, Step::Product, PageView)
                    }
                    None => (catalog.home, Step::Home, PageView),
                }
            }
            Step::AddToCart if self.at == Step::Product => (self.page, Step::Product, AddToCart),
            Step::AddToCart => (catalog.cart, Step::Cart, PageView),
        };
        let referrer = if event != PageView || self.page == NO_PAGE {
            self.referrer
        } else if rng.chance(0.9) {
            Referrer::Page(self.page)
        } else {
            Referrer::None
        };
        if event == PageView {
            self.page = page;
            self.at = kind;
            self.referrer = referrer;
        }
        self.remaining = self.remaining.saturating_sub(1);
        let ended = self.remaining == 0 || event == Purchase;
        if !ended {
            let from = if event == AddToCart { Step::AddToCart } else { kind };
            self.next = *pick(transitions(from), rng);
            self.next_time = time + think_ms(self.next, rng);
        }
        Event { time, page, event_type: event, referrer, ended }
    }
}

/// Where a session goes after a page (or interaction), with weights.
fn transitions(from: Step) -> &'static [(Step, u32)] {
    use Step::*;
    match from {
        Home => &[(Category, 30), (Search, 30), (Product, 30), (Home, 5), (Cart, 5)],
        Search => &[(Product, 60), (Search, 25), (Category, 8), (Home, 5), (Cart, 2)],
        Category => &[(Product, 62), (Category, 15), (Search, 10), (Home, 8), (Cart, 5)],
        Product => {
            &[(Product, 38), (AddToCart, 14), (Category, 18), (Search, 16), (Home, 7), (Cart, 7)]
        }
        AddToCart => &[(Cart, 45), (Product, 35), (Category, 10), (Search, 10)],
        Cart => &[(Checkout, 35), (Product, 35), (Home, 12), (Search, 12), (Cart, 6)],
        Checkout => &[(Purchase, 45), (Cart, 30), (Home, 25)],
        Purchase => &[(Home, 1)],
    }
}

/// Where sessions come in: the home page, or deep links from search engines and social media.
const LANDING_STEPS: [(Step, u32); 5] = [
    (Step::Home, 38),
    (Step::Product, 27),
    (Step::Category, 18),
    (Step::Search, 15),
    (Step::Cart, 2),
];

/// How sessions come in; index 0 (direct, or a stripped referrer) must stay `None`.
const LANDING_REFERRERS: [(Option<&str>, u32); 12] = [
    (None, 31),
    (Some("https://www.google.com/"), 38),
    (Some("https://www.bing.com/"), 5),
    (Some("https://duckduckgo.com/"), 4),
    (Some("https://www.facebook.com/"), 5),
    (Some("https://l.instagram.com/"), 4),
    (Some("https://www.pinterest.com/"), 3),
    (Some("android-app://com.google.android.gm/"), 3),
    (Some("https://t.co/"), 2),
    (Some("https://www.youtube.com/"), 2),
    (Some("https://www.reddit.com/"), 2),
    (Some("https://www.ecosia.org/"), 1),
];

/// Events in a session: 30% bounce after one page, the rest a few to 30. The most active
/// users (`loyal`: the top 1% by rank) bounce less and browse deeper, as regulars do.
fn session_length(loyal: bool, rng: &mut Rng) -> u16 {
    let (bounce, median) = if loyal { (0.1, 10.0) } else { (0.3, 4.0) };
    if rng.chance(bounce) { 1 } else { (2.0 + rng.lognormal(median, 0.8)).min(30.0) as u16 }
}

/// Time before the next step: reading a page (lognormal, median 12 s), a quick click on
/// "add to cart", or filling in the checkout form.
fn think_ms(next: Step, rng: &mut Rng) -> i64 {
    let ms = match next {
        Step::AddToCart => rng.range(2_000, 25_000) as f64,
        Step::Purchase => rng.lognormal(40_000.0, 0.6),
        _ => rng.lognormal(12_000.0, 1.0),
    };
    (ms as i64).clamp(1_000, MAX_THINK_MS)
}

/// One bot visit in progress.
#[derive(Debug)]
struct Visit {
    kind: u8,
    /// The id a bot keeps for the visit (it keeps cookies); `None`: a new id per request.
    user_id: Option<String>,
    hint: Option<String>,
    ip: u8,
    next_time: i64,
    remaining: u32,
    burst_left: u32,
    cursor: u32,
    /// First product page (by rank) of a sequential walk or a watch list.
    start: u32,
    /// Length of a watch list.
    watched: u32,
}

impl Visit {
    /// Makes the next request (returning its page) and schedules the one after it.
    fn advance(&mut self, spec: &BotKind, rng: &mut Rng, catalog: &Catalog) -> u32 {
        let products = &catalog.product_pages;
        let page = match spec.walk {
            Walk::Sequential if !products.is_empty() => {
                products[(self.start + self.cursor) as usize % products.len()]
            }
            Walk::Watch if !products.is_empty() => {
                products[(self.start + self.cursor % self.watched) as usize % products.len()]
            }
            _ => rng.below_usize(catalog.pages.len()) as u32,
        };
        self.cursor = self.cursor.wrapping_add(1);
        self.remaining -= 1;
        self.next_time += match spec.pace {
            Pace::Every(ms) => ms,
            Pace::Around(ms) => rng.range(ms / 2, ms * 3 / 2),
            Pace::Bursts { gap, length, pause } => {
                if self.burst_left > 1 {
                    self.burst_left -= 1;
                    rng.range(gap.0, gap.1)
                } else {
                    self.burst_left = rng.range(length.0, length.1) as u32;
                    rng.range(pause.0, pause.1)
                }
            }
        };
        page
    }
}

/// How a bot spaces its requests, in milliseconds.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// Exactly this often: a script on a timer.
    Every(i64),
    /// Uniformly between half and one and a half times this: a polite crawler.
    Around(i64),
    /// Bursts of `length` requests `gap` apart, then a `pause`.
    Bursts { gap: (i64, i64), length: (i64, i64), pause: (i64, i64) },
}

/// Which pages a bot requests.
#[derive(Clone, Copy, Debug)]
enum Walk {
    /// Any page, regardless of popularity: a crawler.
    Uniform,
    /// Product pages one after another: a catalogue scraper.
    Sequential,
    /// The same few product pages over and over: a price monitor.
    Watch,
}

#[derive(Clone, Copy, Debug)]
enum BotIds {
    /// No cookies: the tracker assigns a new visitor id to every request.
    PerRequest,
    /// Keeps its cookies for the visit.
    PerVisit,
}

#[derive(Debug)]
struct BotKind {
    agent: &'static str,
    /// A few addresses from the operator's published (or cloud) ranges.
    ips: &'static [&'static str],
    pace: Pace,
    ids: BotIds,
    walk: Walk,
    /// Requests per visit (inclusive range).
    visit: (u32, u32),
    /// How often this kind starts a visit, relative to the others.
    weight: u32,
}

const GOOGLEBOT_IPS: &[&str] = &["66.249.66.1", "66.249.66.87", "66.249.68.4", "66.249.79.34"];

const BOT_KINDS: [BotKind; 12] = [
    BotKind {
        agent: "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 \
                (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; \
                Googlebot/2.1; +http://www.google.com/bot.html)",
        ips: GOOGLEBOT_IPS,
        pace: Pace::Around(1_500),
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (20, 300),
        weight: 14,
    },
    BotKind {
        agent: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ips: GOOGLEBOT_IPS,
        pace: Pace::Around(2_500),
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (10, 200),
        weight: 8,
    },
    BotKind {
        agent: "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; \
                +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        ips: &["40.77.167.12", "157.55.39.200", "207.46.13.91"],
        pace: Pace::Around(2_000),
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (20, 250),
        weight: 10,
    },
    BotKind {
        agent: "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        ips: &["5.255.231.61", "213.180.203.112", "87.250.224.153"],
        pace: Pace::Around(3_000),
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (10, 150),
        weight: 4,
    },
    BotKind {
        agent: "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        ips: &["54.36.148.27", "54.36.149.88", "51.222.253.9"],
        pace: Pace::Bursts { gap: (40, 250), length: (10, 60), pause: (3_000, 30_000) },
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (50, 400),
        weight: 9,
    },
    BotKind {
        agent: "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        ips: &["185.191.171.5", "185.191.171.14", "185.191.171.18"],
        pace: Pace::Bursts { gap: (80, 400), length: (5, 40), pause: (5_000, 45_000) },
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (30, 300),
        weight: 7,
    },
    BotKind {
        agent: "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; \
                +https://openai.com/gptbot)",
        ips: &["20.171.207.130", "20.171.206.44", "52.230.152.10"],
        pace: Pace::Bursts { gap: (20, 120), length: (20, 100), pause: (2_000, 20_000) },
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (50, 500),
        weight: 8,
    },
    BotKind {
        agent: "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        ips: &["69.63.189.12", "173.252.127.2", "31.13.115.7"],
        pace: Pace::Bursts { gap: (5, 60), length: (1, 4), pause: (20_000, 120_000) },
        ids: BotIds::PerRequest,
        walk: Walk::Uniform,
        visit: (2, 12),
        weight: 4,
    },
    BotKind {
        agent: "curl/8.5.0",
        ips: &["3.120.181.40", "3.8.14.211"],
        pace: Pace::Every(1_000),
        ids: BotIds::PerRequest,
        walk: Walk::Watch,
        visit: (120, 900),
        weight: 6,
    },
    BotKind {
        agent: "python-requests/2.32.3",
        ips: &["34.141.72.9", "34.90.112.33", "35.204.17.250"],
        pace: Pace::Every(500),
        ids: BotIds::PerVisit,
        walk: Walk::Sequential,
        visit: (100, 600),
        weight: 9,
    },
    BotKind {
        agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                HeadlessChrome/131.0.6778.85 Safari/537.36",
        ips: &["34.118.2.77", "3.250.9.120", "18.197.44.5"],
        pace: Pace::Every(1_000),
        ids: BotIds::PerVisit,
        walk: Walk::Sequential,
        visit: (60, 600),
        weight: 8,
    },
    // A scraper that claims to be Chrome on Windows: only its behaviour and address give it
    // away.
    BotKind {
        agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                Chrome/131.0.0.0 Safari/537.36",
        ips: &["34.89.5.101", "3.71.80.2"],
        pace: Pace::Every(3_000),
        ids: BotIds::PerVisit,
        walk: Walk::Sequential,
        visit: (40, 300),
        weight: 6,
    },
];

/// Browsers of human visitors, weighted roughly as in 2025 web traffic.
const HUMAN_AGENTS: [(&str, u32); 14] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Safari/537.36",
        25,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Mobile Safari/537.36",
        18,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, \
         like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        17,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Safari/537.36",
        8,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        7,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like \
         Gecko) Version/18.1 Safari/605.1.15",
        6,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", 4),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like \
         Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        4,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, \
         like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
        3,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
         Version/18.1 Mobile/15E148 Safari/604.1",
        3,
    ),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0", 2),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/131.0.0.0 Safari/537.36",
        1,
    ),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 1),
    ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", 1),
];

/// First octets of consumer ISP ranges (no cloud providers: those are for bots).
const ISP_OCTETS: [u8; 40] = [
    24, 37, 46, 62, 67, 68, 71, 73, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 88, 89, 90, 91, 92,
    93, 94, 95, 97, 98, 99, 108, 109, 151, 174, 176, 178, 188, 189, 190, 217,
];

/// Consumer ISP IPv6 prefixes (Vodafone DE, Orange FR, AT&T, Deutsche Telekom, BT, Comcast).
const ISP_V6_PREFIXES: [&str; 6] =
    ["2a02:810d", "2a01:cb00", "2600:1700", "2003:e2", "2a00:23c7", "2601:646"];

/// A human's address: mostly public IPv4, some private (office networks behind the tracker's
/// proxy), a few IPv6.
fn human_ip(rng: &mut Rng) -> String {
    let roll = rng.below(100);
    let mut octet = || rng.below(256);
    if roll < 5 {
        let prefix = ISP_V6_PREFIXES[octet() as usize % ISP_V6_PREFIXES.len()];
        let mut group = || rng.below(0x1_0000);
        format!(
            "{prefix}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
            group(),
            group(),
            group(),
            group(),
            group(),
            group()
        )
    } else if roll < 10 {
        format!("10.{}.{}.{}", octet(), octet(), 1 + octet() % 254)
    } else if roll < 13 {
        format!("192.168.{}.{}", octet() % 8, 2 + octet() % 250)
    } else if roll < 15 {
        format!("172.{}.{}.{}", 16 + octet() % 16, octet(), 1 + octet() % 254)
    } else {
        let first = ISP_OCTETS[octet() as usize % ISP_OCTETS.len()];
        format!("{first}.{}.{}.{}", octet(), octet(), 1 + octet() % 254)
    }
}

/// A visitor id as analytics cookies have it: `<random 32-bit>.<first seen, unix seconds>`.
/// The random part is a keyed permutation of `index`, so distinct entities get distinct ids.
fn client_id(key: u64, index: u64, now_ms: i64, rng: &mut Rng) -> String {
    let first_seen = now_ms / 1000 - rng.below(400 * 86_400) as i64;
    format!("{}.{}", permute32(key, index as u32), first_seen)
}

/// The shop: every page path, and popularity samplers over them.
#[derive(Debug)]
struct Catalog {
    pages: Vec<Page>,
    home: u32,
    cart: u32,
    checkout: u32,
    /// Rank → index into [`CATEGORIES`].
    categories: Vec<usize>,
    /// Category rank → its page.
    category_pages: Vec<u32>,
    category_zipf: Zipf,
    /// Product pages by popularity rank.
    product_pages: Vec<u32>,
    product_zipf: Zipf,
    /// Per category rank: its product pages by popularity, and a sampler over them.
    category_products: Vec<(Vec<u32>, Zipf)>,
    search_pages: Vec<u32>,
    search_zipf: Zipf,
    /// Category rank of product `id` at index `id - 1`.
    product_category: Vec<u8>,
}

#[derive(Debug)]
struct Page {
    path: String,
    /// The absolute URL, as a referrer.
    url: String,
    product_id: Option<i64>,
    /// Category rank of a category or product page.
    category: u8,
}

impl Catalog {
    fn new(config: &GeneratorConfig, keys: &Keys, rng: &mut Rng) -> Catalog {
        let pages = config.pages as usize;
        let n_categories = (pages / 80).clamp(1, CATEGORIES.len());
        let room = pages.saturating_sub(3 + n_categories);
        let min_searches = (room / 10).max(1);
        let n_products = (config.products as usize).min(room.saturating_sub(min_searches));
        let n_searches = room.saturating_sub(n_products).max(1);

        let mut categories: Vec<usize> = (0..CATEGORIES.len()).collect();
        rng.shuffle(&mut categories);
        categories.truncate(n_categories);
        let product_category: Vec<u8> = (1..=u64::from(config.products))
            .map(|id| (hash(keys.products ^ 0xca7e, id) % n_categories as u64) as u8)
            .collect();
        let mut ranked: Vec<i64> = (1..=i64::from(config.products)).collect();
        rng.shuffle(&mut ranked);

        let mut catalog = Catalog {
            pages: Vec::with_capacity(3 + n_categories + n_products + n_searches),
            home: 0,
            cart: 1,
            checkout: 2,
            categories,
            category_pages: Vec::new(),
            category_zipf: Zipf::new(n_categories as u64, PAGE_SKEW),
            product_pages: Vec::new(),
            product_zipf: Zipf::new(n_products as u64, PAGE_SKEW),
            category_products: Vec::new(),
            search_pages: Vec::new(),
            search_zipf: Zipf::new(n_searches as u64, PAGE_SKEW),
            product_category,
        };
        catalog.add("/".to_owned(), None, 0);
        catalog.add("/cart".to_owned(), None, 0);
        catalog.add("/checkout".to_owned(), None, 0);
        for rank in 0..n_categories {
            let slug = CATEGORIES[catalog.categories[rank]].slug;
            let page = catalog.add(format!("/category/{slug}"), None, rank as u8);
            catalog.category_pages.push(page);
        }
        let mut by_category = vec![Vec::new(); n_categories];
        for &id in &ranked[..n_products] {
            let category = catalog.product_category[id as usize - 1];
            let page = catalog.add(format!("/products/{id}"), Some(id), category);
            catalog.product_pages.push(page);
            by_category[category as usize].push(page);
        }
        catalog.category_products = by_category
            .into_iter()
            .map(|pages| {
                let zipf = Zipf::new(pages.len() as u64, PAGE_SKEW);
                (pages, zipf)
            })
            .collect();
        let distinct = SEARCH_TERMS.len() * SEARCH_MODIFIERS.len();
        for i in 0..n_searches {
            let term = SEARCH_TERMS[i % SEARCH_TERMS.len()];
            let modifier = SEARCH_MODIFIERS[i / SEARCH_TERMS.len() % SEARCH_MODIFIERS.len()];
            let mut path = String::from("/search?q=");
            if !modifier.is_empty() {
                path.push_str(modifier);
                path.push('+');
            }
            path.push_str(&term.replace(' ', "+"));
            if i >= distinct {
                path.push_str(&format!("&page={}", i / distinct + 1));
            }
            let page = catalog.add(path, None, 0);
            catalog.search_pages.push(page);
        }
        catalog
    }

    fn add(&mut self, path: String, product_id: Option<i64>, category: u8) -> u32 {
        let url = format!("{SITE}{path}");
        self.pages.push(Page { path, url, product_id, category });
        (self.pages.len() - 1) as u32
    }

    fn pick_search(&self, rng: &mut Rng) -> u32 {
        self.search_pages[self.search_zipf.sample(rng)]
    }

    /// A popular product page, within a category when given and it has any.
    fn pick_product(&self, within: Option<u8>, rng: &mut Rng) -> Option<u32> {
        if let Some((pages, zipf)) = within.and_then(|c| self.category_products.get(c as usize))
            && !pages.is_empty()
        {
            return Some(pages[zipf.sample(rng)]);
        }
        if self.product_pages.is_empty() {
            return None;
        }
        Some(self.product_pages[self.product_zipf.sample(rng)])
    }

    fn category_of_product(&self, id: i64) -> &'static CategoryDef {
        let rank = self.product_category[id as usize - 1];
        &CATEGORIES[self.categories[rank as usize]]
    }
}

#[derive(Debug)]
struct CategoryDef {
    slug: &'static str,
    nouns: [&'static str; 3],
    /// Price range in cents.
    price: (i64, i64),
}

const CATEGORIES: [CategoryDef; 24] = [
    CategoryDef {
        slug: "running-shoes",
        nouns: ["Road Runner", "Tempo Trainer", "Racing Flat"],
        price: (7_900, 18_900),
    },
    CategoryDef {
        slug: "trail-shoes",
        nouns: ["Trail Shoe", "Trail Runner", "Approach Shoe"],
        price: (8_900, 17_900),
    },
    CategoryDef {
        slug: "hiking-boots",
        nouns: ["Hiking Boot", "Mid Boot", "Backpacking Boot"],
        price: (11_900, 27_900),
    },
    CategoryDef {
        slug: "jackets",
        nouns: ["Shell Jacket", "Down Jacket", "Softshell"],
        price: (9_900, 49_900),
    },
    CategoryDef {
        slug: "rain-gear",
        nouns: ["Rain Jacket", "Rain Pants", "Poncho"],
        price: (3_900, 24_900),
    },
    CategoryDef {
        slug: "fleece",
        nouns: ["Fleece Jacket", "Grid Fleece", "Fleece Vest"],
        price: (4_900, 14_900),
    },
    CategoryDef {
        slug: "base-layers",
        nouns: ["Merino Tee", "Base Layer Top", "Base Layer Tights"],
        price: (2_900, 10_900),
    },
    CategoryDef {
        slug: "pants",
        nouns: ["Hiking Pant", "Convertible Pant", "Climbing Pant"],
        price: (5_900, 15_900),
    },
    CategoryDef {
        slug: "backpacks",
        nouns: ["Backpack 45", "Backpack 65", "Travel Pack"],
        price: (9_900, 34_900),
    },
    CategoryDef {
        slug: "daypacks",
        nouns: ["Daypack 20", "Daypack 28", "Running Vest"],
        price: (3_900, 14_900),
    },
    CategoryDef {
        slug: "tents",
        nouns: ["Tent 1P", "Tent 2P", "Tent 3P"],
        price: (14_900, 69_900),
    },
    CategoryDef {
        slug: "sleeping-bags",
        nouns: ["Down Bag", "Synthetic Bag", "Quilt"],
        price: (9_900, 49_900),
    },
    CategoryDef {
        slug: "sleeping-pads",
        nouns: ["Air Pad", "Foam Pad", "Self-Inflating Pad"],
        price: (2_900, 19_900),
    },
    CategoryDef {
        slug: "stoves",
        nouns: ["Canister Stove", "Liquid Fuel Stove", "Stove System"],
        price: (3_900, 17_900),
    },
    CategoryDef {
        slug: "cookware",
        nouns: ["Titanium Pot", "Cook Set", "Spork"],
        price: (999, 8_900),
    },
    CategoryDef {
        slug: "headlamps",
        nouns: ["Headlamp", "Lantern", "Flashlight"],
        price: (1_999, 9_900),
    },
    CategoryDef {
        slug: "water",
        nouns: ["Water Bottle", "Water Filter", "Hydration Bladder"],
        price: (999, 12_900),
    },
    CategoryDef {
        slug: "climbing",
        nouns: ["Harness", "Climbing Shoe", "Chalk Bag"],
        price: (1_499, 18_900),
    },
    CategoryDef {
        slug: "cycling",
        nouns: ["Cycling Jersey", "Bike Light", "Saddle Bag"],
        price: (1_999, 12_900),
    },
    CategoryDef {
        slug: "ski",
        nouns: ["Ski Goggles", "Ski Gloves", "Ski Helmet"],
        price: (2_999, 24_900),
    },
    CategoryDef {
        slug: "socks",
        nouns: ["Hiking Sock", "Running Sock", "Liner Sock"],
        price: (899, 2_999),
    },
    CategoryDef {
        slug: "hats-gloves",
        nouns: ["Beanie", "Sun Hat", "Fleece Glove"],
        price: (1_499, 5_999),
    },
    CategoryDef {
        slug: "navigation",
        nouns: ["GPS Watch", "Compass", "Map Case"],
        price: (1_499, 59_900),
    },
    CategoryDef {
        slug: "first-aid",
        nouns: ["First Aid Kit", "Blister Kit", "Emergency Bivvy"],
        price: (999, 6_900),
    },
];

const MODEL_NAMES: [&str; 24] = [
    "Summit", "Ridge", "Alpine", "Granite", "Cascade", "Boulder", "Canyon", "Glacier", "Timber",
    "Aspen", "Sierra", "Tundra", "Basalt", "Cirrus", "Vista", "Ember", "Falcon", "Kestrel",
    "Harbor", "Meridian", "Nomad", "Pioneer", "Quartz", "Solstice",
];

const MODEL_SUFFIXES: [&str; 6] = ["", "", " II", " Pro", " GTX", " Lite"];

/// A product's name and price (cents, ending in 99 or 00 as shops price).
fn product_details(key: u64, id: i64, category: &CategoryDef) -> (String, i64) {
    let mut rng = Rng::new(hash(key, id as u64));
    let name = format!(
        "{} {}{}",
        MODEL_NAMES[rng.below_usize(MODEL_NAMES.len())],
        category.nouns[rng.below_usize(category.nouns.len())],
        MODEL_SUFFIXES[rng.below_usize(MODEL_SUFFIXES.len())]
    );
    let (low, high) = category.price;
    let price = rng.range(low, high) / 100 * 100;
    let price = if rng.chance(0.7) { price - 1 } else { price };
    (name, price.max(99))
}

const SEARCH_TERMS: [&str; 32] = [
    "rain jacket",
    "trail running shoes",
    "hiking boots",
    "down jacket",
    "backpack",
    "tent",
    "sleeping bag",
    "headlamp",
    "merino",
    "water filter",
    "fleece",
    "gore-tex",
    "hiking socks",
    "camping stove",
    "daypack",
    "sleeping pad",
    "softshell",
    "base layer",
    "ski goggles",
    "climbing shoes",
    "gps watch",
    "water bottle",
    "beanie",
    "hiking pants",
    "rain pants",
    "ultralight tent",
    "trekking poles",
    "first aid kit",
    "bike light",
    "harness",
    "quilt",
    "gloves",
];

const SEARCH_MODIFIERS: [&str; 10] =
    ["", "womens", "mens", "waterproof", "lightweight", "kids", "sale", "best", "cheap", "2p"];

const FIRST_NAMES: [&str; 40] = [
    "Ada", "Liam", "Noah", "Emma", "Olivia", "Lucas", "Mila", "Sofia", "Mateo", "Yuki", "Hana",
    "Arjun", "Priya", "Chen", "Wei", "Fatima", "Omar", "Lea", "Jonas", "Elif", "Mehmet", "Anna",
    "Jan", "Eva", "Sven", "Ingrid", "Pierre", "Camille", "Giulia", "Marco", "Carmen", "Diego",
    "Aoife", "Sean", "Zofia", "Piotr", "Nia", "Kwame", "Amara", "Tomás",
];

const LAST_NAMES: [&str; 40] = [
    "de Vries",
    "Jansen",
    "Müller",
    "Schmidt",
    "Smith",
    "Johnson",
    "Garcia",
    "Martin",
    "Bernard",
    "Rossi",
    "Russo",
    "Kowalski",
    "Nowak",
    "Andersson",
    "Johansson",
    "Nielsen",
    "Hansen",
    "O'Brien",
    "Murphy",
    "Tanaka",
    "Sato",
    "Kim",
    "Park",
    "Nguyen",
    "Singh",
    "Patel",
    "Yilmaz",
    "Kaya",
    "Dubois",
    "Lefebvre",
    "Fernández",
    "López",
    "Silva",
    "Santos",
    "Novák",
    "Horvat",
    "Mensah",
    "Okafor",
    "Cohen",
    "Haddad",
];

const TIERS: [(&str, u32); 4] = [("bronze", 55), ("silver", 28), ("gold", 13), ("platinum", 4)];

const COUNTRIES: [(&str, u32); 16] = [
    ("NL", 20),
    ("DE", 18),
    ("US", 12),
    ("GB", 10),
    ("FR", 9),
    ("BE", 6),
    ("ES", 4),
    ("IT", 4),
    ("AT", 3),
    ("CH", 3),
    ("SE", 3),
    ("DK", 2),
    ("NO", 2),
    ("PL", 2),
    ("IE", 1),
    ("CA", 1),
];

/// The item of a weighted choice.
fn pick<'a, T>(choices: &'a [(T, u32)], rng: &mut Rng) -> &'a T {
    &choices[pick_index(choices, rng)].0
}

/// The index of a weighted choice.
fn pick_index<T>(choices: &[(T, u32)], rng: &mut Rng) -> usize {
    pick_index_by(choices, |(_, weight)| *weight, rng)
}

/// The index of a choice weighted by `weight`.
fn pick_index_by<T>(choices: &[T], weight: impl Fn(&T) -> u32, rng: &mut Rng) -> usize {
    let total: u32 = choices.iter().map(&weight).sum();
    let mut roll = rng.below(u64::from(total)) as u32;
    for (i, choice) in choices.iter().enumerate() {
        let weight = weight(choice);
        if roll < weight {
            return i;
        }
        roll -= weight;
    }
    choices.len() - 1
}

/// A random UUID (version 4), formatted.
fn uuid_v4(rng: &mut Rng) -> String {
    Inline { bytes: uuid_bytes(rng) }.string()
}

/// The text of a random UUID (version 4).
fn uuid_bytes(rng: &mut Rng) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let high = (rng.next_u64() & !0xf000) | 0x4000;
    let low = (rng.next_u64() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    text
}

/// Short ASCII text stored inline (truncated to `N` bytes; NUL-padded).
#[derive(Clone, Copy, Debug)]
struct Inline<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> Default for Inline<N> {
    fn default() -> Self {
        Inline { bytes: [0; N] }
    }
}

impl<const N: usize> Inline<N> {
    fn new(text: &str) -> Self {
        let mut bytes = [0; N];
        let len = text.len().min(N);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Inline { bytes }
    }

    fn as_str(&self) -> &str {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }

    fn string(&self) -> String {
        self.as_str().to_owned()
    }
}

/// One step of SplitMix64: seeds xoshiro and hashes.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed 64-bit hash, for attributes that must be stable per entity.
fn hash(key: u64, value: u64) -> u64 {
    let mut state = key ^ value.wrapping_mul(0xd6e8_feb8_6659_fd93);
    splitmix64(&mut state)
}

/// A keyed bijection of `u32`: distinct inputs give distinct, random-looking outputs.
fn permute32(key: u64, value: u32) -> u32 {
    let mut x = value ^ (key >> 32) as u32;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(key as u32 | 1);
    x ^= x >> 13;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// xoshiro256**: small, fast and good enough for simulation.
#[derive(Clone, Debug)]
struct Rng {
    state: [u64; 4],
    /// The second normal of the last Box–Muller pair.
    spare_normal: Option<f64>,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut sm = seed;
        Rng { state: [(); 4].map(|()| splitmix64(&mut sm)), spare_normal: None }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low) as u64 + 1) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        if let Some(spare) = self.spare_normal.take() {
            return spare;
        }
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * self.unit()).sin_cos();
        self.spare_normal = Some(radius * sin);
        radius * cos
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below_usize(i + 1));
        }
    }
}

/// Zipf-distributed ranks in `0..n`: by an alias table (Walker's method: one draw, no
/// transcendental functions) when `n` is small enough to tabulate, as for pages; else by
/// rejection-inversion (Hörmann and Derflinger, 1996), which needs no table, so a population of
/// millions of users costs nothing to set up.
#[derive(Clone, Debug)]
enum Zipf {
    Table {
        /// Per column: keep the column's own rank when the coin is below this (of 2^32).
        keep: Vec<u32>,
        alias: Vec<u32>,
    },
    Inversion(ZipfInversion),
}

/// Above this many ranks a Zipf sampler does not tabulate.
const ZIPF_TABLE_MAX: u64 = 1 << 16;

impl Zipf {
    fn new(n: u64, s: f64) -> Zipf {
        let n = n.max(1);
        if n > ZIPF_TABLE_MAX {
            return Zipf::Inversion(ZipfInversion::new(n, s));
        }
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n as usize).partition(|&i| scaled[i] < 1.0);
        let mut keep = vec![u32::MAX; n as usize];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(&short), Some(&long)) = (small.last(), large.last()) {
            small.pop();
            keep[short] = (scaled[short] * 4_294_967_296.0) as u32;
            alias[short] = long as u32;
            scaled[long] += scaled[short] - 1.0;
            if scaled[long] < 1.0 {
                large.pop();
                small.push(long);
            }
        }
        Zipf::Table { keep, alias }
    }

    /// A rank: 0 is the most likely.
    fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            Zipf::Table { keep, alias } => {
                let bits = rng.next_u64();
                let column = (((bits >> 32) * keep.len() as u64) >> 32) as usize;
                if (bits as u32) < keep[column] { column } else { alias[column] as usize }
            }
            Zipf::Inversion(inversion) => inversion.sample(rng),
        }
    }
}

#[derive(Clone, Debug)]
struct ZipfInversion {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    shortcut: f64,
}

impl ZipfInversion {
    fn new(n: u64, s: f64) -> ZipfInversion {
        let n = n.max(1) as f64;
        let h_x1 = zipf_h_integral(1.5, s) - 1.0;
        let h_n = zipf_h_integral(n + 0.5, s);
        let shortcut = 2.0 - zipf_h_integral_inverse(zipf_h_integral(2.5, s) - zipf_h(2.0, s), s);
        ZipfInversion { n, s, h_x1, h_n, shortcut }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        loop {
            let u = self.h_n + rng.unit() * (self.h_x1 - self.h_n);
            let x = zipf_h_integral_inverse(u, self.s);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.shortcut || u >= zipf_h_integral(k + 0.5, self.s) - zipf_h(k, self.s) {
                return k as usize - 1;
            }
        }
    }
}

fn zipf_h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

fn zipf_h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    helper_expm1_div((1.0 - s) * log_x) * log_x
}

fn zipf_h_integral_inverse(x: f64, s: f64) -> f64 {
    let t = (x * (1.0 - s)).max(-1.0);
    (helper_log1p_div(t) * x).exp()
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper_log1p_div(x: f64) -> f64 {
    if x.abs() > 1e-8 { x.ln_1p() / x } else { 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x)) }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper_expm1_div(x: f64) -> f64 {
    if x.abs() > 1e-8 { x.exp_m1() / x } else { 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap, HashSet};
    use std::path::Path;

    /// Small enough for quick tests, large enough that users are never crowded.
    fn config(seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            users: 50_000,
            pages: 500,
            products: 200,
            customers: 2_000,
            bot_share: 0.05,
            start_ms: 1_700_000_000_000,
            events_per_second: 20,
            out_of_order_ms: 2_000,
        }
    }

    fn events(config: GeneratorConfig, n: usize) -> (Generator, Vec<(Click, Origin)>) {
        let mut generator = Generator::new(config);
        let events = (0..n).map(|_| generator.next_event()).collect();
        (generator, events)
    }

    fn schema_fields(file: &str) -> Vec<(String, serde_json::Value)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro").join(file);
        let text = std::fs::read_to_string(path).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_owned(), f["type"].clone()))
            .collect()
    }

    /// Whether `value` fits the Avro type `schema` (the primitive and union types used here).
    fn fits(value: &Value, schema: &serde_json::Value) -> bool {
        match schema {
            serde_json::Value::Array(branches) => branches.iter().any(|b| fits(value, b)),
            serde_json::Value::Object(fields) => fits(value, &fields["type"]),
            serde_json::Value::String(name) => matches!(
                (name.as_str(), value),
                ("null", Value::Null)
                    | ("string", Value::String(_))
                    | ("long" | "int", Value::Int(_))
                    | ("boolean", Value::Bool(_))
            ),
            _ => false,
        }
    }

    fn check_row(value: &Value, fields: &[(String, serde_json::Value)]) {
        let Value::Map(map) = value else { panic!("not a map: {value:?}") };
        let names: BTreeSet<&str> = map.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, expected);
        for (name, schema) in fields {
            assert!(fits(&map[name], schema), "{name}: {:?} does not fit {schema}", map[name]);
        }
    }

    #[test]
    fn same_seed_gives_the_same_clicks() {
        let a: Vec<Click> = Generator::new(config(7)).take(5_000).collect();
        let b: Vec<Click> = Generator::new(config(7)).take(5_000).collect();
        assert_eq!(a, b);
        let a = Generator::new(config(7));
        let b = Generator::new(config(7));
        assert_eq!(a.products(), b.products());
        assert_eq!(a.customers(), b.customers());
    }

    #[test]
    fn different_seeds_give_different_clicks() {
        let a: Vec<Click> = Generator::new(config(7)).take(1_000).collect();
        let b: Vec<Click> = Generator::new(config(8)).take(1_000).collect();
        let same = a.iter().zip(&b).filter(|(x, y)| x.user_id == y.user_id).count();
        assert!(same < 50, "{same} of 1000 clicks share a user");
        assert_ne!(Generator::new(config(7)).products(), Generator::new(config(8)).products());
    }

    #[test]
    fn click_values_have_exactly_the_fields_of_the_schema() {
        let fields = schema_fields("click_event.avsc");
        for click in Generator::new(config(1)).take(20_000) {
            check_row(&click.to_value(), &fields);
        }
    }

    #[test]
    fn table_rows_match_their_schemas() {
        let generator = Generator::new(config(1));
        let products = generator.products();
        let customers = generator.customers();
        assert_eq!(products.len(), 200);
        assert_eq!(customers.len(), 2_000);
        let fields = schema_fields("product.avsc");
        for (id, row) in &products {
            check_row(row, &fields);
            assert_eq!(row.get("id"), Some(&Value::Int(*id)));
            assert!(row.get("price_cents").and_then(Value::as_i64).unwrap() > 0);
        }
        let fields = schema_fields("customer.avsc");
        for (id, row) in &customers {
            check_row(row, &fields);
            assert_eq!(row.get("id"), Some(&Value::Int(*id)));
        }
    }

    #[test]
    fn clicks_refer_to_existing_products_and_customers() {
        let mut generator = Generator::new(config(2));
        let products: HashSet<i64> = generator.products().into_iter().map(|(id, _)| id).collect();
        let customers: HashSet<i64> = generator.customers().into_iter().map(|(id, _)| id).collect();
        let (mut views, mut product_views, mut with_customer) = (0, 0, 0);
        for _ in 0..50_000 {
            let (click, origin) = generator.next_event();
            if let Some(id) = click.product_id {
                assert!(products.contains(&id), "unknown product {id}");
                assert_eq!(click.page_url, format!("/products/{id}"));
            }
            if let Some(id) = click.customer_id {
                assert!(customers.contains(&id), "unknown customer {id}");
            }
            if !origin.bot && click.event_type == "page_view" {
                views += 1;
                product_views += usize::from(click.product_id.is_some());
                with_customer += usize::from(click.customer_id.is_some());
            }
        }
        let share = product_views as f64 / views as f64;
        assert!((0.3..0.5).contains(&share), "product pages are {share:.3} of views");
        let share = with_customer as f64 / views as f64;
        assert!((0.5..0.7).contains(&share), "customers make {share:.3} of views");
    }

    #[test]
    fn bot_share_is_as_configured() {
        for (seed, bot_share) in [(3, 0.05), (4, 0.2)] {
            let (generator, events) =
                events(GeneratorConfig { bot_share, ..config(seed) }, 100_000);
            let bots = events.iter().filter(|(_, origin)| origin.bot).count();
            let share = bots as f64 / events.len() as f64;
            assert!((share - bot_share).abs() < 0.01, "bot share {share:.4}, want {bot_share}");
            assert_eq!(generator.stats().bot_clicks, bots as u64);
            assert_eq!(generator.stats().clicks, 100_000);
        }
    }

    #[test]
    fn bots_look_like_bots_only_by_agent_and_behaviour() {
        let (_, events) = events(config(5), 100_000);
        let id_shape = |id: &str| {
            let (random, seen) = id.split_once('.').unwrap();
            random.parse::<u32>().is_ok() && seen.parse::<i64>().is_ok()
        };
        let mut by_id: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut agents = HashSet::new();
        for (click, origin) in &events {
            assert!(id_shape(&click.user_id), "odd user id {}", click.user_id);
            if origin.bot {
                agents.insert(click.user_agent.as_str());
                by_id.entry(&click.user_id).or_default().push(click.event_time);
            }
        }
        assert!(agents.len() >= 8, "only {} bot agents", agents.len());
        assert!(agents.iter().any(|a| a.contains("Googlebot")));
        // Some bots keep an id and request exactly once a second.
        let regular = by_id
            .values()
            .any(|times| times.len() > 20 && times.windows(2).all(|w| w[1] - w[0] == 1_000));
        assert!(regular, "no bot requests exactly every second");
        // Some burst: many requests within a second.
        let bursting = events
            .iter()
            .filter(|(_, o)| o.bot)
            .map(|(c, _)| c.event_time)
            .collect::<Vec<_>>()
            .windows(10)
            .any(|w| w[9] - w[0] < 1_000);
        assert!(bursting, "no bot bursts");
    }

    #[test]
    fn user_activity_is_skewed() {
        let (_, events) = events(config(6), 100_000);
        let mut per_user: HashMap<u32, usize> = HashMap::new();
        for (_, origin) in events.iter().filter(|(_, o)| !o.bot) {
            *per_user.entry(origin.user).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_user.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top = counts.len().div_ceil(100);
        let share =
            counts[..top].iter().sum::<usize>() as f64 / counts.iter().sum::<usize>() as f64;
        // Four times their fair share at least (about six times over 100k events).
        assert!(share > 0.04, "the top 1% of users make {share:.3} of human events");
    }

    #[test]
    fn event_times_mostly_increase_at_the_configured_rate() {
        let n = 100_000;
        let (generator, events) = events(config(9), n);
        let mut latest = i64::MIN;
        let mut late = 0;
        for (click, _) in &events {
            if click.event_time < latest {
                late += 1;
                assert!(latest - click.event_time <= 2_000 + 10_000, "far too late");
            }
            latest = latest.max(click.event_time);
        }
        let share = late as f64 / n as f64;
        assert!((0.005..0.015).contains(&share), "{share:.4} of events are late");
        let marked = generator.stats().out_of_order as f64 / n as f64;
        assert!((0.008..0.012).contains(&marked), "{marked:.4} of events were moved back");
        let first = events[0].0.event_time;
        assert!((1_700_000_000_000 - 2_000..1_700_000_000_000 + 1_000).contains(&first));
        let per_second = n as f64 / ((latest - first) as f64 / 1000.0);
        assert!((per_second - 20.0).abs() < 2.0, "{per_second:.2} events per second");

        let mut strict = Generator::new(GeneratorConfig { out_of_order_ms: 0, ..config(9) });
        let times: Vec<i64> = (0..10_000).map(|_| strict.next_click().event_time).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn users_rest_longer_than_the_session_gap() {
        let (generator, events) = events(config(10), 200_000);
        assert_eq!(generator.stats().crowded_sessions, 0);
        // Per user: (session serial, first and last event time) of each session in order.
        let mut sessions: HashMap<u32, Vec<(u64, i64, i64)>> = HashMap::new();
        for (click, origin) in events.iter().filter(|(_, o)| !o.bot) {
            let list = sessions.entry(origin.user).or_default();
            match list.last_mut() {
                Some((serial, first, last)) if *serial == origin.session => {
                    *first = (*first).min(click.event_time);
                    *last = (*last).max(click.event_time);
                }
                _ => list.push((origin.session, click.event_time, click.event_time)),
            }
        }
        let mut gaps = 0;
        for list in sessions.values() {
            for pair in list.windows(2) {
                assert_ne!(pair[0].0, pair[1].0, "a session interleaves with another");
                let gap = pair[1].1 - pair[0].2;
                assert!(gap > SESSION_GAP_MS, "a user rested only {gap} ms");
                gaps += 1;
            }
        }
        assert!(gaps > 1_000, "only {gaps} users came back");
    }

    #[test]
    fn sessions_never_pause_as_long_as_the_session_gap() {
        let (_, events) = events(config(11), 50_000);
        let mut last: HashMap<u64, i64> = HashMap::new();
        let mut sizes: HashMap<u64, usize> = HashMap::new();
        for (click, origin) in events.iter().filter(|(_, o)| !o.bot) {
            if let Some(previous) = last.insert(origin.session, click.event_time) {
                assert!(click.event_time - previous < MAX_THINK_MS + 2_000 + 1);
            }
            *sizes.entry(origin.session).or_default() += 1;
        }
        assert!(sizes.values().all(|&n| n <= 30));
        assert!(sizes.values().any(|&n| n >= 15));
    }
}
