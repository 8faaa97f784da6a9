//! The demo binary with `SESSION_STORE=redis`, over real HTTP, against a
//! real Redis server and a real Redis Cluster: the whole contract, and a
//! Redis outage answered with 503.

use hyper::{Method, StatusCode};

use crate::support::demo::{check_contract, check_streams, start_demo, Browser};
use crate::support::harness::{tests, Test};
use crate::support::redis::cluster_urls;
use crate::support::redis_server::RedisServer;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::REDIS_SERVER) => [
            the_demo_answers_its_contract_on_redis,
            two_demos_on_one_redis_end_each_others_streams,
        ],
        Some(&crate::REDIS_CLUSTER) => [
            the_demo_answers_its_contract_on_a_redis_cluster,
            two_demos_on_one_redis_cluster_end_each_others_streams,
        ],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn the_demo_answers_its_contract_on_redis() {
    let Some(mut server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let key = "42".repeat(32);
    let demo = start_demo(&[
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", &url),
        ("SESSION_KEY", &key),
    ])
    .await;
    check_contract(&demo, "").await;

    let mut browser = Browser::new(&demo);
    browser.login("carol").await;
    server.stop();
    let reply = browser.get("/api/me").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an outage is a 503"
    );
    let page = browser.get("/").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "never a logged-in page"
    );
    assert!(!page.body.contains("carol"));
    server.restart();
    // Redis lost its data (no persistence here): the demo recovers and the
    // browser is simply anonymous again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let reply = browser.get("/api/me").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        browser.api(Method::POST, "/api/counter", "").await.status,
        StatusCode::OK
    );
}

#[tokio::main(flavor = "current_thread")]
async fn the_demo_answers_its_contract_on_a_redis_cluster() {
    let Some(urls) = cluster_urls() else {
        return;
    };
    let key = "42".repeat(32);
    let demo = start_demo(&[
        ("SESSION_STORE", "redis"),
        ("REDIS_CLUSTER_URLS", &urls.join(",")),
        ("SESSION_KEY", &key),
    ])
    .await;
    check_contract(&demo, "").await;
}

/// Two demo processes on one Redis, each with its local cache, behave as
/// one app: a stream held on one ends when its session ends on the other,
/// and a logout on one is refused on the other at once.
#[tokio::main(flavor = "current_thread")]
async fn two_demos_on_one_redis_end_each_others_streams() {
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = server.url();
    let key = "42".repeat(32);
    let envs = [
        ("SESSION_STORE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("SESSION_KEY", key.as_str()),
        ("SESSION_REDIS_CACHE", "1000"),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
    ];
    let (a, b) = (start_demo(&envs).await, start_demo(&envs).await);
    check_streams(&a, &b, "").await;
    check_streams(&b, &a, "-again").await;

    let mut browser = Browser::new(&a);
    browser.login("gil").await;
    let mut elsewhere = browser.on(&b);
    assert_eq!(elsewhere.get("/api/me").await.status, StatusCode::OK);
    browser.post("/logout").await;
    assert_eq!(
        elsewhere.get("/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::main(flavor = "current_thread")]
async fn two_demos_on_one_redis_cluster_end_each_others_streams() {
    let Some(urls) = cluster_urls() else {
        return;
    };
    let urls = urls.join(",");
    let key = "42".repeat(32);
    let envs = [
        ("SESSION_STORE", "redis"),
        ("REDIS_CLUSTER_URLS", urls.as_str()),
        ("SESSION_KEY", key.as_str()),
        ("SESSION_REDIS_CACHE", "1000"),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
    ];
    let (a, b) = (start_demo(&envs).await, start_demo(&envs).await);
    let tag = format!("-{}", std::process::id());
    check_streams(&a, &b, &tag).await;
}
