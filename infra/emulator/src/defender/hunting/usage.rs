//! Advanced hunting's limits per tenant (reference §12): at least 45 calls per minute, and a
//! CPU quota per 15-minute cycle. The CPU a query uses is not modelled: each query that runs
//! spends one unit of the tenant's quota (`hunting_cpu_quota` queries per cycle), so that a test
//! reaches the quota in a known number of queries.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::defender::Api;
use crate::defender::limits::{Key, Limiter};

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Cycle {
    start: Instant,
    queries: u32,
}

#[derive(Default)]
pub(crate) struct HuntingUsage {
    calls: Limiter,
    cycles: HashMap<String, Cycle>,
}

impl HuntingUsage {
    /// Counts a call against the per-minute limit: `Some(seconds)` to wait when over it.
    pub(crate) fn call(&mut self, tenant_id: &str, per_minute: u32, now: Instant) -> Option<u64> {
        let key = Key {
            client_id: String::new(),
            tenant_id: tenant_id.to_owned(),
            api: Api::Graph,
        };
        self.calls.call(key, &[(MINUTE, per_minute.max(1))], now)
    }

    fn cycle(&mut self, tenant_id: &str, length: Duration, now: Instant) -> &mut Cycle {
        let cycle = self.cycles.entry(tenant_id.to_owned()).or_insert(Cycle {
            start: now,
            queries: 0,
        });
        if now.duration_since(cycle.start) >= length {
            *cycle = Cycle {
                start: now,
                queries: 0,
            };
        }
        cycle
    }

    /// Spends one query of the tenant's quota; `Err(seconds)` until the cycle ends when it is
    /// spent. No quota: always `Ok`.
    pub(crate) fn spend(
        &mut self,
        tenant_id: &str,
        quota: Option<u32>,
        length: Duration,
        now: Instant,
    ) -> Result<(), u64> {
        let cycle = self.cycle(tenant_id, length, now);
        if let Some(quota) = quota
            && cycle.queries >= quota
        {
            let left = (cycle.start + length).saturating_duration_since(now);
            return Err(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        cycle.queries += 1;
        Ok(())
    }

    /// Queries of the tenant's current cycle and the seconds until it ends.
    pub(crate) fn state(&mut self, tenant_id: &str, length: Duration, now: Instant) -> (u32, u64) {
        let cycle = *self.cycle(tenant_id, length, now);
        let left = (cycle.start + length).saturating_duration_since(now);
        (cycle.queries, left.as_secs_f64().ceil() as u64)
    }

    pub(crate) fn reset_quota(&mut self) {
        self.cycles.clear();
    }

    pub(crate) fn reset_calls(&mut self) {
        self.calls.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_holds_until_the_cycle_ends() {
        let mut usage = HuntingUsage::default();
        let start = Instant::now();
        let cycle = Duration::from_secs(900);
        for _ in 0..3 {
            assert!(usage.spend("t", Some(3), cycle, start).is_ok());
        }
        let wait = usage
            .spend("t", Some(3), cycle, start + Duration::from_secs(100))
            .unwrap_err();
        assert_eq!(wait, 800);
        assert!(usage.spend("other", Some(3), cycle, start).is_ok());
        assert!(usage.spend("t", Some(3), cycle, start + cycle).is_ok());
        assert!(usage.spend("t", None, cycle, start + cycle).is_ok());
        usage.reset_quota();
        assert_eq!(usage.state("t", cycle, start + cycle).0, 0);
    }

    #[test]
    fn calls_are_limited_per_tenant() {
        let mut usage = HuntingUsage::default();
        let now = Instant::now();
        for _ in 0..45 {
            assert_eq!(usage.call("t", 45, now), None);
        }
        assert!(usage.call("t", 45, now).is_some());
        assert_eq!(usage.call("u", 45, now), None);
        usage.reset_calls();
        assert_eq!(usage.call("t", 45, now), None);
    }
}
