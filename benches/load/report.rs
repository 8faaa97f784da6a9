//! The results: a Markdown table for people, and one `RESULT` line per
//! cell for scripts:
//!
//! ```text
//! RESULT store=S scenario=S impl=S rps=F p50_us=N p99_us=N allocs=F store_calls=F cpu_us=F redis_us=F
//! ```
//!
//! `cpu_us` is the server process's CPU time (user + system) per request
//! and `redis_us` the Redis CPU time per request (`INFO commandstats`), both
//! in microseconds over the measured window; a field that does not apply
//! (store calls of the baseline, Redis CPU off Redis) is `-`. With the
//! Redis rows comes one more line, the local cache's invalidation delay:
//!
//! ```text
//! RESULT store=redis scenario=invalidation impl=cloakroom-cached p50_us=N p99_us=N
//! ```

use std::fmt::Write as _;

use crate::invalidation::Invalidation;

/// The measurements of one (store, scenario, implementation).
pub(crate) struct Cell {
    pub(crate) store: &'static str,
    pub(crate) scenario: &'static str,
    pub(crate) imp: &'static str,
    pub(crate) rps: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) allocs: Option<f64>,
    pub(crate) store_calls: Option<f64>,
    /// Server process CPU (user + system) per request, in microseconds.
    pub(crate) cpu_us: Option<f64>,
    /// Redis CPU per request, in microseconds (Redis rows only).
    pub(crate) redis_us: Option<f64>,
}

impl Cell {
    /// The mean of several runs of one cell: throughput, latency
    /// percentiles and per-request counts.
    pub(crate) fn average(runs: &[&Cell]) -> Cell {
        let n = runs.len() as f64;
        let mean = |f: &dyn Fn(&Cell) -> f64| runs.iter().map(|c| f(c)).sum::<f64>() / n;
        let first = runs[0];
        Cell {
            store: first.store,
            scenario: first.scenario,
            imp: first.imp,
            rps: mean(&|c| c.rps),
            p50_us: mean(&|c| c.p50_us as f64).round() as u64,
            p99_us: mean(&|c| c.p99_us as f64).round() as u64,
            allocs: first.allocs.map(|_| mean(&|c| c.allocs.unwrap_or(0.0))),
            store_calls: first
                .store_calls
                .map(|_| mean(&|c| c.store_calls.unwrap_or(0.0))),
            cpu_us: first.cpu_us.map(|_| mean(&|c| c.cpu_us.unwrap_or(0.0))),
            redis_us: first.redis_us.map(|_| mean(&|c| c.redis_us.unwrap_or(0.0))),
        }
    }
}

pub(crate) fn report(
    cells: &[Cell],
    invalidation: Option<&Invalidation>,
    secs: u64,
    connections: usize,
) {
    let find = |store: &str, scenario: &str, imp: &str| {
        cells
            .iter()
            .find(|c| c.store == store && c.scenario == scenario && c.imp == imp)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n{secs} s per cell, {connections} connections; server on core 0, load generator on core 1\n"
    );
    let _ = writeln!(
        table,
        "| store | scenario | impl | req/s | p50 µs | p99 µs | vs baseline | vs tower-sessions | allocs/req | store calls/req | CPU µs/req | Redis µs/req |"
    );
    let _ = writeln!(
        table,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cells {
        let ratio = |other: Option<&Cell>| match other {
            Some(o) if o.rps > 0.0 && !std::ptr::eq(o, c) => format!("{:.2}x", c.rps / o.rps),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.store,
            c.scenario,
            c.imp,
            c.rps,
            c.p50_us,
            c.p99_us,
            ratio(find(c.store, c.scenario, "baseline")),
            ratio(find(c.store, c.scenario, "tower-sessions")),
            c.allocs.map_or("-".into(), |a| format!("{a:.1}")),
            c.store_calls.map_or("-".into(), |s| format!("{s:.2}")),
            c.cpu_us.map_or("-".into(), |u| format!("{u:.1}")),
            c.redis_us.map_or("-".into(), |u| format!("{u:.2}")),
        );
    }
    println!("{table}");
    // New fields go at the end, so that scripts reading the older ones
    // by position keep working.
    for c in cells {
        println!(
            "RESULT store={} scenario={} impl={} rps={:.1} p50_us={} p99_us={} allocs={} store_calls={} cpu_us={} redis_us={}",
            c.store,
            c.scenario,
            c.imp,
            c.rps,
            c.p50_us,
            c.p99_us,
            c.allocs.map_or("-".into(), |a| format!("{a:.2}")),
            c.store_calls.map_or("-".into(), |s| format!("{s:.2}")),
            c.cpu_us.map_or("-".into(), |u| format!("{u:.2}")),
            c.redis_us.map_or("-".into(), |u| format!("{u:.2}")),
        );
    }
    if let Some(i) = invalidation {
        println!(
            "\nLocal cache: a revocation on one instance to the other's first refusal, \
             over {} trials: p50 {} µs, p99 {} µs, max {} µs; {} bytes of heap per cached \
             session (one small value)",
            i.trials, i.p50_us, i.p99_us, i.max_us, i.bytes_per_session
        );
        println!(
            "RESULT store=redis scenario=invalidation impl=cloakroom-cached p50_us={} p99_us={}",
            i.p50_us, i.p99_us
        );
    }
}
