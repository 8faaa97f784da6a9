//! Installing sessions and CSRF checks: the one call that puts them in
//! order, and what a missing or misordered layer tells the developer (a
//! `500` whose body explains in debug builds, one log line, not one per
//! request).

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use cloakroom::csrf::{CsrfLayer, CsrfToken};
use cloakroom::login::LoggedIn;
use cloakroom::{MemoryStore, Session, SessionLayer, SessionLayerBuilder};
use tower::ServiceExt;

use crate::support::app::key;
use crate::support::logs;
use crate::support::reply::{read, Reply};

const HOST: &str = "app.example.test";

fn builder() -> SessionLayerBuilder {
    SessionLayer::builder(MemoryStore::new()).key(key(1))
}

fn routes() -> Router {
    Router::new()
        .route(
            "/token",
            get(|token: CsrfToken| async move { token.masked() }),
        )
        .route(
            "/write",
            post(|session: Session| async move {
                session.insert("written", true).await.unwrap();
                "written"
            }),
        )
        .route(
            "/account",
            get(|LoggedIn(user): LoggedIn| async move { user }),
        )
}

async fn send(router: &Router, request: Request<Body>) -> Reply {
    read(router.clone().oneshot(request).await.unwrap()).await
}

/// A form post from the app's own page, as a browser sends it.
fn browser_post(path: &str, cookie: Option<&str>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("https://{HOST}"))
        .header("sec-fetch-site", "same-origin");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(token) = token {
        request = request.header("x-csrf-token", token);
    }
    request.body(Body::empty()).unwrap()
}

fn cookie_of(reply: &Reply) -> String {
    let set = reply.set_cookie().expect("a cookie");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn one_call_installs_sessions_and_csrf_checks_in_order() {
    let router = routes().layer(builder().build().unwrap().with_csrf(CsrfLayer::new()));
    let (logs, _guard) = logs::capture();

    let refused = send(&router, browser_post("/write", None, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("missing token"), "{}", refused.body);

    let token = send(&router, Request::get("/token").body(Body::empty()).unwrap()).await;
    assert_eq!(
        token.status,
        StatusCode::OK,
        "the extractor finds both layers"
    );
    let written = send(&router, browser_post("/write", None, Some(&token.body))).await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    assert!(
        written.set_cookie().is_some(),
        "the session layer wraps the app"
    );
    assert!(!logs.text().contains("csrf_missing"), "{}", logs.text());
}

#[tokio::test]
async fn a_csrf_layer_outside_the_session_layer_explains_itself_once() {
    let router = routes()
        .layer(builder().build().unwrap())
        .layer(CsrfLayer::new());
    let (logs, _guard) = logs::capture();
    for _ in 0..3 {
        let reply = send(&router, browser_post("/write", None, None)).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        // Tests build in debug: the body says what to do.
        assert!(
            reply.body.contains("must be inside SessionLayer")
                && reply.body.contains(".layer(sessions.with_csrf(csrf))"),
            "{}",
            reply.body
        );
    }
    let text = logs.text();
    assert_eq!(
        text.matches("CsrfLayer found no session").count(),
        1,
        "one line, not one per request: {text}"
    );
    // Safe requests pass; the form page that renders a token explains,
    // so the mistake shows on the first page load.
    let reply = send(&router, Request::get("/token").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.body.contains("must be inside SessionLayer"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn extractors_without_the_session_layer_say_which_layer_is_missing() {
    let router = routes();
    let (logs, _guard) = logs::capture();
    for path in ["/account", "/token", "/account"] {
        let reply = send(&router, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(
            reply.body.contains("no SessionLayer wraps it")
                && reply.body.contains(".layer(sessions)"),
            "{path}: {}",
            reply.body
        );
    }
    let text = logs.text();
    assert!(
        text.matches("no SessionLayer wraps it").count() <= 1,
        "at most one line: {text}"
    );

    // Sessions without CSRF checks: the token extractor names those.
    let router = routes().layer(builder().build().unwrap());
    let reply = send(&router, Request::get("/token").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply.body.contains("found no CSRF checks")
            && reply.body.contains("with_csrf(CsrfLayer::new())"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn unsafe_browser_requests_without_csrf_checks_are_warned_about_once() {
    let router = routes().layer(builder().build().unwrap());
    let (logs, _guard) = logs::capture();
    let first = send(&router, browser_post("/write", None, None)).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = cookie_of(&first);
    for _ in 0..3 {
        send(&router, browser_post("/write", Some(&cookie), None)).await;
    }
    let text = logs.text();
    assert_eq!(text.matches("event=\"csrf_missing\"").count(), 1, "{text}");
    assert!(
        text.contains("POST /write") && text.contains("csrf_not_needed()"),
        "{text}"
    );
    assert!(!text.contains(&cookie[cookie.find('=').unwrap() + 1..][..22]));
}

#[tokio::test]
async fn no_warning_when_the_app_says_it_needs_no_csrf_or_checks_with_two_layers() {
    let (logs, _guard) = logs::capture();
    let not_needed = routes().layer(builder().csrf_not_needed().build().unwrap());
    let reply = send(&not_needed, browser_post("/write", None, None)).await;
    assert_eq!(reply.status, StatusCode::OK);

    let two_layers = routes()
        .layer(CsrfLayer::new())
        .layer(builder().build().unwrap());
    let token = send(
        &two_layers,
        Request::get("/token").body(Body::empty()).unwrap(),
    )
    .await;
    let reply = send(&two_layers, browser_post("/write", None, Some(&token.body))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Scripts and servers without browser markers are not warned about.
    let plain = routes().layer(builder().build().unwrap());
    let request = Request::post("/write").body(Body::empty()).unwrap();
    assert_eq!(send(&plain, request).await.status, StatusCode::OK);

    let text = logs.text();
    assert!(!text.contains("csrf_missing"), "{text}");
}
