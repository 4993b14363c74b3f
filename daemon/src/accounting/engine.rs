//! The accounting engine: meters' years computed from the store's hourly roll-ups and the
//! meter events, cached, and recomputed only where something changed.
//!
//! * A meter's year is computed from the first and last reading of each hour (the roll-ups) and
//!   the readings just around the year, through [`counter::continuous`] (events, rollovers, bad
//!   readings) and [`ledger::meter_year`]. Raw points are never scanned.
//! * The cache holds one entry per (meter, year), in memory and on disk ([`super::cache`]), keyed
//!   by the meter's definition and events. The store records, per meter and in the transaction
//!   that writes the points, the earliest reading time written since the engine last applied it;
//!   the engine drops that meter's years from the year of the reading before it on (a late
//!   reading after a gap changes the periods the gap spanned, back to the reading before). A
//!   meter event drops that meter's years. Nothing else is recomputed. Computations are
//!   serialised (one at a time), so that a result read before a write is never stored after
//!   that write's record was applied.
//! * Missing years are computed 64 meters at a time, each batch read over the store's read
//!   connections while the batch before is computed on the blocking pool, in as many parts as
//!   the machine has cores ([`std::thread::available_parallelism`]). A meter's year is one pass
//!   over its roll-ups: the readings in time order, then the hours' boundaries walked with them
//!   ([`super::consumption::consumption`]), not a search per hour.
//! * Each year's allocation to agencies ([`YearData`]) is kept while none of its meter-years was
//!   recomputed, and each agency's indicators while the parts of the years they come from are
//!   unchanged ([`Engine::year`], [`Engine::indicators`]): a new reading of one meter recomputes
//!   the allocation once and the indicators of the agencies that meter serves, not of all.
//! * Meter events come from the registry's `[[event]]` lists and from the API; the API's are
//!   appended to `<data_dir>/meter-events.jsonl` and fsynced before the API answers.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Datelike};
use chrono_tz::Tz;

use super::allocate::{agency_groups, contributions, full_series, Contribution, GroupKey, NegativeRemainder};
use super::cache::{key_of, DiskCache, ENGINE_VERSION};
use super::counter::{continuous, event_of, Event};
use super::indicators::{indicators, AgencyIndicators, Input};
use super::ledger::{meter_year, MeterYear, Series, YearCalendar};
use crate::registry::{EventError, EventRecord, Indicator, Registry};
use crate::store::CounterRollups;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("year {0} is outside the calendar this daemon accounts (1970-2200)")]
    Year(i32),
    #[error("meter events log {path}: {msg}")]
    Log { path: PathBuf, msg: String },
    /// An event of the registry or the log that does not convert in the time zone.
    #[error("event of meter `{meter}` at {time}: {source}")]
    Event { meter: String, time: String, source: EventError },
    /// An event posted that cannot be recorded.
    #[error(transparent)]
    Rejected(#[from] EventError),
    #[error("`{0}` is not a physical meter of the registry")]
    NotPhysical(String),
    #[error("{0}")]
    Invalid(String),
}

/// Everything computed for one year.
pub struct YearData {
    pub cal: Arc<YearCalendar>,
    pub meters: HashMap<String, Arc<MeterYear>>,
    pub contributions: Vec<Contribution>,
    pub negative: Vec<NegativeRemainder>,
    /// Contributions by agency.
    by_agency: HashMap<String, Vec<usize>>,
    /// The meters whose counter went down without a recorded replacement, sorted.
    to_check: Vec<String>,
    /// The registry it was computed with ([`Registry::stamp`]).
    reg_stamp: u64,
    /// Per agency, the generation in which its part of the year (its contributions, and the
    /// notes of the meters serving it) last changed; an agency absent has had none.
    stamps: HashMap<String, u64>,
}

impl YearData {
    /// An agency's part of the year: what its indicators are computed from.
    fn part(&self, agency: &str) -> (Vec<&Contribution>, Vec<&NegativeRemainder>, Vec<&String>) {
        let own: Vec<&Contribution> = self.by_agency.get(agency).into_iter().flatten().map(|&i| &self.contributions[i]).collect();
        let serves = |m: &str| own.iter().any(|c| c.meter == m);
        let negative = self.negative.iter().filter(|n| serves(&n.meter)).collect();
        let to_check = self.to_check.iter().filter(|m| serves(m)).collect();
        (own, negative, to_check)
    }

    /// The generation of an agency's part (0: it never had one).
    fn stamp(&self, agency: &str) -> u64 {
        self.stamps.get(agency).copied().unwrap_or(0)
    }

    /// Consumption groups of the agencies together.
    pub fn groups(&self, agencies: &[&str]) -> BTreeMap<GroupKey, Series> {
        let idx = agencies.iter().flat_map(|a| self.by_agency.get(*a).into_iter().flatten());
        agency_groups(idx.map(|&i| &self.contributions[i]), self.cal.days())
    }

    /// Whether a meter contributes to any of the agencies.
    pub fn serves(&self, meter: &str, agencies: &[&str]) -> bool {
        agencies.iter().flat_map(|a| self.by_agency.get(*a).into_iter().flatten()).any(|&i| self.contributions[i].meter == meter)
    }
}

