//! A tenant's records, generated from their index on demand, and the ordered scans that serve
//! `$filter`, `$orderby`, `$skip` and `$top` without materialising the tenant.
//!
//! Three index spaces:
//! - incident `i` in `0..incidents`;
//! - Defender for Endpoint alert `j` in `0..mde_alerts`, in contiguous blocks per incident
//!   (alert `j` belongs to incident `j * incidents / mde_alerts`);
//! - the "extra" (non-MDE: Office 365, Identity, Cloud Apps) alert of incident `i`, which exists
//!   for some incidents and always when the incident has no MDE alert;
//! - Graph-only alert `j` in `0..graph_alerts` (every product but Defender for Endpoint), in
//!   contiguous blocks per incident like the MDE alerts.
//!
//! Incident `i` lives in the time slot `[start + i * spacing, start + (i + 1) * spacing)`: it is
//! created in the first half and last updated in the second, and so are its alerts. Creation and
//! generated last-update times therefore grow with the index, so a time range is an index range
//! found by binary search. Only records "touched" since (a new last-update time) are kept in
//! memory, in per-space overrides ordered by time; a scan merges the untouched index range with
//! the touched ones.
//!
//! A few incidents are merged ("Redirected"): incident `r` redirects to `r + 1`, which then also
//! owns `r`'s alerts; `r` keeps none.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::iter::Peekable;

use super::config::DataConfig;
use super::edits::Edits;
use super::time::{self, TICKS_PER_SECOND, UNITS_PER_SECOND, units_to_ticks};

/// One record of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Rec {
    Incident(u32),
    Mde(u32),
    Extra(u32),
    Graph(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Incidents,
    Mde,
    Extra,
    Graph,
}

impl Rec {
    fn of(space: Space, index: u32) -> Rec {
        match space {
            Space::Incidents => Rec::Incident(index),
            Space::Mde => Rec::Mde(index),
            Space::Extra => Rec::Extra(index),
            Space::Graph => Rec::Graph(index),
        }
    }

    fn space(self) -> Space {
        match self {
            Rec::Incident(_) => Space::Incidents,
            Rec::Mde(_) => Space::Mde,
            Rec::Extra(_) => Space::Extra,
            Rec::Graph(_) => Space::Graph,
        }
    }

    fn index(self) -> u32 {
        match self {
            Rec::Incident(i) | Rec::Mde(i) | Rec::Extra(i) | Rec::Graph(i) => i,
        }
    }
}

/// Hash streams: one per generated property, so that properties do not correlate.
pub(crate) mod stream {
    pub const CREATED: u64 = 1;
    pub const UPDATED: u64 = 2;
    pub const MDE_CREATED: u64 = 3;
    pub const MDE_UPDATED: u64 = 4;
    pub const JITTER: u64 = 5;
    pub const EXTRA: u64 = 6;
    pub const TOUCH: u64 = 7;
    pub const STATUS: u64 = 10;
    pub const SEVERITY: u64 = 11;
    pub const ASSIGNED: u64 = 12;
    pub const VERDICT: u64 = 13;
    pub const TAGS: u64 = 14;
    pub const KIND: u64 = 15;
    pub const ID: u64 = 16;
    pub const DEVICE: u64 = 17;
    pub const USER: u64 = 18;
    pub const HASH: u64 = 19;
    pub const PRIORITY: u64 = 21;
    pub const ACTIVITY: u64 = 22;
    pub const GUID: u64 = 23;
    pub const GRAPH_CREATED: u64 = 24;
    pub const GRAPH_UPDATED: u64 = 25;
    pub const GRAPH_JITTER: u64 = 26;
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed 64-bit value of (seed, stream, index).
pub(crate) fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    splitmix(seed ^ splitmix(stream ^ splitmix(index)))
}

