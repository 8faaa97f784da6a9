//! The demo binary with `SESSION_STORE=postgres`, over real HTTP, against
//! the tests' PostgreSQL server: it creates its table, logs in, keeps data
//! and logs out everywhere.
#![cfg(feature = "postgres")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    async fn send(&mut self, method: Method, path: &str, form: &str) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(form.to_owned())))
            .unwrap();
        let response = self.client.request(request).await.expect("demo answers");
        let status = response.status();
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let set = set.to_str().unwrap();
            self.cookie =
                (!set.contains("Max-Age=0")).then(|| set.split(';').next().unwrap().to_owned());
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn the_demo_runs_on_postgres() {
    let Some(url) = common::postgres::shared_url() else {
        return;
    };
    let mut binary = std::env::current_exe().expect("test binary path");
    binary.pop();
    if binary.ends_with("deps") {
        binary.pop();
    }
    let binary = binary.join("examples").join("demo");
    assert!(
        binary.exists(),
        "{} missing: run `cargo test --all-features` (it builds examples)",
        binary.display()
    );
    let addr = common::backend::free_port();
    let _demo = Demo(
        Command::new(binary)
            .env("SESSION_STORE", "postgres")
            .env("DATABASE_URL", url)
            .env("DEMO_ADDR", addr.to_string())
            .env("SESSION_KEY", "42".repeat(32))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "demo did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut browser = Browser {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{addr}"),
        cookie: None,
    };
    let user = format!("demo-{}", &common::postgres::unique_table()[2..]);
    let (status, _) = browser
        .send(Method::POST, "/login", &format!("user={user}"))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = browser.send(Method::GET, "/api/me", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"user": user, "sessions": 1})
    );
    for expected in [1, 2] {
        let (_, body) = browser.send(Method::POST, "/api/counter", "").await;
        assert_eq!(body, format!("{{\"counter\":{expected}}}"));
    }

    // The session is a row of the demo's table, under the hashed key.
    let pool = common::postgres::connect(url).await;
    let (rows, counter): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), max((data->>'counter')::bigint) \
         FROM public.cloakroom_sessions WHERE user_id = $1",
    )
    .bind(&user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, counter), (1, Some(2)));

    let (status, _) = browser.send(Method::POST, "/logout-everywhere", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = browser.send(Method::GET, "/api/me", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
