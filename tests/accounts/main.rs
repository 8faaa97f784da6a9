//! The accounts example (`examples/accounts.rs`) as a black box: each test
//! starts the built binary on a free loopback port and drives it over real
//! HTTP like a browser would (a cookie jar, a User-Agent, `Accept:
//! text/html`, and the CSRF token of the form it submits).
//!
//! The binary is built by `cargo test --all-features` (which builds the
//! examples) or `cargo build --all-features --example accounts`; these
//! tests refuse a binary older than the example's source.

mod app;
mod devices;
mod login;
