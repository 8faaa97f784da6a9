//! The demo binary with `SESSION_STORE=postgres`, over real HTTP, against
//! the tests' PostgreSQL server: the whole contract, plus a look at the
//! table it keeps its sessions in.

use hyper::Method;

use crate::support::demo::{check_contract, check_streams, start_demo, Browser};
use crate::support::harness::{tests, Test};
use crate::support::postgres::{connect, shared_url, unique_table};

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::POSTGRES) => [
            the_demo_answers_its_contract_on_postgres,
            two_demos_on_one_postgres_end_each_others_streams,
        ],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn the_demo_answers_its_contract_on_postgres() {
    let Some(url) = shared_url() else {
        return;
    };
    let key = "42".repeat(32);
    let demo = start_demo(&[
        ("SESSION_STORE", "postgres"),
        ("DATABASE_URL", url),
        ("SESSION_KEY", &key),
    ])
    .await;
    let tag = format!("-{}", &unique_table()[2..]);
    check_contract(&demo, &tag).await;

    // The session is a row of the demo's table, under the hashed key.
    let mut browser = Browser::new(&demo);
    let user = format!("demo{tag}");
    browser.login(&user).await;
    for _ in 0..2 {
        browser.api(Method::POST, "/api/counter", "").await;
    }
    let pool = connect(url).await;
    let (rows, counter): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), max((data->>'counter')::bigint) \
         FROM public.cloakroom_sessions WHERE user_id = $1",
    )
    .bind(&user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, counter), (1, Some(2)));
    // The jar holds `name=value`, whatever the name (`id`, or `__Host-id`
    // while the layer uses that prefix); the value starts with the
    // base64url session ID.
    let cookie = browser.cookie.clone().unwrap();
    let (_, value) = cookie.split_once('=').expect("name=value");
    let raw_id = value.split('.').next().unwrap().to_owned();
    assert_eq!(raw_id.len(), 22, "a 16-byte ID in base64url: {cookie}");
    let (leaks,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM public.cloakroom_sessions \
         WHERE encode(key, 'escape') LIKE '%' || $1 || '%' OR data::text LIKE '%' || $1 || '%'",
    )
    .bind(&raw_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaks, 0, "the raw session ID is nowhere in the table");
}

/// Two demo processes on one PostgreSQL behave as one app: a stream held
/// on one ends when its session ends on the other (`LISTEN`/`NOTIFY`).
#[tokio::main(flavor = "current_thread")]
async fn two_demos_on_one_postgres_end_each_others_streams() {
    let Some(url) = shared_url() else {
        return;
    };
    let key = "42".repeat(32);
    let envs = [
        ("SESSION_STORE", "postgres"),
        ("DATABASE_URL", url),
        ("SESSION_KEY", key.as_str()),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
    ];
    let (a, b) = (start_demo(&envs).await, start_demo(&envs).await);
    let tag = format!("-{}", &unique_table()[2..]);
    check_streams(&a, &b, &tag).await;
}
