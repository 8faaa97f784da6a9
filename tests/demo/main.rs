//! The demo binary (`examples/demo.rs`) as a black box, on the memory
//! store: its contract over real HTTP, and in a real browser (headless
//! Chromium through WebDriver). The same contract on Redis and PostgreSQL
//! is checked in those backends' test binaries.

#[path = "../support"]
mod support {
    pub(crate) mod backend;
    pub(crate) mod demo;
    pub(crate) mod proxy;
    pub(crate) mod reply;
}

mod browser;
mod contract;
