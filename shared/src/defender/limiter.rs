//! Staying under the documented per-tenant limits on our own, so steady state sees no 429:
//! a per-minute and a per-hour budget per (tenant, API). Per process: across concurrent Lambda
//! instances the template caps concurrency instead.

use std::collections::HashMap;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::sources::{SourceSpec, spec};
use crate::api::DefenderApi;
use crate::sink::Source;
use crate::tenant_id::TenantId;

pub struct Limiter {
    budgets: HashMap<DefenderApi, Budget>,
    clock: DefaultClock,
}

struct Budget {
    minute: DefaultKeyedRateLimiter<TenantId>,
    hour: DefaultKeyedRateLimiter<TenantId>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    pub fn new() -> Limiter {
        let budgets = [
            Source::M365dIncidents,
            Source::GraphIncidents,
            Source::MdeAlerts,
        ]
        .into_iter()
        .map(|source| {
            let SourceSpec {
                api,
                per_minute,
                per_hour,
                ..
            } = spec(source);
            (
                api,
                Budget {
                    minute: RateLimiter::keyed(Quota::per_minute(per_minute)),
                    hour: RateLimiter::keyed(Quota::per_hour(per_hour)),
                },
            )
        })
        .collect();
        Limiter {
            budgets,
            clock: DefaultClock::default(),
        }
    }

    /// Waits for a call slot for `tenant` on `api`, at most `max_wait`; otherwise answers how long
    /// the caller would have to wait.
    pub async fn acquire(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        max_wait: Duration,
    ) -> Result<(), Duration> {
        let Some(budget) = self.budgets.get(&api) else {
            return Ok(());
        };
        let mut waited = Duration::ZERO;
        loop {
            let now = self.clock.now();
            // The hour budget is checked first so a refused hour does not spend a minute slot.
            let wait = match budget.hour.check_key(tenant) {
                Err(not_until) => not_until.wait_time_from(now),
                Ok(()) => match budget.minute.check_key(tenant) {
                    Ok(()) => return Ok(()),
                    Err(not_until) => not_until.wait_time_from(now),
                },
            };
            if waited + wait > max_wait {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_minute_budget_holds_and_tenants_are_independent() {
        let limiter = Limiter::new();
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let other = TenantId::parse("0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec").unwrap();
        for _ in 0..50 {
            limiter
                .acquire(&tenant, DefenderApi::M365d, Duration::ZERO)
                .await
                .unwrap();
        }
        let wait = limiter
            .acquire(&tenant, DefenderApi::M365d, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        limiter
            .acquire(&other, DefenderApi::M365d, Duration::ZERO)
            .await
            .unwrap();
        // Defender for Endpoint has its own, larger budget.
        for _ in 0..100 {
            limiter
                .acquire(&tenant, DefenderApi::Mde, Duration::ZERO)
                .await
                .unwrap();
        }
        assert!(
            limiter
                .acquire(&tenant, DefenderApi::Mde, Duration::ZERO)
                .await
                .is_err()
        );
    }
}