pub struct Engine {
    tz: Tz,
    log_path: PathBuf,
    cache: Mutex<HashMap<(String, i32), Arc<MeterYear>>>,
    disk: Arc<DiskCache>,
    /// Held while applying change records and computing; `true` once the disk cache's epoch was
    /// checked against the store's.
    compute: tokio::sync::Mutex<bool>,
    calendars: Mutex<HashMap<i32, Arc<YearCalendar>>>,
    /// Events by meter, from the registry and the log.
    events: RwLock<HashMap<String, Vec<Event>>>,
    /// Every event record, registry first, then the API's in order.
    records: RwLock<Vec<EventRecord>>,
    /// Serialises appends to the log.
    log: Mutex<()>,
    /// Meter-years computed since start (for the benchmark and metrics).
    pub computed: std::sync::atomic::AtomicU64,
    /// Each year's allocation as last computed: given again while no meter-year of it changed.
    years: Mutex<HashMap<i32, Arc<YearData>>>,
    /// The last generation given to an agency's changed part of a year.
    generation: std::sync::atomic::AtomicU64,
    /// Agencies' indicators by (agency, scope, year, days to), each with the stamps of the
    /// parts it was computed from ([`Engine::indicators`]).
    results: Mutex<HashMap<String, KeptResult>>,
}

/// An agency's indicators with the stamps of the parts they were computed from.
type KeptResult = (Vec<u64>, Arc<AgencyIndicators>);

/// Agencies' indicators computed on one thread at least, before more threads are used.
const PER_THREAD: usize = 32;

/// Years' allocations kept at most.
const MAX_YEARS: usize = 8;

/// Agencies' indicators kept at most; past that the table starts again.
const MAX_RESULTS: usize = 50_000;

/// Whether two sets of meter-years are the same computations (the engine's cache gives the same
/// `Arc` until a meter's year is recomputed).
fn same_meters(a: &MeterYears, b: &MeterYears) -> bool {
    a.len() == b.len() && a.iter().all(|(id, y)| b.get(id).is_some_and(|z| Arc::ptr_eq(y, z)))
}

/// Meters whose roll-ups are read and computed together.
const BATCH: usize = 64;

/// Meters' years by meter id.
pub type MeterYears = HashMap<String, Arc<MeterYear>>;

/// Meters whose year is not in a cache, each with its cache key.
type Missing = Vec<(crate::registry::Meter, String)>;

/// A meter's hours over a year (their first and last readings), with the reading before and
/// the reading after it.
type Window = CounterRollups;

/// Computes the years of a batch of meters from their roll-ups, in `threads` parts on the
/// blocking pool; rows for the caches.
async fn compute_batch(
    batch: &[(crate::registry::Meter, String)],
    windows: Vec<Window>,
    cal: &Arc<YearCalendar>,
    events: &Arc<HashMap<String, Vec<Event>>>,
    year: i32,
    threads: usize,
) -> Result<Vec<(String, i32, String, Arc<MeterYear>)>, EngineError> {
    let mut jobs = tokio::task::JoinSet::new();
    let per = batch.len().div_ceil(threads.max(1)).max(1);
    let mut windows = windows.into_iter();
    for part in batch.chunks(per) {
        let part: Vec<(crate::registry::Meter, String, Window)> = part.iter().map(|(m, k)| (m.clone(), k.clone(), windows.next().unwrap_or_default())).collect();
        let (cal, events) = (cal.clone(), events.clone());
        jobs.spawn_blocking(move || {
            part.into_iter()
                .map(|(m, key, window)| {
                    let ev = events.get(&m.id).map_or(&[][..], Vec::as_slice);
                    let y = meter_year_from_rollups(&m, ev, &window, &cal);
                    (m.id, year, key, Arc::new(y))
                })
                .collect::<Vec<_>>()
        });
    }
    let mut rows = Vec::with_capacity(batch.len());
    while let Some(done) = jobs.join_next().await {
        rows.extend(done.map_err(|e| EngineError::Invalid(e.to_string()))?);
    }
    Ok(rows)
}

/// A meter's year from its roll-ups over the year and the readings just around it: each
/// hour's first and last reading, in one pass, then the continuous counter and the ledger.
pub fn meter_year_from_rollups(
    m: &crate::registry::Meter,
    events: &[Event],
    window: &Window,
    cal: &YearCalendar,
) -> MeterYear {
    let readings = super::rollup::window_readings(window);
    let c = continuous(&readings, events, m.rollover, m.max_per_hour.map(|x| x / m.multiplier), m.multiplier);
    meter_year(&c.readings, cal, c.flags, c.rejected_readings)
}

/// A `reading` event of another quantity than the meter's counter corrects that quantity's
/// stored reading only; every other event is the counter's.
fn applies_to_counter(reg: &Registry, r: &EventRecord) -> bool {
    match (r.quantity(), reg.meter(&r.meter)) {
        (Some(q), Some(m)) => q == m.counter(),
        _ => true,
    }
}

