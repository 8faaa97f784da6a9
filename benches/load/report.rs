//! The results: a Markdown table for people, and one `RESULT` line per
//! cell for scripts.

use std::fmt::Write as _;

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
        }
    }
}

pub(crate) fn report(cells: &[Cell], secs: u64, connections: usize) {
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
        "| store | scenario | impl | req/s | p50 µs | p99 µs | vs baseline | vs tower-sessions | allocs/req | store calls/req |"
    );
    let _ = writeln!(
        table,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in cells {
        let ratio = |other: Option<&Cell>| match other {
            Some(o) if o.rps > 0.0 && !std::ptr::eq(o, c) => format!("{:.2}x", c.rps / o.rps),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
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
        );
    }
    println!("{table}");
    // The script lines keep to the three implementations of the spec; the
    // reference configuration is in the table only.
    for c in cells
        .iter()
        .filter(|c| c.imp != "tower-sessions-modified-only")
    {
        println!(
            "RESULT store={} scenario={} impl={} rps={:.1} p50_us={} p99_us={} allocs={} store_calls={}",
            c.store,
            c.scenario,
            c.imp,
            c.rps,
            c.p50_us,
            c.p99_us,
            c.allocs.map_or("-".into(), |a| format!("{a:.2}")),
            c.store_calls.map_or("-".into(), |s| format!("{s:.2}")),
        );
    }
}
