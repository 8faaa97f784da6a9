//! The demo's contract (the demo table in docs/demo.md, CSRF included),
//! checked against the real example binary over real HTTP on a loopback
//! port, on the memory store.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::backend::free_port;
use crate::support::demo::{check_contract, demo_binary, start_demo};
use crate::support::harness::{tests, Test};

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        None => [
            demo_answers_its_contract,
            demo_refuses_a_bad_key_and_an_unknown_store,
        ],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn demo_answers_its_contract() {
    let demo = start_demo(&[("SESSION_KEY", &"42".repeat(32))]).await;
    check_contract(&demo, "").await;
}

#[tokio::main(flavor = "current_thread")]
async fn demo_refuses_a_bad_key_and_an_unknown_store() {
    for (name, value, reason) in [
        ("SESSION_KEY", "not-hex", "SESSION_KEY: "),
        ("SESSION_STORE", "floppy", "SESSION_STORE=floppy: expected"),
    ] {
        let mut demo = Command::new(demo_binary())
            .env("DEMO_ADDR", free_port().to_string())
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run demo");
        // A demo that accepted the setting would serve until killed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = demo.try_wait().expect("demo status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = demo.kill();
                panic!("{name}={value} was accepted: the demo kept running");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        demo.stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        assert_eq!(status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("demo: {reason}")),
            "{name}={value} is refused with its reason: {stderr}"
        );
    }
}