impl Engine {
    /// Loads the events of the registry and of `<data_dir>/meter-events.jsonl`.
    pub fn open(data_dir: &Path, reg: &Registry, tz: Tz) -> Result<Engine, EngineError> {
        let log_path = data_dir.join("meter-events.jsonl");
        let mut records = reg.events().to_vec();
        match std::fs::read_to_string(&log_path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<EventRecord>(line) {
                        Ok(r) => records.push(r),
                        // A torn last line (power cut during an append) is dropped: its API call
                        // never got an answer.
                        Err(_) if n + 1 == text.lines().count() && !text.ends_with('\n') => {
                            tracing::warn!(path = %log_path.display(), "dropping a torn last line of the meter events log");
                        }
                        Err(e) => return Err(EngineError::Log { path: log_path, msg: format!("line {}: {e}", n + 1) }),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::Log { path: log_path, msg: e.to_string() }),
        }
        let mut events: HashMap<String, Vec<Event>> = HashMap::new();
        for r in &records {
            // Events of meters that left the registry are kept in the log but not applied.
            if reg.meter(&r.meter).is_none() {
                continue;
            }
            let e = event_of(r, tz).map_err(|source| EngineError::Event { meter: r.meter.clone(), time: r.time.clone(), source })?;
            if applies_to_counter(reg, r) {
                events.entry(r.meter.clone()).or_default().push(e);
            }
        }
        Ok(Engine {
            tz,
            log_path,
            cache: Mutex::new(HashMap::new()),
            disk: Arc::new(DiskCache::open(data_dir.join("accounting-cache.sqlite"), tz)),
            compute: tokio::sync::Mutex::new(false),
            calendars: Mutex::new(HashMap::new()),
            events: RwLock::new(events),
            records: RwLock::new(records),
            log: Mutex::new(()),
            computed: std::sync::atomic::AtomicU64::new(0),
            years: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            results: Mutex::new(HashMap::new()),
        })
    }

    /// Writes the disk cache's rows that are due (every one waiting when `all`: the daemon
    /// stopping); blocking.
    pub fn write_cache(&self, all: bool) {
        self.disk.write_due(all);
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    pub fn calendar(&self, year: i32) -> Result<Arc<YearCalendar>, EngineError> {
        if !(1970..=2200).contains(&year) {
            return Err(EngineError::Year(year));
        }
        let mut c = self.calendars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cal) = c.get(&year) {
            return Ok(cal.clone());
        }
        let cal = Arc::new(YearCalendar::new(self.tz, year).ok_or(EngineError::Year(year))?);
        c.insert(year, cal.clone());
        Ok(cal)
    }

    fn year_of(&self, ms: i64) -> i32 {
        DateTime::from_timestamp_millis(ms).map_or(1970, |t| t.with_timezone(&self.tz).year())
    }

    /// Records an event posted to the API: checked, appended to the log and fsynced, applied.
    pub fn record_event(&self, reg: &Registry, mut rec: EventRecord) -> Result<EventRecord, EngineError> {
        if reg.meter(&rec.meter).is_none_or(|m| m.is_virtual()) {
            return Err(EngineError::NotPhysical(rec.meter.clone()));
        }
        let ev = event_of(&rec, self.tz)?;
        rec.recorded_at = Some(chrono::Utc::now().with_timezone(&self.tz).to_rfc3339());
        let line = serde_json::to_string(&rec).map_err(|e| EngineError::Log { path: self.log_path.clone(), msg: e.to_string() })?;
        {
            let _g = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let io = |e: std::io::Error| EngineError::Log { path: self.log_path.clone(), msg: e.to_string() };
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).map_err(io)?;
            f.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        if applies_to_counter(reg, &rec) {
            self.events.write().unwrap_or_else(|e| e.into_inner()).entry(rec.meter.clone()).or_default().push(ev);
        }
        self.records.write().unwrap_or_else(|e| e.into_inner()).push(rec.clone());
        self.invalidate(&rec.meter, i32::MIN);
        Ok(rec)
    }

