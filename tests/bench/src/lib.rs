//! What the in-process benchmarks share besides the test kit's `World`: the table of
//! median / p90 / max the latency benches print, and the cost bench's parts (`cost`: the
//! template's defaults, prices and a month's bill; `metered`: the AWS calls counted and given
//! AWS's time; `fleet_cost`: one fleet's scheduled runs measured as Lambda bills them).

pub mod cost;
pub mod fleet_cost;
pub mod metered;

use std::time::Duration;

/// Prints `title`, then one line per path: median, p90 and max of its samples.
pub fn print_latencies(title: &str, rows: &mut [(&str, Vec<Duration>)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(4);
    println!("{title}");
    println!(
        "{:<width$} {:>9} {:>9} {:>9}",
        "path", "median", "p90", "max"
    );
    for (name, samples) in rows.iter_mut() {
        samples.sort();
        let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
        println!(
            "{name:<width$} {:>9} {:>9} {:>9}",
            micros(at(0.5)),
            micros(at(0.9)),
            micros(samples[samples.len() - 1])
        );
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// `release` or `debug`: what the figures were measured with.
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
