//! Per (app, tenant, API) call limits over sliding windows, as documented:
//! M365 Defender 50/min and 1,500/h, Defender for Endpoint 100/min and 1,500/h, Graph `/security`
//! 150/min (Graph's "security detections and incidents" limit per app per tenant; no hourly
//! figure is published).
//!
//! Every authenticated call counts, refused ones too ("retrying earlier keeps failing and still
//! counts against the quota"). The answer to a refused call is how long to wait until a call
//! would be accepted if none is made meanwhile.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Api;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The documented windows of an API: (length, calls allowed).
pub(crate) fn documented(api: Api) -> &'static [(Duration, u32)] {
    match api {
        Api::M365d => &[(MINUTE, 50), (HOUR, 1500)],
        Api::Mde => &[(MINUTE, 100), (HOUR, 1500)],
        Api::Graph => &[(MINUTE, 150)],
    }
}

/// The windows after scaling (never below one call).
pub(crate) fn scaled(api: Api, scale: f64) -> Vec<(Duration, u32)> {
    documented(api)
        .iter()
        .map(|(window, calls)| {
            let scaled = (f64::from(*calls) * scale).round();
            let calls = if scaled >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                (scaled as u32).max(1)
            };
            (*window, calls)
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub client_id: String,
    pub tenant_id: String,
    pub api: Api,
}

#[derive(Default)]
pub(crate) struct Limiter {
    calls: HashMap<Key, VecDeque<Instant>>,
}

impl Limiter {
    /// Records a call; `Some(seconds)` when it is over a limit.
    pub(crate) fn call(
        &mut self,
        key: Key,
        windows: &[(Duration, u32)],
        now: Instant,
    ) -> Option<u64> {
        let keep = windows
            .iter()
            .map(|(_, calls)| *calls as usize)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let longest = windows
            .iter()
            .map(|(window, _)| *window)
            .max()
            .unwrap_or_default();
        let calls = self.calls.entry(key).or_default();
        calls.push_back(now);
        while calls.len() > keep
            || calls
                .front()
                .is_some_and(|first| now.duration_since(*first) >= longest)
        {
            calls.pop_front();
        }
        let mut wait: Option<Duration> = None;
        for (window, limit) in windows {
            let limit = *limit as usize;
            let in_window = calls
                .iter()
                .rev()
                .take_while(|at| now.duration_since(**at) < *window)
                .count();
            if in_window > limit {
                // A call at T is accepted once the `limit`-th newest call (this one included)
                // is a whole window old.
                let pivot = calls[calls.len() - limit];
                let until = (pivot + *window).saturating_duration_since(now);
                wait = Some(wait.map_or(until, |w| w.max(until)));
            }
        }
        wait.map(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    pub(crate) fn clear(&mut self) {
        self.calls.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            client_id: "c".into(),
            tenant_id: "t".into(),
            api: Api::M365d,
        }
    }

    #[test]
    fn the_minute_limit_refuses_the_51st_call() {
        let mut limiter = Limiter::default();
        let windows = documented(Api::M365d);
        let start = Instant::now();
        for n in 0..50 {
            assert_eq!(
                limiter.call(key(), windows, start + Duration::from_millis(n * 100)),
                None
            );
        }
        let wait = limiter
            .call(key(), windows, start + Duration::from_secs(10))
            .unwrap();
        // The 2nd call (0.1 s) leaves the window at 60.1 s: 51 s from now, rounded up.
        assert_eq!(wait, 51);
        // Waiting as told works.
        assert_eq!(
            limiter.call(key(), windows, start + Duration::from_secs(10 + wait)),
            None
        );
    }

    #[test]
    fn scaling_keeps_at_least_one_call() {
        assert_eq!(scaled(Api::M365d, 0.1)[0].1, 5);
        assert_eq!(scaled(Api::M365d, 0.0001)[0].1, 1);
        assert_eq!(scaled(Api::Graph, 2.0), vec![(MINUTE, 300)]);
    }

    #[test]
    fn the_hour_limit_counts_beyond_a_minute() {
        let mut limiter = Limiter::default();
        let windows = [(MINUTE, 5), (HOUR, 8)];
        let start = Instant::now();
        let mut refused = None;
        for n in 0..9 {
            refused = limiter.call(key(), &windows, start + MINUTE * n);
        }
        let wait = refused.expect("the 9th call in an hour is refused");
        assert!(wait > 60, "{wait}");
    }
}