    /// Events by meter, as applied.
    pub fn events_by_meter(&self) -> HashMap<String, Vec<Event>> {
        self.events.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Event records of a meter (all meters when `None`).
    pub fn event_records(&self, meter: Option<&str>) -> Vec<EventRecord> {
        self.records.read().unwrap_or_else(|e| e.into_inner()).iter().filter(|r| meter.is_none_or(|m| r.meter == m)).cloned().collect()
    }

    /// Drops the cached years of a meter from `from_year` on (a meter event changes the
    /// meter's key, so its disk rows are missed anyway).
    pub fn invalidate(&self, meter: &str, from_year: i32) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|(m, y), _| m != meter || *y < from_year);
    }

    /// The disk cache key of a meter: its definition, its events, the time zone, the engine.
    fn key(&self, m: &crate::registry::Meter, events: &[Event]) -> String {
        let def = serde_json::to_string(m).unwrap_or_default();
        key_of(&[&ENGINE_VERSION.to_string(), self.tz.name(), &def, &format!("{events:?}")])
    }

    /// Applies the store's change records: drops what they touch, then forgets them.
    async fn apply_dirty(&self, store: &Store, reg: &Registry) -> Result<(), EngineError> {
        let marks = store.change_records().await?;
        if marks.is_empty() {
            return Ok(());
        }
        let mut applied = Vec::with_capacity(marks.len());
        for (meter, t, seq) in marks {
            let from = match reg.meter(&meter) {
                Some(m) => {
                    let before = store.reading_before(&meter, m.counter(), t).await?;
                    self.year_of(before.unwrap_or(t).min(t))
                }
                None => i32::MIN,
            };
            self.invalidate(&meter, from);
            let disk = self.disk.clone();
            let m = meter.clone();
            tokio::task::spawn_blocking(move || disk.invalidate(&m, from)).await.map_err(|e| EngineError::Invalid(e.to_string()))?;
            applied.push((meter, seq));
        }
        store.forget_change_records(applied).await?;
        Ok(())
    }

    /// Every physical meter's year, from the caches or computed: the memory cache, then the
    /// disk cache, then computed from the store (and put in both caches).
    pub async fn meter_years(&self, store: &Store, reg: &Registry, year: i32) -> Result<MeterYears, EngineError> {
        let cal = self.calendar(year)?;
        let mut checked = self.compute.lock().await;
        if !*checked {
            self.check_disk_epoch(store).await?;
            *checked = true;
        }
        self.apply_dirty(store, reg).await?;
        let events = self.events_by_meter();
        let (mut out, missing) = self.cached_in_memory(reg, year, &events);
        if missing.is_empty() {
            return Ok(out);
        }
        let missing = self.cached_on_disk(year, missing, &mut out).await?;
        self.compute_missing(store, &cal, events, year, &missing, &mut out).await?;
        Ok(out)
    }

    /// Drops the disk cache's rows if they are of another store (another change epoch).
    async fn check_disk_epoch(&self, store: &Store) -> Result<(), EngineError> {
        let epoch = store.change_epoch().await?;
        let disk = self.disk.clone();
        tokio::task::spawn_blocking(move || disk.check_epoch(&epoch)).await.map_err(|e| EngineError::Invalid(e.to_string()))
    }

    /// The physical meters' years in the memory cache, and the meters not there (each with its
    /// cache key).
    fn cached_in_memory(&self, reg: &Registry, year: i32, events: &HashMap<String, Vec<Event>>) -> (MeterYears, Missing) {
        let no_events = Vec::new();
        let mut out = HashMap::new();
        let mut missing: Missing = Vec::new();
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for m in reg.file.meters.iter().filter(|m| !m.is_virtual()) {
            match c.get(&(m.id.clone(), year)) {
                Some(y) => {
                    out.insert(m.id.clone(), y.clone());
                }
                None => missing.push((m.clone(), self.key(m, events.get(&m.id).unwrap_or(&no_events)))),
            }
        }
        (out, missing)
    }

    /// The years of `missing` found in the disk cache, into `out` and the memory cache; the
    /// meters still missing.
    async fn cached_on_disk(&self, year: i32, missing: Missing, out: &mut MeterYears) -> Result<Missing, EngineError> {
        let disk = self.disk.clone();
        let (found, missing) = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut rest = Vec::new();
            for (m, key) in missing {
                match disk.get(&m.id, year, &key) {
                    Some(y) => found.push((m.id.clone(), Arc::new(y))),
                    None => rest.push((m, key)),
                }
            }
            (found, rest)
        })
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (id, y) in found {
            c.insert((id.clone(), year), y.clone());
            out.insert(id, y);
        }
        Ok(missing)
    }

    /// Computes the years of `missing` into `out` and both caches, a batch at a time, from the
    /// store as of one flush: it is later than the change records applied before, and points
    /// acknowledged after it left change records that the next call applies (one flush, not one
    /// per batch while ingest goes on). The next batch's roll-ups are read while one is
    /// computed, its meters spread over the machine's cores, and its rows written to the disk
    /// cache while the next is computed; every write is awaited before this returns (the
    /// caller holds the lock), also on an error.
    async fn compute_missing(
        &self,
        store: &Store,
        cal: &Arc<YearCalendar>,
        events: HashMap<String, Vec<Event>>,
        year: i32,
        missing: &[(crate::registry::Meter, String)],
        out: &mut MeterYears,
    ) -> Result<(), EngineError> {
        let events = Arc::new(events);
        store.flush().await?;
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let batches: Vec<&[(crate::registry::Meter, String)]> = missing.chunks(BATCH).collect();
        let read = |batch: &[(crate::registry::Meter, String)]| {
            let series = batch.iter().map(|(m, _)| (m.id.clone(), m.counter())).collect();
            let (store, from, to) = (store.clone(), cal.start(), cal.end());
            tokio::spawn(async move { store.counter_rollups_many_settled(series, from, to).await })
        };
        let task = |e: tokio::task::JoinError| EngineError::Invalid(e.to_string());
        let mut put: Option<tokio::task::JoinHandle<()>> = None;
        let mut next = batches.first().map(|b| read(b));
        let computed = async {
            for (i, batch) in batches.iter().enumerate() {
                let Some(reading) = next.take() else { break };
                let windows = reading.await.map_err(task)??;
                next = batches.get(i + 1).map(|b| read(b));
                let rows = compute_batch(batch, windows, cal, &events, year, threads).await?;
                self.computed.fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
                {
                    let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    for (id, _, _, y) in &rows {
                        c.insert((id.clone(), year), y.clone());
                        out.insert(id.clone(), y.clone());
                    }
                }
                if let Some(p) = put.take() {
                    p.await.map_err(task)?;
                }
                let disk = self.disk.clone();
                put = Some(tokio::task::spawn_blocking(move || disk.put(&rows)));
            }
            Ok::<(), EngineError>(())
        }
        .await;
        // A read started ahead and not needed (after an error) ends by itself; a write is awaited.
        if let Some(r) = next {
            r.abort();
        }
        if let Some(p) = put {
            p.await.map_err(task)?;
        }
        computed
    }

    /// The year's meters, allocated to agencies: the allocation computed last, while none of
    /// the year's meter-years changed and the registry is the same; else computed again, each
    /// agency's part keeping its generation when it is equal to the one before.
    pub async fn year(&self, store: &Store, reg: &Registry, year: i32) -> Result<Arc<YearData>, EngineError> {
        let cal = self.calendar(year)?;
        let meters = self.meter_years(store, reg, year).await?;
        let before = self.years.lock().unwrap_or_else(|e| e.into_inner()).get(&year).cloned().filter(|b| b.reg_stamp == reg.stamp());
        if let Some(b) = before.as_ref().filter(|b| same_meters(&b.meters, &meters)) {
            return Ok(b.clone());
        }
        let full = full_series(reg, &meters, cal.days());
        let start = chrono::NaiveDate::from_ymd_opt(year, 1, 1).ok_or(EngineError::Year(year))?;
        let (contributions, negative) = contributions(reg, &full, start, cal.days());
        let mut by_agency: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in contributions.iter().enumerate() {
            by_agency.entry(c.agency.clone()).or_default().push(i);
        }
        let mut to_check: Vec<String> =
            meters.iter().filter(|(_, y)| y.flags.iter().any(|f| matches!(f, super::counter::Flag::UnexplainedDecrease { .. }))).map(|(id, _)| id.clone()).collect();
        to_check.sort();
        let mut data = YearData { cal, meters, contributions, negative, by_agency, to_check, reg_stamp: reg.stamp(), stamps: HashMap::new() };
        data.stamps = self.restamp(before.as_deref(), &data);
        let data = Arc::new(data);
        let mut years = self.years.lock().unwrap_or_else(|e| e.into_inner());
        // The years pages and reports ask for are few; a walk through many keeps the last ones.
        years.insert(year, data.clone());
        // The years farthest from the one asked go first.
        while years.len() > MAX_YEARS {
            let Some(far) = years.keys().copied().max_by_key(|y| (y - year).abs()) else { break };
            years.remove(&far);
        }
        Ok(data)
    }

    /// The agencies' generations in `now`: those of `before` for the parts equal in both, a new
    /// one for the others (every part, without `before`).
    fn restamp(&self, before: Option<&YearData>, now: &YearData) -> HashMap<String, u64> {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut agencies: Vec<&String> = now.by_agency.keys().collect();
        if let Some(b) = before {
            agencies.extend(b.stamps.keys());
        }
        agencies.sort();
        agencies.dedup();
        agencies
            .into_iter()
            .map(|a| {
                let kept = before.filter(|b| b.part(a) == now.part(a)).map(|b| b.stamp(a));
                (a.clone(), kept.unwrap_or(generation))
            })
            .collect()
    }

    /// Indicators of every agency for `year` (a year in progress up to `now_ms`), each over
    /// `scope(agency)`: the agencies whose consumption it sums (itself, or its jurisdiction).
    pub async fn indicators(
        &self,
        store: &Store,
        reg: &Registry,
        year: i32,
        now_ms: i64,
        agencies: &[(&crate::registry::Agency, Vec<&str>)],
    ) -> Result<Vec<AgencyIndicators>, EngineError> {
        let this = self.year(store, reg, year).await?;
        let last = self.year(store, reg, year - 1).await.ok();
        let as_of = this.cal.days_before(now_ms);
        // Baseline years of reduction targets without a given baseline value.
        let mut baseline_years: Vec<i32> =
            reg.file.reductions.iter().filter(|r| r.baseline_value.is_none() && r.baseline_year < year).map(|r| r.baseline_year).collect();
        baseline_years.sort_unstable();
        baseline_years.dedup();
        let mut base_data = Vec::new();
        let last_is_baseline = baseline_years.contains(&(year - 1));
        for y in baseline_years {
            if y == year - 1 {
                continue;
            }
            if let Ok(d) = self.year(store, reg, y).await {
                base_data.push(d);
            }
        }
        let mut out: Vec<Option<AgencyIndicators>> = vec![None; agencies.len()];
        // The agencies whose result is not kept, each with its key and stamps.
        let mut todo: Vec<(usize, String, Vec<u64>)> = Vec::new();
        for (i, (agency, scope)) in agencies.iter().enumerate() {
            // What the result is computed from: the registry, and each year's parts of the
            // agencies in scope (a year not there: a marker of its own).
            let key = format!("{}\u{1f}{}\u{1f}{year}\u{1f}{as_of}", agency.id, scope.join("\u{1f}"));
            let mut stamps = vec![reg.stamp()];
            for d in std::iter::once(Some(&this)).chain([last.as_ref()]).chain(base_data.iter().map(Some)) {
                match d {
                    Some(d) => {
                        stamps.push(d.cal.year as u64);
                        stamps.extend(scope.iter().map(|m| d.stamp(m)));
                    }
                    None => stamps.push(u64::MAX),
                }
            }
            let kept = self.results.lock().unwrap_or_else(|e| e.into_inner()).get(&key).filter(|(s, _)| *s == stamps).map(|(_, r)| r.clone());
            match kept {
                Some(r) => out[i] = Some(r.as_ref().clone()),
                None => todo.push((i, key, stamps)),
            }
        }
        // Computed in as many parts as the machine has cores (each part on a thread of its own,
        // joined before this goes on), when there are enough to share.
        let one = |i: usize| {
            let (agency, scope) = &agencies[i];
            Self::agency_indicators(reg, &this, last.as_deref(), &base_data, last_is_baseline, as_of, agency, scope)
        };
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(todo.len() / PER_THREAD).max(1);
        let computed: Vec<AgencyIndicators> = if threads > 1 {
            let per = todo.len().div_ceil(threads);
            std::thread::scope(|sc| {
                let parts: Vec<_> = todo.chunks(per).map(|part| sc.spawn(move || part.iter().map(|(i, _, _)| one(*i)).collect::<Vec<_>>())).collect();
                parts.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
            })
        } else {
            todo.iter().map(|(i, _, _)| one(*i)).collect()
        };
        {
            let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
            if results.len() + todo.len() > MAX_RESULTS {
                results.clear();
            }
            for ((i, key, stamps), ind) in todo.into_iter().zip(computed) {
                results.insert(key, (stamps, Arc::new(ind.clone())));
                out[i] = Some(ind);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// One agency's indicators over `scope` from the years' data.
    #[allow(clippy::too_many_arguments)]
    fn agency_indicators(
        reg: &Registry,
        this: &YearData,
        last: Option<&YearData>,
        base_data: &[Arc<YearData>],
        last_is_baseline: bool,
        as_of: usize,
        agency: &crate::registry::Agency,
        scope: &[&str],
    ) -> AgencyIndicators {
        let groups = this.groups(scope);
        let last_groups = last.as_ref().map(|l| (l.cal.clone(), l.groups(scope)));
        let mut baselines: BTreeMap<(Indicator, i32), f64> = BTreeMap::new();
        for d in base_data.iter().map(|d| d.as_ref()).chain(last.filter(|_| last_is_baseline)) {
            let g = d.groups(scope);
            if g.values().all(|s| s.total() == 0.0) {
                continue;
            }
            let ind = indicators(&Input { reg, agency, cal: &d.cal, groups: &g, last: None, as_of: d.cal.days(), baselines: &BTreeMap::new() });
            for v in ind.indicators {
                if let Some(x) = v.value.filter(|_| v.data == super::indicators::DataStatus::Complete) {
                    baselines.insert((v.indicator, d.cal.year), x);
                }
            }
        }
        let input = Input {
            reg,
            agency,
            cal: &this.cal,
            groups: &groups,
            last: last_groups.as_ref().filter(|(_, g)| g.values().any(|s| s.total() != 0.0)).map(|(c, g)| (c.as_ref(), g)),
            as_of,
            baselines: &baselines,
        };
        let mut ind = indicators(&input);
        if scope.len() != 1 || scope[0] != agency.id {
            let members: Vec<String> = scope.iter().map(|m| m.to_string()).collect();
            super::indicators::aggregate_over(reg, &mut ind, &members);
        }
        for n in &this.negative {
            if this.serves(&n.meter, scope) {
                ind.notes.push(format!("meter `{}`: its sub-meters measured {:.1} more than it did", n.meter, -n.remainder));
            }
        }
        for id in &this.to_check {
            if this.serves(id, scope) {
                ind.notes.push(format!("meter `{id}`: the counter went down without a recorded replacement; an engineer must check it"));
                ind.meters_to_check.push(id.clone());
            }
        }
        ind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Point;
    use energy_wire::Quantity;

    /// A root agency over a0-a3; buildings b0 (a0 60 %, a1 40 %) and b1 (a2 60 %, a3 40 %).
    fn four_agencies_in_two_buildings() -> String {
        let mut toml = String::from("[[agency]]\nid = \"root\"\nname = \"机关事务管理局\"\nlevel = \"city\"\nheadcount = { 2020 = 50 }\n");
        for a in 0..4 {
            toml.push_str(&format!("[[agency]]\nid = \"a{a}\"\nname = \"单位{a}\"\nlevel = \"city\"\nparent = \"root\"\nheadcount = {{ 2020 = 80 }}\n"));
        }
        for b in 0..2 {
            toml.push_str(&format!(
                "[[building]]\nid = \"b{b}\"\nname = \"楼{b}\"\nfloor_area = 5000\noccupants = [ {{ agency = \"a{}\", share = 0.6 }}, {{ agency = \"a{}\", share = 0.4 }} ]\n",
                2 * b,
                2 * b + 1
            ));
        }
        toml
    }

    /// After a meter's new reading, only the agencies it serves are computed again, and every
    /// agency's figures equal those of an engine that computes everything afresh. m0 (building
    /// b0: a0 60 %, a1 40 %) and m1 (b1: a2, a3) read 0, 10, 20 kWh an hour apart; then m0 reads
    /// 50 an hour later: a0's electricity goes from 0.6 x 20 = 12 to 0.6 x 50 = 30 kWh, a1's from
    /// 8 to 20, a2's and a3's stay 12 and 8. A `reading` event on m1 (its second reading
    /// corrected to 15) moves m1's consumption between its hours (15 and 5 instead of 10 and
    /// 10): a2 and a3 are computed again, a0 and a1 are not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_reading_recomputes_the_agencies_it_serves_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = four_agencies_in_two_buildings();
        for m in 0..2 {
            toml.push_str(&format!("[[meter]]\nid = \"m{m}\"\nbuilding = \"b{m}\"\ncarrier = \"electricity\"\n"));
        }
        let reg = Registry::parse(&toml).unwrap();
        let store = crate::store::open(dir.path(), Metrics::new()).unwrap();
        // 2026-03-01T00:00+08:00.
        let t0 = 1_772_294_400_000i64;
        let h = 3_600_000;
        let point = |meter: &str, i: i64, value: f64| Point { meter: meter.into(), quantity: Quantity::ActiveEnergyImport, ts: t0 + i * h, value };
        store.write_points(["m0", "m1"].iter().flat_map(|m| [point(m, 0, 0.0), point(m, 1, 10.0), point(m, 2, 20.0)]).collect()).await.unwrap();
        let engine = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap();
        let ids = ["a0", "a1", "a2", "a3"];
        let agencies: Vec<(&crate::registry::Agency, Vec<&str>)> = ids.iter().map(|&id| (reg.agency(id).unwrap(), vec![id])).collect();
        let now = t0 + 30 * 24 * h;
        let total = |x: &[AgencyIndicators]| -> Vec<f64> { x.iter().map(|a| a.get(Indicator::TotalEnergy).and_then(|v| v.value).unwrap_or(f64::NAN)).collect() };
        let kwh = |y: &YearData, a: &str| -> f64 { y.groups(&[a]).values().map(Series::total).sum() };

        let first = engine.indicators(&store, &reg, 2026, now, &agencies).await.unwrap();
        let y1 = engine.year(&store, &reg, 2026).await.unwrap();
        assert!(Arc::ptr_eq(&y1, &engine.year(&store, &reg, 2026).await.unwrap()), "nothing changed: the same allocation");
        assert_eq!(ids.map(|a| (kwh(&y1, a) * 1e6).round() / 1e6), [12.0, 8.0, 12.0, 8.0]);

        store.write_points(vec![point("m0", 3, 50.0)]).await.unwrap();
        let second = engine.indicators(&store, &reg, 2026, now, &agencies).await.unwrap();
        let y2 = engine.year(&store, &reg, 2026).await.unwrap();
        assert!(!Arc::ptr_eq(&y1, &y2));
        assert_eq!(ids.map(|a| (kwh(&y2, a) * 1e6).round() / 1e6), [30.0, 20.0, 12.0, 8.0]);
        assert_ne!(y2.stamp("a0"), y1.stamp("a0"));
        assert_ne!(y2.stamp("a1"), y1.stamp("a1"));
        assert_eq!(y2.stamp("a2"), y1.stamp("a2"), "m0 does not serve a2");
        assert_eq!(y2.stamp("a3"), y1.stamp("a3"));
        assert_ne!(total(&second)[..2], total(&first)[..2]);
        assert_eq!(total(&second)[2..], total(&first)[2..]);
        let fresh = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(second, fresh.indicators(&store, &reg, 2026, now, &agencies).await.unwrap(), "the kept results are those computed afresh");

        let ev = EventRecord {
            meter: "m1".into(),
            kind: crate::registry::EventKind::Reading { value: 15.0, quantity: None },
            time: "2026-03-01T01:00:00+08:00".into(),
            by: "工程师".into(),
            reason: "复核读数".into(),
            recorded_at: None,
        };
        engine.record_event(&reg, ev).unwrap();
        let y3 = engine.year(&store, &reg, 2026).await.unwrap();
        assert_ne!(y3.stamp("a2"), y2.stamp("a2"), "m1's hours changed");
        assert_eq!(y3.stamp("a0"), y2.stamp("a0"));
        let third = engine.indicators(&store, &reg, 2026, now, &agencies).await.unwrap();
        let fresh = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(third, fresh.indicators(&store, &reg, 2026, now, &agencies).await.unwrap());
        // Another registry (the same text) is another registry: nothing of the first is reused.
        let reg2 = Registry::parse(&toml).unwrap();
        assert!(!Arc::ptr_eq(&engine.year(&store, &reg, 2026).await.unwrap(), &engine.year(&store, &reg2, 2026).await.unwrap()));
        // A walk back through the years keeps eight at most, those nearest the last asked.
        for y in (2010..=2026).rev() {
            engine.year(&store, &reg, y).await.unwrap();
        }
        let mut kept: Vec<i32> = engine.years.lock().unwrap().keys().copied().collect();
        kept.sort();
        assert_eq!(kept, (2010..=2017).collect::<Vec<_>>());
        store.close();
    }

    /// Many agencies are computed on several threads, in the order asked, each as it is alone:
    /// 40 buildings of one meter each, shared 60/40 by two agencies; meter k reads 0, k + 1,
    /// 2 (k + 1) an hour apart. The 80 agencies at once (two parts on a two-core machine)
    /// equal each agency asked alone (one part) on a fresh engine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agencies_computed_in_parts_equal_each_computed_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        for a in 0..80 {
            toml.push_str(&format!("[[agency]]\nid = \"a{a}\"\nname = \"单位{a}\"\nlevel = \"city\"\nheadcount = {{ 2020 = {} }}\n", 50 + a));
        }
        for b in 0..40 {
            toml.push_str(&format!(
                "[[building]]\nid = \"b{b}\"\nname = \"楼{b}\"\nfloor_area = {}\noccupants = [ {{ agency = \"a{}\", share = 0.6 }}, {{ agency = \"a{}\", share = 0.4 }} ]\n[[meter]]\nid = \"m{b}\"\nbuilding = \"b{b}\"\ncarrier = \"electricity\"\n",
                1000 + 10 * b,
                2 * b,
                2 * b + 1
            ));
        }
        let reg = Registry::parse(&toml).unwrap();
        let store = crate::store::open(dir.path(), Metrics::new()).unwrap();
        let (t0, h) = (1_772_294_400_000i64, 3_600_000);
        let points = (0..40)
            .flat_map(|k| (0..3).map(move |i| Point { meter: format!("m{k}").into(), quantity: Quantity::ActiveEnergyImport, ts: t0 + i * h, value: (i * (k + 1)) as f64 }))
            .collect();
        store.write_points(points).await.unwrap();
        let now = t0 + 30 * 24 * h;
        let agencies: Vec<(&crate::registry::Agency, Vec<&str>)> = reg.file.agencies.iter().map(|a| (a, vec![a.id.as_str()])).collect();
        let all = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap().indicators(&store, &reg, 2026, now, &agencies).await.unwrap();
        let alone = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(all.len(), 80);
        for (a, got) in agencies.iter().zip(&all) {
            let want = alone.indicators(&store, &reg, 2026, now, std::slice::from_ref(a)).await.unwrap();
            assert_eq!(std::slice::from_ref(got), want.as_slice(), "{}", a.0.id);
        }
        // a7 (b3's 40 %): 0.4 x 2 x 4 = 3.2 kWh, x 0.1229 kgce/kWh.
        let a7 = all[7].get(Indicator::TotalEnergy).and_then(|v| v.value).unwrap();
        assert!((a7 - 3.2 * 0.1229).abs() < 1e-9, "{a7}");
        store.close();
    }

    /// Each agency is told of the meters it is served by whose counter went down without a
    /// recorded replacement, by id, and of no others: m0 (building b0: agencies a0, a1) and m1
    /// (b1: a2, a3) go 500, 1, 2, 4, 6 (an unexplained decrease, `counter::tests::table`); m2
    /// (b0) rises cleanly; the root agency occupies no building; a jurisdiction over a2 and a0
    /// gets both, sorted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn meters_to_check_are_those_serving_the_agency_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = four_agencies_in_two_buildings();
        for (m, b, carrier) in [(0, 0, "electricity"), (1, 1, "electricity"), (2, 0, "water")] {
            toml.push_str(&format!("[[meter]]\nid = \"m{m}\"\nbuilding = \"b{b}\"\ncarrier = \"{carrier}\"\n"));
        }
        let reg = Registry::parse(&toml).unwrap();
        let store = crate::store::open(dir.path(), Metrics::new()).unwrap();
        // 2026-03-01T00:00+08:00.
        let t0 = 1_772_294_400_000i64;
        let h = 3_600_000;
        let mut points = Vec::new();
        for (meter, quantity, values) in [
            ("m0", Quantity::ActiveEnergyImport, [500.0, 1.0, 2.0, 4.0, 6.0]),
            ("m1", Quantity::ActiveEnergyImport, [500.0, 1.0, 2.0, 4.0, 6.0]),
            ("m2", Quantity::WaterVolume, [10.0, 11.0, 12.0, 13.0, 14.0]),
        ] {
            points.extend(values.iter().enumerate().map(|(i, &value)| Point { meter: meter.into(), quantity, ts: t0 + i as i64 * h, value }));
        }
        store.write_points(points).await.unwrap();
        let engine = Engine::open(dir.path(), &reg, chrono_tz::Asia::Shanghai).unwrap();
        let agency = |id: &str| reg.file.agencies.iter().find(|a| a.id == id).unwrap();
        let mut agencies: Vec<(&crate::registry::Agency, Vec<&str>)> = ["root", "a0", "a1", "a2", "a3"].iter().map(|&id| (agency(id), vec![id])).collect();
        agencies.push((agency("root"), vec!["a2", "a0"]));
        let out = engine.indicators(&store, &reg, 2026, t0 + 30 * 24 * h, &agencies).await.unwrap();
        let got: Vec<Vec<String>> = out.iter().map(|i| i.meters_to_check.clone()).collect();
        let want: Vec<Vec<&str>> = vec![vec![], vec!["m0"], vec!["m0"], vec!["m1"], vec!["m1"], vec!["m0", "m1"]];
        assert_eq!(got, want);
        for (i, w) in out.iter().zip(&want) {
            let notes: Vec<&String> = i.notes.iter().filter(|n| n.contains("went down without a recorded replacement")).collect();
            assert_eq!(notes.len(), w.len(), "{:?}", i.notes);
        }
        store.close();
    }
}