/// Inclusive bounds on a time, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl TimeRange {
    pub(crate) fn contains(&self, ticks: i64) -> bool {
        self.lo.is_none_or(|lo| ticks >= lo) && self.hi.is_none_or(|hi| ticks <= hi)
    }

    pub(crate) fn at_least(&mut self, ticks: i64) {
        self.lo = Some(self.lo.map_or(ticks, |lo| lo.max(ticks)));
    }

    pub(crate) fn at_most(&mut self, ticks: i64) {
        self.hi = Some(self.hi.map_or(ticks, |hi| hi.min(ticks)));
    }

    fn bounds(&self) -> (i64, i64) {
        (self.lo.unwrap_or(i64::MIN), self.hi.unwrap_or(i64::MAX))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub created: TimeRange,
    pub updated: TimeRange,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OrderField {
    Created,
    Updated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Order {
    pub field: OrderField,
    pub descending: bool,
}

impl Order {
    /// Every API's default: newest last update first.
    pub(crate) const NEWEST_FIRST: Order = Order {
        field: OrderField::Updated,
        descending: true,
    };
}

/// (value of the order field, record): scans yield records in this tuple's order.
pub(crate) type Item = (i64, Rec);
pub(crate) type Scan<'a> = Box<dyn Iterator<Item = Item> + 'a>;

/// New last-update times of touched records of one space.
#[derive(Default)]
struct Overrides {
    by_index: HashMap<u32, i64>,
    by_time: BTreeSet<(i64, u32)>,
}

impl Overrides {
    fn get(&self, index: u32) -> Option<i64> {
        self.by_index.get(&index).copied()
    }

    fn contains(&self, index: u32) -> bool {
        self.by_index.contains_key(&index)
    }

    fn set(&mut self, index: u32, ticks: i64) {
        if let Some(old) = self.by_index.insert(index, ticks) {
            self.by_time.remove(&(old, index));
        }
        self.by_time.insert((ticks, index));
    }

    fn latest(&self) -> Option<i64> {
        self.by_time.last().map(|(ticks, _)| *ticks)
    }

    fn len(&self) -> usize {
        self.by_index.len()
    }
}

pub(crate) struct TenantData {
    pub tenant_id: String,
    /// The tenant's first domain: user names and device names are made from it.
    pub domain: String,
    /// As loaded, with `start` resolved.
    pub config: DataConfig,
    start: i64,
    spacing_units: i64,
    half_units: i64,
    incidents: Overrides,
    mde: Overrides,
    extra: Overrides,
    graph: Overrides,
    /// Successful list pages served for this tenant (any data API).
    pub pages_served: u64,
    touch_rounds: u64,
    /// Values written by updates, comments and portal edits.
    pub edits: Edits,
    /// Graph alert ids already looked up (ids are computed, so finding one scans the alerts).
    pub alert_ids: HashMap<String, Rec>,
}

impl TenantData {
    pub(crate) fn new(
        tenant_id: String,
        domain: String,
        mut config: DataConfig,
        now: i64,
    ) -> TenantData {
        let spacing = i64::from(config.spacing_seconds) * TICKS_PER_SECOND;
        let start = match config.start {
            Some(start) => time::ceil_to_unit(time::from_datetime(start)),
            None => {
                // The newest record's slot ends at the last whole second.
                let slots = if config.incidents > 0 {
                    config.incidents
                } else {
                    config.mde_alerts.max(config.graph_alerts)
                };
                now.div_euclid(TICKS_PER_SECOND) * TICKS_PER_SECOND - i64::from(slots) * spacing
            }
        };
        config.start = chrono::DateTime::from_timestamp(
            start.div_euclid(TICKS_PER_SECOND),
            u32::try_from(start.rem_euclid(TICKS_PER_SECOND) * 100).unwrap_or(0),
        );
        if let Some(hunting) = &mut config.hunting {
            super::hunting::resolve_end(hunting, now);
        }
        let spacing_units = i64::from(config.spacing_seconds) * UNITS_PER_SECOND;
        TenantData {
            tenant_id,
            domain,
            config,
            start,
            spacing_units,
            half_units: spacing_units / 2,
            incidents: Overrides::default(),
            mde: Overrides::default(),
            extra: Overrides::default(),
            graph: Overrides::default(),
            pages_served: 0,
            touch_rounds: 0,
            edits: Edits::default(),
            alert_ids: HashMap::new(),
        }
    }

    pub(crate) fn hash(&self, stream: u64, index: u64) -> u64 {
        mix(self.config.seed, stream, index)
    }

    pub(crate) fn incident_count(&self) -> u32 {
        self.config.incidents
    }

    pub(crate) fn touched_count(&self) -> usize {
        self.incidents.len() + self.mde.len() + self.extra.len() + self.graph.len()
    }

    /// How many records carry written values.
    pub(crate) fn edited_count(&self) -> usize {
        self.edits.len()
    }

    pub(crate) fn incident_id(&self, index: u32) -> u64 {
        self.config.first_incident_id + u64::from(index)
    }

    /// The index of an incident id, if the tenant has it.
    pub(crate) fn incident_index(&self, id: u64) -> Option<u32> {
        let index = id.checked_sub(self.config.first_incident_id)?;
        u32::try_from(index)
            .ok()
            .filter(|index| *index < self.config.incidents)
    }

    fn len(&self, space: Space) -> u32 {
        match space {
            Space::Incidents | Space::Extra => self.config.incidents,
            Space::Mde => self.config.mde_alerts,
            Space::Graph => self.config.graph_alerts,
        }
    }

    fn overrides(&self, space: Space) -> &Overrides {
        match space {
            Space::Incidents => &self.incidents,
            Space::Mde => &self.mde,
            Space::Extra => &self.extra,
            Space::Graph => &self.graph,
        }
    }

    fn overrides_mut(&mut self, space: Space) -> &mut Overrides {
        match space {
            Space::Incidents => &mut self.incidents,
            Space::Mde => &mut self.mde,
            Space::Extra => &mut self.extra,
            Space::Graph => &mut self.graph,
        }
    }

    // --- time layout ---------------------------------------------------------------------

    /// Ticks of `units` (1/300 s) after `start`.
    fn at(&self, units: i64) -> i64 {
        self.start + units_to_ticks(units)
    }

    fn slot(&self, index: u32) -> i64 {
        i64::from(index) * self.spacing_units
    }

    fn created_offset(&self, stream: u64, index: u32) -> i64 {
        (self.hash(stream, u64::from(index)) % self.half_units as u64) as i64
    }

    /// Incident `i`'s alerts of a blocked space (MDE or Graph-only):
    /// `block_start(i)..block_start(i + 1)`.
    fn block_start(&self, space: Space, incident: u32) -> u32 {
        let (n, m) = (u64::from(self.config.incidents), u64::from(self.len(space)));
        ((u64::from(incident) * m).div_ceil(n)) as u32
    }

    fn block(&self, space: Space, incident: u32) -> std::ops::Range<u32> {
        if self.config.incidents == 0 {
            return 0..0;
        }
        self.block_start(space, incident)..self.block_start(space, incident + 1)
    }

    pub(crate) fn mde_block(&self, incident: u32) -> std::ops::Range<u32> {
        self.block(Space::Mde, incident)
    }

    /// The incident (by index, before redirection) whose block holds alert `j` of a blocked
    /// space.
    fn block_of(&self, space: Space, alert: u32) -> Option<u32> {
        let m = self.len(space);
        if self.config.incidents == 0 || m == 0 {
            return None;
        }
        Some((u64::from(alert) * u64::from(self.config.incidents) / u64::from(m)) as u32)
    }

    /// Creation time of alert `j` of a blocked space: inside its incident's slot, before the
    /// incident's own creation, never before the previous alert of the space.
    fn blocked_created(&self, space: Space, j: u32, streams: (u64, u64)) -> i64 {
        let (unlinked, jitter_stream) = streams;
        match self.block_of(space, j) {
            Some(i) => {
                let block = self.block(space, i);
                let count = i64::from(block.end - block.start);
                let position = i64::from(j - block.start);
                let span = units_to_ticks(self.created_offset(stream::CREATED, i));
                // Event-like precision, still never before the previous alert.
                let step = span / count;
                let jitter = if step > 0 {
                    (self.hash(jitter_stream, u64::from(j)) % step as u64) as i64
                } else {
                    0
                };
                self.at(self.slot(i)) + step * position + jitter
            }
            None => {
                let jitter =
                    (self.hash(jitter_stream, u64::from(j)) % units_to_ticks(1) as u64) as i64;
                self.at(self.slot(j) + self.created_offset(unlinked, j)) + jitter
            }
        }
    }

    pub(crate) fn created(&self, rec: Rec) -> i64 {
        match rec {
            Rec::Incident(i) => self.at(self.slot(i) + self.created_offset(stream::CREATED, i)),
            Rec::Extra(i) => {
                self.at(self.slot(i)) + units_to_ticks(self.created_offset(stream::CREATED, i)) / 2
            }
            Rec::Mde(j) => {
                self.blocked_created(Space::Mde, j, (stream::MDE_CREATED, stream::JITTER))
            }
            Rec::Graph(j) => self.blocked_created(
                Space::Graph,
                j,
                (stream::GRAPH_CREATED, stream::GRAPH_JITTER),
            ),
        }
    }

    fn base_updated(&self, rec: Rec) -> i64 {
        let half = self.half_units;
        match rec {
            Rec::Incident(i) => {
                self.at(self.slot(i) + half + self.created_offset(stream::UPDATED, i))
            }
            Rec::Extra(i) => {
                self.at(self.slot(i) + half + self.created_offset(stream::UPDATED, i) / 2)
            }
            Rec::Mde(j) => match self.block_of(Space::Mde, j) {
                Some(i) => {
                    let block = self.mde_block(i);
                    let count = i64::from(block.end - block.start);
                    let position = i64::from(j - block.start);
                    let offset = self.created_offset(stream::UPDATED, i);
                    self.at(self.slot(i) + half + offset * (position + 1) / (count + 1))
                }
                None => self.at(self.slot(j) + half + self.created_offset(stream::MDE_UPDATED, j)),
            },
            // Between the MDE alerts' times (odd fractions), so that the two spaces rarely tie.
            Rec::Graph(j) => match self.block_of(Space::Graph, j) {
                Some(i) => {
                    let block = self.block(Space::Graph, i);
                    let count = i64::from(block.end - block.start);
                    let position = i64::from(j - block.start);
                    let offset = self.created_offset(stream::UPDATED, i);
                    self.at(self.slot(i) + half + offset * (2 * position + 1) / (2 * count + 1))
                }
                None => {
                    self.at(self.slot(j) + half + self.created_offset(stream::GRAPH_UPDATED, j))
                }
            },
        }
    }

    /// The generated last-update time, ignoring touches and writes.
    pub(crate) fn generated_updated(&self, rec: Rec) -> i64 {
        self.base_updated(rec)
    }

    /// The last-update time, touched or generated.
    pub(crate) fn updated(&self, rec: Rec) -> i64 {
        self.overrides(rec.space())
            .get(rec.index())
            .unwrap_or_else(|| self.base_updated(rec))
    }

    pub(crate) fn exists(&self, rec: Rec) -> bool {
        match rec {
            Rec::Extra(i) => {
                self.mde_block(i).is_empty()
                    || self.hash(stream::EXTRA, u64::from(i)).is_multiple_of(2)
            }
            Rec::Incident(i) => i < self.config.incidents,
            Rec::Mde(j) => j < self.config.mde_alerts,
            Rec::Graph(j) => j < self.config.graph_alerts,
        }
    }

    // --- relations -----------------------------------------------------------------------

    /// Merged into the next incident.
    pub(crate) fn redirected(&self, incident: u32) -> bool {
        self.config.incidents >= 2
            && incident + 1 < self.config.incidents
            && (u64::from(incident) + self.config.seed % 37) % 37 == 17
    }

    /// The incident an incident's alerts end up in.
    fn owner(&self, incident: u32) -> u32 {
        if self.redirected(incident) {
            incident + 1
        } else {
            incident
        }
    }

    /// The (owning) incident of an alert; none for MDE alerts of a tenant without incidents.
    pub(crate) fn incident_of(&self, alert: Rec) -> Option<u32> {
        match alert {
            Rec::Mde(j) => self.block_of(Space::Mde, j).map(|i| self.owner(i)),
            Rec::Graph(j) => self.block_of(Space::Graph, j).map(|i| self.owner(i)),
            Rec::Extra(i) => Some(self.owner(i)),
            Rec::Incident(i) => Some(i),
        }
    }

    /// Alerts of an incident, oldest first: its own, and those of an incident merged into it.
    pub(crate) fn alerts_of(&self, incident: u32) -> Vec<Rec> {
        if self.redirected(incident) {
            return Vec::new();
        }
        let mut alerts = Vec::new();
        let mut sources = Vec::with_capacity(2);
        if incident > 0 && self.redirected(incident - 1) {
            sources.push(incident - 1);
        }
        sources.push(incident);
        for source in sources {
            alerts.extend(self.mde_block(source).map(Rec::Mde));
            alerts.extend(self.block(Space::Graph, source).map(Rec::Graph));
            if self.exists(Rec::Extra(source)) {
                alerts.push(Rec::Extra(source));
            }
        }
        alerts.sort_by_key(|alert| (self.created(*alert), *alert));
        alerts
    }

    // --- scans ---------------------------------------------------------------------------

    /// Records of one space inside `window`, in `order`, ties broken by record.
    pub(crate) fn scan<'a>(&'a self, space: Space, window: Window, order: Order) -> Scan<'a> {
        let n = self.len(space);
        let rec = move |i: u32| Rec::of(space, i);
        let (created_from, created_to) = index_range(n, |i| self.created(rec(i)), window.created);
        match order.field {
            OrderField::Created => {
                let records = (created_from..created_to)
                    .map(rec)
                    .filter(move |r| self.exists(*r) && window.updated.contains(self.updated(*r)))
                    .map(move |r| (self.created(r), r));
                if order.descending {
                    Box::new(records.rev())
                } else {
                    Box::new(records)
                }
            }
            OrderField::Updated => {
                let (updated_from, updated_to) =
                    index_range(n, |i| self.base_updated(rec(i)), window.updated);
                let from = created_from.max(updated_from);
                let to = created_to.min(updated_to).max(from);
                let overrides = self.overrides(space);
                let untouched = (from..to)
                    .filter(move |i| !overrides.contains(*i))
                    .map(rec)
                    .filter(move |r| self.exists(*r))
                    .map(move |r| (self.base_updated(r), r));
                let (lo, hi) = window.updated.bounds();
                let touched: Box<dyn DoubleEndedIterator<Item = Item> + 'a> = if lo > hi {
                    Box::new(std::iter::empty())
                } else {
                    Box::new(
                        overrides
                            .by_time
                            .range((lo, 0)..=(hi, u32::MAX))
                            .map(move |(ticks, i)| (*ticks, rec(*i)))
                            .filter(move |(_, r)| {
                                self.exists(*r) && window.created.contains(self.created(*r))
                            }),
                    )
                };
                if order.descending {
                    merge(Box::new(untouched.rev()), Box::new(touched.rev()), true)
                } else {
                    merge(Box::new(untouched), Box::new(touched), false)
                }
            }
        }
    }

    /// Records of several spaces, merged in `order`.
    pub(crate) fn scan_spaces<'a>(
        &'a self,
        spaces: &[Space],
        window: Window,
        order: Order,
    ) -> Scan<'a> {
        let mut scans = spaces.iter().map(|space| self.scan(*space, window, order));
        let first = scans.next().unwrap_or_else(|| Box::new(std::iter::empty()));
        scans.fold(first, |merged, next| merge(merged, next, order.descending))
    }

    /// A given set of records, restricted to `window` and put in `order`.
    pub(crate) fn scan_records<'a>(
        &'a self,
        records: Vec<Rec>,
        window: Window,
        order: Order,
    ) -> Scan<'a> {
        let mut items: Vec<Item> = records
            .into_iter()
            .filter(|r| {
                window.created.contains(self.created(*r))
                    && window.updated.contains(self.updated(*r))
            })
            .map(|r| match order.field {
                OrderField::Created => (self.created(r), r),
                OrderField::Updated => (self.updated(r), r),
            })
            .collect();
        items.sort_unstable();
        if order.descending {
            items.reverse();
        }
        Box::new(items.into_iter())
    }

    // --- changes -------------------------------------------------------------------------

    /// The newest last-update time of any record.
    fn latest(&self) -> i64 {
        let mut latest = i64::MIN;
        for space in [Space::Incidents, Space::Mde, Space::Extra, Space::Graph] {
            let n = self.len(space);
            if n > 0 {
                latest = latest.max(self.base_updated(Rec::of(space, n - 1)));
            }
            if let Some(touched) = self.overrides(space).latest() {
                latest = latest.max(touched);
            }
        }
        latest
    }

    /// `count` distinct random indices below `n`, a new draw every call.
    fn draw(&mut self, n: u32, count: u32) -> Vec<u32> {
        let count = count.min(n);
        self.touch_rounds += 1;
        let round = self.touch_rounds;
        let mut chosen = Vec::with_capacity(count as usize);
        let mut seen = HashSet::with_capacity(count as usize);
        let mut attempt = 0u64;
        while (chosen.len() as u32) < count {
            let pick = (self.hash(stream::TOUCH, (round << 32) | attempt) % u64::from(n)) as u32;
            attempt += 1;
            if seen.insert(pick) {
                chosen.push(pick);
            }
        }
        chosen
    }

    /// The `k`-th of a series of new last-update times: after every existing one and not
    /// before now, 1/300 s apart.
    fn touch_times(&self, now: i64) -> impl Fn(u32) -> i64 + use<> {
        let first = time::ceil_to_unit(now.max(self.latest().saturating_add(1)));
        let second = first.div_euclid(TICKS_PER_SECOND) * TICKS_PER_SECOND;
        let units = (first - second) * UNITS_PER_SECOND / TICKS_PER_SECOND;
        // ceil_to_unit put `first` on a unit boundary: recompute exactly from units.
        let units = (units..units + 2)
            .find(|u| second + units_to_ticks(*u) == first)
            .unwrap_or(units);
        move |k| second + units_to_ticks(units + i64::from(k))
    }

    /// Gives `count` random incidents, and all their alerts, a last-update time of now (or
    /// just after the newest record): they become the newest. Returns their indices.
    pub(crate) fn touch_incidents(&mut self, count: u32, now: i64) -> Vec<u32> {
        let chosen = self.draw(self.config.incidents, count);
        let at = self.touch_times(now);
        for (k, incident) in chosen.iter().enumerate() {
            let ticks = at(k as u32);
            self.incidents.set(*incident, ticks);
            for alert in self.alerts_of(*incident) {
                self.overrides_mut(alert.space()).set(alert.index(), ticks);
            }
        }
        chosen
    }

    /// Gives `count` random Defender for Endpoint alerts, and their incidents, a last-update
    /// time of now. Returns the alerts' indices.
    pub(crate) fn touch_mde_alerts(&mut self, count: u32, now: i64) -> Vec<u32> {
        self.touch_alerts(Space::Mde, count, now)
    }

    /// Gives `count` random alerts of a space (MDE or Graph-only), and their incidents, a
    /// last-update time of now. Returns the alerts' indices.
    pub(crate) fn touch_alerts(&mut self, space: Space, count: u32, now: i64) -> Vec<u32> {
        let chosen = self.draw(self.len(space), count);
        let at = self.touch_times(now);
        for (k, alert) in chosen.iter().enumerate() {
            let ticks = at(k as u32);
            self.overrides_mut(space).set(*alert, ticks);
            if let Some(incident) = self.incident_of(Rec::of(space, *alert)) {
                self.incidents.set(incident, ticks);
            }
        }
        chosen
    }

    /// Gives `records` one new last-update time, after every existing one and not before now
    /// (so each call's time is strictly later than the previous one's). Returns it.
    pub(crate) fn stamp(&mut self, records: &[Rec], now: i64) -> i64 {
        let at = self.touch_times(now)(0);
        for record in records {
            self.overrides_mut(record.space()).set(record.index(), at);
        }
        at
    }

    /// Every alert of the tenant whose Graph id could start with `prefix` (two letters), in
    /// index order: the endpoint alerts for `ea`, the others otherwise.
    pub(crate) fn alerts_with_prefix(&self, prefix: &str) -> Box<dyn Iterator<Item = Rec> + '_> {
        if prefix == "ea" {
            Box::new((0..self.config.mde_alerts).map(Rec::Mde))
        } else {
            Box::new(
                (0..self.config.incidents)
                    .map(Rec::Extra)
                    .filter(|rec| self.exists(*rec))
                    .chain((0..self.config.graph_alerts).map(Rec::Graph)),
            )
        }
    }

    /// Counts a served page and applies `touch_while_paging`.
    pub(crate) fn page_served(&mut self, now: i64) {
        self.pages_served += 1;
        let Some(mode) = self.config.touch_while_paging else {
            return;
        };
        if self
            .pages_served
            .is_multiple_of(u64::from(mode.every_pages))
        {
            if self.config.incidents > 0 {
                self.touch_incidents(mode.count, now);
            } else if self.config.mde_alerts > 0 {
                self.touch_mde_alerts(mode.count, now);
            } else {
                self.touch_alerts(Space::Graph, mode.count, now);
            }
        }
    }
}

