//! The demo binary (`examples/demo.rs`) as a black box, on the memory
//! store: its contract over real HTTP, and in a real browser (headless
//! Chromium through WebDriver). The same contract on Redis and PostgreSQL
//! is checked in those backends' test binaries.
//!
//! On `support::harness`: without Chromium and chromedriver, the browser
//! tests are reported ignored.

#[path = "../support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod demo;
    pub(crate) mod harness;
    pub(crate) mod proxy;
    pub(crate) mod reply;
}

mod browser;
mod contract;

use std::process::ExitCode;

use support::harness::Backend;

/// Headless Chromium and its WebDriver, chromedriver.
static CHROMIUM: Backend = Backend {
    name: "Chromium",
    missing: browser::missing,
};

fn main() -> ExitCode {
    let mut tests = contract::tests();
    tests.extend(browser::tests());
    support::harness::main(file!(), tests)
}
