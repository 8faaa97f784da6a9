//! The demo's contract (the README's demo table, CSRF included),
//! checked against the real example binary over real HTTP on a loopback
//! port, on the memory store.

use std::process::{Command, Stdio};

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
    for (name, value) in [("SESSION_KEY", "not-hex"), ("SESSION_STORE", "floppy")] {
        let status = Command::new(demo_binary())
            .env("DEMO_ADDR", free_port().to_string())
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run demo");
        assert!(!status.success(), "{name}={value} must be refused");
    }
}