/// Indices `i` in `0..n` with `value(i)` inside `range`, for a non-decreasing `value`.
fn index_range(n: u32, value: impl Fn(u32) -> i64, range: TimeRange) -> (u32, u32) {
    let from = match range.lo {
        Some(lo) => partition_point(n, |i| value(i) < lo),
        None => 0,
    };
    let to = match range.hi {
        Some(hi) => partition_point(n, |i| value(i) <= hi),
        None => n,
    };
    (from, to.max(from))
}

/// The first `i` in `0..n` for which `before(i)` is false (`before` holds on a prefix).
fn partition_point(n: u32, before: impl Fn(u32) -> bool) -> u32 {
    let (mut lo, mut hi) = (0u32, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

struct Merge<'a> {
    a: Peekable<Scan<'a>>,
    b: Peekable<Scan<'a>>,
    descending: bool,
}

fn merge<'a>(a: Scan<'a>, b: Scan<'a>, descending: bool) -> Scan<'a> {
    Box::new(Merge {
        a: a.peekable(),
        b: b.peekable(),
        descending,
    })
}

impl Iterator for Merge<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) => {
                if self.descending {
                    a > b
                } else {
                    a < b
                }
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_a { self.a.next() } else { self.b.next() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(incidents: u32, mde_alerts: u32) -> TenantData {
        tenant_with(incidents, mde_alerts, 0)
    }

    fn tenant_with(incidents: u32, mde_alerts: u32, graph_alerts: u32) -> TenantData {
        let config = DataConfig {
            incidents,
            mde_alerts,
            graph_alerts,
            seed: 7,
            start: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            ..DataConfig::default()
        };
        TenantData::new(
            "22222222-2222-4222-8222-222222222222".into(),
            "contoso.com".into(),
            config,
            time::now(),
        )
    }

    fn all(data: &TenantData, space: Space, order: Order) -> Vec<Item> {
        data.scan(space, Window::default(), order).collect()
    }

    #[test]
    fn times_grow_with_the_index_and_updates_follow_creation() {
        let data = tenant_with(500, 1300, 2100);
        for space in [Space::Incidents, Space::Mde, Space::Extra, Space::Graph] {
            let n = data.len(space);
            for i in 1..n {
                let (a, b) = (Rec::of(space, i - 1), Rec::of(space, i));
                assert!(data.created(a) <= data.created(b), "{a:?} {b:?}");
                assert!(data.base_updated(a) <= data.base_updated(b), "{a:?} {b:?}");
                assert!(data.created(b) < data.base_updated(b));
            }
        }
        for i in 0..500 {
            let updated = data.updated(Rec::Incident(i));
            for alert in data.alerts_of(i) {
                assert!(
                    data.updated(alert) <= updated,
                    "incident {i} alert {alert:?}"
                );
                assert_eq!(data.incident_of(alert), Some(i));
            }
        }
    }

    #[test]
    fn every_alert_belongs_to_exactly_one_listed_incident() {
        let data = tenant_with(200, 450, 700);
        let mut seen = HashSet::new();
        let mut redirected = 0;
        for i in 0..200 {
            if data.redirected(i) {
                redirected += 1;
                assert!(data.alerts_of(i).is_empty());
            } else {
                assert!(!data.alerts_of(i).is_empty(), "incident {i} has alerts");
            }
            for alert in data.alerts_of(i) {
                assert!(seen.insert(alert));
            }
        }
        assert!(redirected > 0);
        assert_eq!(
            seen.iter().filter(|r| matches!(r, Rec::Mde(_))).count(),
            450
        );
        assert_eq!(
            seen.iter().filter(|r| matches!(r, Rec::Graph(_))).count(),
            700
        );
    }

    #[test]
    fn scans_list_every_record_once_in_order() {
        let mut data = tenant(300, 100);
        data.touch_incidents(10, time::now());
        for order in [
            Order::NEWEST_FIRST,
            Order {
                field: OrderField::Updated,
                descending: false,
            },
            Order {
                field: OrderField::Created,
                descending: true,
            },
        ] {
            let items = all(&data, Space::Incidents, order);
            assert_eq!(items.len(), 300);
            let distinct: HashSet<Rec> = items.iter().map(|(_, r)| *r).collect();
            assert_eq!(distinct.len(), 300);
            for pair in items.windows(2) {
                if order.descending {
                    assert!(pair[0] > pair[1]);
                } else {
                    assert!(pair[0] < pair[1]);
                }
            }
        }
    }

    #[test]
    fn time_windows_match_a_full_filter() {
        let mut data = tenant(400, 0);
        data.touch_incidents(5, time::now());
        let everything = all(&data, Space::Incidents, Order::NEWEST_FIRST);
        let lo = data.updated(Rec::Incident(100));
        let hi = data.updated(Rec::Incident(250));
        let window = Window {
            updated: TimeRange {
                lo: Some(lo),
                hi: Some(hi),
            },
            ..Window::default()
        };
        let expected: Vec<Item> = everything
            .iter()
            .copied()
            .filter(|(_, r)| window.updated.contains(data.updated(*r)))
            .collect();
        let got: Vec<Item> = data
            .scan(Space::Incidents, window, Order::NEWEST_FIRST)
            .collect();
        assert_eq!(got, expected);
        assert!(!got.is_empty());
    }

    #[test]
    fn touched_incidents_become_the_newest_with_their_alerts() {
        let mut data = tenant(100, 150);
        let touched = data.touch_incidents(3, time::now());
        assert_eq!(touched.len(), 3);
        let newest: Vec<Rec> = all(&data, Space::Incidents, Order::NEWEST_FIRST)
            .into_iter()
            .take(3)
            .map(|(_, r)| r)
            .collect();
        let mut expected: Vec<Rec> = touched.iter().map(|i| Rec::Incident(*i)).collect();
        expected.reverse();
        assert_eq!(newest, expected);
        for incident in touched {
            for alert in data.alerts_of(incident) {
                assert_eq!(data.updated(alert), data.updated(Rec::Incident(incident)));
            }
        }
    }

    #[test]
    fn a_tenant_of_mde_alerts_only() {
        let mut data = tenant(0, 50);
        assert_eq!(all(&data, Space::Mde, Order::NEWEST_FIRST).len(), 50);
        assert_eq!(data.incident_of(Rec::Mde(3)), None);
        let touched = data.touch_mde_alerts(2, time::now());
        let first = all(&data, Space::Mde, Order::NEWEST_FIRST)[0].1;
        assert_eq!(first, Rec::Mde(touched[1]));
        assert_eq!(all(&data, Space::Incidents, Order::NEWEST_FIRST).len(), 0);
    }

    #[test]
    fn a_large_tenant_is_cheap() {
        let data = tenant(1_000_000, 1_000_000);
        let page: Vec<Item> = data
            .scan(Space::Incidents, Window::default(), Order::NEWEST_FIRST)
            .take(100)
            .collect();
        assert_eq!(page[0].1, Rec::Incident(999_999));
        assert_eq!(data.touched_count(), 0);
    }
}
