//! The demo's contract (the demo table in docs/demo.md, CSRF included),
//! checked against the real example binary over real HTTP on a loopback
//! port, on the memory store.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::backend::free_port;
use axum::http::{header, Method, StatusCode};

use serde_json::Value;

use crate::support::demo::{check_contract, check_streams, demo_binary, start_demo, Browser};
use crate::support::harness::{tests, Test};
use crate::support::reply::Reply;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        None => [
            demo_answers_its_contract,
            demo_binds_sessions_to_the_credential_and_asks_for_the_password_again,
            demo_streams_end_with_their_session,
            demo_stream_ends_at_the_idle_deadline,
            demo_takes_an_upload_with_the_token_in_the_multipart_form,
            demo_refuses_a_bad_key_and_an_unknown_store,
        ],
    )
}

#[tokio::main(flavor = "current_thread")]
async fn demo_answers_its_contract() {
    let demo = start_demo(&[("SESSION_KEY", &"42".repeat(32))]).await;
    check_contract(&demo, "").await;
    // A page that creates the session renders a token that verifies.
    let mut visitor = Browser::new(&demo);
    let reply = visitor.submit_on("/visit", "/api/counter", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Without `DEMO_ADMIN_TOKEN` the admin routes do not exist.
    let mut operator = Browser::new(&demo);
    let reset = "/api/admin/users/ann/credential";
    let reply = operator
        .send_with(Method::POST, reset, &[("x-admin-token", "")], "")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// Part 3 of the contract: `GET /api/stream` ends with its session.
#[tokio::main(flavor = "current_thread")]
async fn demo_streams_end_with_their_session() {
    let demo = start_demo(&[
        ("SESSION_KEY", &"42".repeat(32)),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
    ])
    .await;
    check_streams(&demo, &demo, "").await;
}

/// An open stream is no activity: with nothing else from the browser, it
/// ends at the session's idle deadline.
#[tokio::main(flavor = "current_thread")]
async fn demo_stream_ends_at_the_idle_deadline() {
    let demo = start_demo(&[
        ("SESSION_KEY", &"42".repeat(32)),
        ("SESSION_IDLE_SECS", "2"),
    ])
    .await;
    let mut browser = Browser::new(&demo);
    browser.login("idle").await;
    let stream = browser.open_stream().await;
    assert_eq!(stream.end().await, "session expired");
    assert_eq!(
        browser.get("/api/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Part 3 of the contract: `/password`, the admin routes and
/// `/account/security`.
#[tokio::main(flavor = "current_thread")]
async fn demo_binds_sessions_to_the_credential_and_asks_for_the_password_again() {
    let demo = start_demo(&[
        ("SESSION_KEY", &"42".repeat(32)),
        ("DEMO_ADMIN_TOKEN", "let-me-in"),
        ("SESSION_REAUTH_SECS", "2"),
    ])
    .await;
    let me = async |browser: &mut Browser| browser.get("/api/me").await.status;

    // A password change keeps this session and ends the user's others.
    let mut laptop = Browser::new(&demo);
    let mut phone = Browser::new(&demo);
    laptop.login("ann").await;
    phone.login("ann").await;
    let reply = laptop
        .submit_on("/account", "/password", &[("password", "new one")])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(header::LOCATION), Some("/account"));
    assert_eq!(me(&mut laptop).await, StatusCode::OK);
    assert_eq!(me(&mut phone).await, StatusCode::UNAUTHORIZED);

    // The admin routes want the token, and know only users of the table.
    let mut operator = Browser::new(&demo);
    let reset = "/api/admin/users/ann/credential";
    assert_eq!(
        operator.send(Method::POST, reset, None, "").await.status,
        StatusCode::FORBIDDEN
    );
    let as_admin = [("x-admin-token", "let-me-in")];
    let unknown = "/api/admin/users/nobody/credential";
    assert_eq!(
        operator
            .send_with(Method::POST, unknown, &as_admin, "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        operator
            .send_with(Method::POST, reset, &as_admin, "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        me(&mut laptop).await,
        StatusCode::UNAUTHORIZED,
        "reset ends it"
    );

    // A deleted user's sessions end, also once the name logs in again.
    let mut old = Browser::new(&demo);
    old.login("bob").await;
    let delete = "/api/admin/users/bob";
    assert_eq!(
        operator
            .send_with(Method::DELETE, delete, &as_admin, "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let mut again = Browser::new(&demo);
    again.login("bob").await;
    assert_eq!(me(&mut again).await, StatusCode::OK);
    assert_eq!(me(&mut old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        operator
            .send_with(Method::DELETE, delete, &as_admin, "")
            .await
            .status,
        StatusCode::NO_CONTENT,
        "the name is back in the table"
    );

    // `/account/security` wants a password within SESSION_REAUTH_SECS.
    let mut user = Browser::new(&demo);
    user.login("cy").await;
    assert_eq!(user.get("/account/security").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = user.get("/account/security").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let back = "/login?next=%2Faccount%2Fsecurity";
    assert_eq!(reply.header(header::LOCATION), Some(back));
    let reply = user
        .submit_on(
            back,
            "/login",
            &[("user", "cy"), ("next", "/account/security")],
        )
        .await;
    assert_eq!(reply.header(header::LOCATION), Some("/account/security"));
    assert_eq!(user.get("/account/security").await.status, StatusCode::OK);
}

/// `POST /upload` beyond the contract's walk (`check_contract` has the
/// rest): the token field first lets a file larger than the form the CSRF
/// layer reads through; after it, or past axum's limit, it is refused.
#[tokio::main(flavor = "current_thread")]
async fn demo_takes_an_upload_with_the_token_in_the_multipart_form() {
    let demo = start_demo(&[("SESSION_KEY", &"42".repeat(32))]).await;
    let bytes = |reply: &Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.json::<Value>()["bytes"].as_u64().expect("bytes")
    };
    let mut user = Browser::new(&demo);
    user.login("ann").await;
    let token = user.csrf().await;

    // The CSRF layer reads at most 1 MiB of a form: this file is larger.
    let large = vec![b'-'; 1536 * 1024];
    let reply = user
        .post_multipart("/upload", &[("csrf_token", &token)], &large)
        .await;
    assert_eq!(bytes(&reply), 1536 * 1024);
    // The token may follow small fields; the file may be empty.
    let reply = user
        .post_multipart(
            "/upload",
            &[("title", "holiday"), ("csrf_token", &token)],
            b"",
        )
        .await;
    assert_eq!(bytes(&reply), 0);
    let reply = user.post_multipart("/upload", &[], b"no token").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = user
        .post_multipart("/upload", &[("csrf_token", &token)], &[])
        .await;
    assert_eq!(bytes(&reply), 0);
    // No file field.
    let reply = user
        .send_with(
            Method::POST,
            "/upload",
            &[("content-type", "multipart/form-data; boundary=b")],
            &format!(
                "--b\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--b--\r\n"
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // The token field after 1 MiB of file.
    let mut late =
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n".to_vec();
    late.extend_from_slice(&large);
    late.extend_from_slice(
        format!("\r\n--b\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--b--\r\n")
            .as_bytes(),
    );
    let reply = user
        .send_bytes(
            Method::POST,
            "/upload",
            &[("content-type", "multipart/form-data; boundary=b")],
            late.into(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.body.contains("send it before any file"),
        "{}",
        reply.body
    );
    // Past axum's default body limit (2 MiB).
    let huge = vec![b'x'; 3 * 1024 * 1024];
    let reply = user
        .post_multipart("/upload", &[("csrf_token", &token)], &huge)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
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
