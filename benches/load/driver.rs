//! The load generator: runs every cell (store, scenario, implementation)
//! against a fresh server process, with one keep-alive connection per
//! virtual client, and measures throughput and latency.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request, StatusCode};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};

use crate::cpu::{process_cpu_us, sent_usec, RedisCpu};
use crate::report::{report, Cell};
use crate::support::backend::free_port;
use crate::support::redis_server::{url_or_start, RedisServer};
use crate::{impls_for, SCENARIOS};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn driver_main() {
    // Pin this process (the load generator) to core 1 by re-running it
    // under `taskset`, once.
    if std::env::var_os("LOAD_PINNED").is_none() && which("taskset") {
        let status = Command::new("taskset")
            .arg("-c")
            .arg("1")
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("LOAD_PINNED", "1")
            .status()
            .expect("taskset");
        std::process::exit(status.code().unwrap_or(1));
    }
    let secs = env_u64("LOAD_SECS", 10);
    let connections = env_u64("LOAD_CONNECTIONS", 64) as usize;
    // SQLite rows when the bench is built with `--features sqlite`.
    let all_stores: &[&'static str] = if cfg!(feature = "sqlite") {
        &["memory", "redis", "sqlite"]
    } else {
        &["memory", "redis"]
    };
    let stores: Vec<&'static str> = match std::env::var("LOAD_STORES") {
        Ok(list) => all_stores
            .iter()
            .copied()
            .filter(|s| list.split(',').any(|l| l.trim() == *s))
            .collect(),
        Err(_) => all_stores.to_vec(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `REDIS_URL`, or a throwaway `redis-server` started on first use, as
    // the tests start one. It runs where the load generator runs: on core
    // 1, which this process is pinned to.
    let mut redis: Option<(String, Option<RedisServer>)> = None;
    let mut redis_cpu: Option<RedisCpu> = None;
    let mut cells = Vec::new();
    for store in stores {
        let redis_url = if store == "redis" {
            if redis.is_none() {
                redis = url_or_start();
            }
            match &redis {
                Some((url, _)) => {
                    if redis_cpu.is_none() {
                        redis_cpu = Some(runtime.block_on(RedisCpu::connect(url)));
                    }
                    Some(url.clone())
                }
                None => {
                    eprintln!("NOTICE: no redis-server and no REDIS_URL: skipping the Redis rows");
                    continue;
                }
            }
        } else {
            None
        };
        let scenarios: Vec<&'static str> = match std::env::var("LOAD_SCENARIOS") {
            Ok(list) => SCENARIOS
                .into_iter()
                .filter(|s| list.split(',').any(|l| l.trim() == *s))
                .collect(),
            Err(_) => SCENARIOS.to_vec(),
        };
        for scenario in scenarios {
            // Two passes in opposite orders (A B C, then C B A), each half
            // of LOAD_SECS, averaged: a machine that drifts faster or slower
            // during a scenario then tilts no implementation.
            let half = (secs as f64 / 2.0).max(1.0);
            let mut passes: Vec<Cell> = Vec::new();
            let impls = impls_for(store);
            let order: Vec<&'static str> =
                impls.iter().chain(impls.iter().rev()).copied().collect();
            for imp in order {
                eprintln!("running store={store} scenario={scenario} impl={imp} for {half}s ...");
                // Only the Redis rows read Redis's statistics.
                let redis_cpu = redis_url.as_ref().and(redis_cpu.as_mut());
                passes.push(runtime.block_on(run_cell(
                    store,
                    scenario,
                    imp,
                    redis_url.as_deref(),
                    redis_cpu,
                    half,
                    connections,
                )));
            }
            for &imp in impls {
                let runs: Vec<&Cell> = passes.iter().filter(|c| c.imp == imp).collect();
                cells.push(Cell::average(&runs));
            }
        }
    }
    drop(redis_cpu);
    // How fast a revocation reaches another instance's cache, on the same
    // Redis, after the load (so it does not compete with it).
    let invalidation = redis
        .as_ref()
        .filter(|_| std::env::var("LOAD_SCENARIOS").map_or(true, |l| l.contains("invalidation")))
        .map(|(url, _)| {
            eprintln!("running store=redis scenario=invalidation impl=cloakroom-cached ...");
            runtime.block_on(crate::invalidation::measure(url))
        });
    // Streams closed by a logout on another instance, after the load too.
    let streams = std::env::var("LOAD_SCENARIOS").map_or(true, |l| l.contains("stream"));
    let streams = if streams {
        runtime.block_on(crate::streams::run_all(
            redis.as_ref().map(|(url, _)| url.as_str()),
        ))
    } else {
        Vec::new()
    };
    drop(redis);
    report(&cells, invalidation.as_ref(), secs, connections);
    crate::streams::report(&streams);
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process, and the SQLite file it used, if any (removed with
/// its WAL once the server is gone).
struct Server(Child, Option<std::path::PathBuf>);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(path) = &self.1 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

fn start_server(imp: &str, store: &str, redis_url: Option<&str>) -> (Server, SocketAddr) {
    let addr = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut command = if which("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    command
        .env("LOAD_ROLE", "server")
        .env("LOAD_IMPL", imp)
        .env("LOAD_STORE", store)
        .env("LOAD_ADDR", addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(url) = redis_url {
        command.env("REDIS_URL", url);
    }
    // A fresh SQLite file per cell, so that no cell starts with another's
    // sessions.
    let sqlite_path = (store == "sqlite").then(|| {
        std::env::temp_dir().join(format!(
            "cloakroom-load-{}-{}.db",
            std::process::id(),
            addr.port()
        ))
    });
    if let Some(path) = &sqlite_path {
        command.env("LOAD_SQLITE_PATH", path);
    }
    let mut child = command.spawn().expect("server process");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "READY", "server did not start");
    (Server(child, sqlite_path), addr)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(
    sender: &mut Sender,
    method: &str,
    path: &str,
    cookie: Option<&HeaderValue>,
) -> (StatusCode, Option<HeaderValue>) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "bench.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    if let Some(cookie) = cookie {
        request.headers_mut().insert(header::COOKIE, cookie.clone());
    }
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let set_cookie = response.headers().get(header::SET_COOKIE).cloned();
    response.into_body().collect().await.unwrap();
    (status, set_cookie)
}

fn cookie_pair(set_cookie: &HeaderValue) -> HeaderValue {
    let text = set_cookie.to_str().unwrap();
    HeaderValue::from_str(text.split(';').next().unwrap()).unwrap()
}

async fn stats(addr: SocketAddr) -> (u64, u64, u64) {
    let mut sender = connect(addr).await;
    let request = Request::get("/__stats")
        .header(header::HOST, "bench.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (
        v["requests"].as_u64().unwrap(),
        v["store_calls"].as_u64().unwrap(),
        v["allocations"].as_u64().unwrap(),
    )
}

async fn run_cell(
    store: &'static str,
    scenario: &'static str,
    imp: &'static str,
    redis_url: Option<&str>,
    mut redis_cpu: Option<&mut RedisCpu>,
    secs: f64,
    connections: usize,
) -> Cell {
    let (server, addr) = start_server(imp, store, redis_url);
    // `taskset` execs the server in its own process, so this is the
    // server's pid either way.
    let pid = server.0.id();
    // One keep-alive connection (and one session) per virtual client.
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut sender = connect(addr).await;
        let cookie = if scenario == "anonymous" {
            None
        } else {
            let (status, set_cookie) = send(&mut sender, "POST", "/login", None).await;
            assert!(status.is_success(), "login: {status}");
            match set_cookie.as_ref().map(cookie_pair) {
                Some(pair) => Some(pair),
                // The app without sessions still receives the browser's
                // cookies: send the baseline a cookie of the same shape,
                // so that every implementation parses the same request.
                None if imp == "baseline" => Some(HeaderValue::from_static(
                    "__Host-id=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                )),
                None => panic!("{imp} set no cookie at login"),
            }
        };
        clients.push((sender, cookie));
    }
    let (method, path) = match scenario {
        "anonymous" => ("GET", "/anonymous"),
        "read" => ("GET", "/read"),
        _ => ("POST", "/write"),
    };
    // Warm up, then measure.
    let warmup = Duration::from_millis(1000);
    let measure = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let mut tasks = Vec::new();
    for (mut sender, cookie) in clients {
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut count = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let (status, _) = send(&mut sender, method, path, cookie.as_ref()).await;
                assert!(status.is_success(), "{method} {path}: {status}");
                if sent >= measure_from {
                    let micros = sent.elapsed().as_micros().max(1) as u64;
                    histogram.record(micros.min(60_000_000)).unwrap();
                    count += 1;
                }
            }
            (histogram, count)
        }));
    }
    // Server counters, server CPU time and Redis statistics at the start
    // and end of the measured window; each pair brackets the request
    // counts, so that startup, logins and warm-up stay out of the figures.
    tokio::time::sleep_until(measure_from.into()).await;
    if let Some(redis_cpu) = redis_cpu.as_mut() {
        redis_cpu.reset().await;
    }
    let cpu_first = process_cpu_us(pid);
    let first = stats(addr).await;
    tokio::time::sleep_until(end.into()).await;
    let last = stats(addr).await;
    let cpu_last = process_cpu_us(pid);
    let redis_commands = match redis_cpu {
        Some(redis_cpu) => Some(redis_cpu.commands().await),
        None => None,
    };
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut total = 0u64;
    for task in tasks {
        let (h, count) = task.await.unwrap();
        histogram.add(h).unwrap();
        total += count;
    }
    let requests = (last.0 - first.0).max(1) as f64;
    // `/__stats` itself allocates a little; spread over thousands of
    // requests it is noise.
    let allocs = (last.2 - first.2) as f64 / requests;
    let store_calls = (last.1 - first.1) as f64 / requests;
    let cpu_us = cpu_first
        .zip(cpu_last)
        .map(|(first, last)| (last - first) / requests);
    let redis_us = redis_commands.map(|commands| {
        // What the figure is made of, for a reader who doubts it.
        let listed: Vec<String> = commands
            .iter()
            .map(|c| {
                format!(
                    "{} {:.2}/req {:.2} µs/call{}",
                    c.name,
                    c.calls as f64 / requests,
                    c.usec as f64 / c.calls.max(1) as f64,
                    if c.inside_scripts {
                        " (in scripts)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if listed.is_empty() {
            eprintln!("  Redis commands: none");
        } else {
            eprintln!("  Redis commands: {}", listed.join(", "));
        }
        sent_usec(&commands) as f64 / requests
    });
    Cell {
        store,
        scenario,
        imp,
        rps: total as f64 / measure.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        allocs: Some(allocs),
        store_calls: (imp != "baseline").then_some(store_calls),
        cpu_us,
        redis_us,
    }
}
