//! CSRF protection end to end: a real axum `Router` with `CsrfLayer`
//! inside `SessionLayer`, on the memory store.
#![cfg(feature = "csrf")]

mod common;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Form, Router};
use cloakroom::test_suite::CountingStore;
use cloakroom::{CsrfLayer, CsrfToken, MemoryStore, Session, SessionError, SessionLayer};
use common::{Client, Reply};
use tower::ServiceExt;

const HOST: &str = "app.example.test";

struct App {
    router: Router,
    store: CountingStore<MemoryStore>,
    cookie_name: String,
}

fn app() -> App {
    app_with(
        CsrfLayer::builder()
            .exempt_prefix("/hooks/")
            .trusted_origin("https://admin.example.test")
            .max_form_bytes(4096)
            .build()
            .unwrap(),
    )
}

fn app_with(csrf: CsrfLayer) -> App {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = SessionLayer::builder(store.clone())
        .key(common::key(1))
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/token",
            get(|token: CsrfToken| async move { token.masked() }),
        )
        .route(
            "/echo",
            post(|Form(form): Form<HashMap<String, String>>| async move {
                form.get("msg").cloned().unwrap_or_default()
            }),
        )
        .route(
            "/write",
            post(|session: Session| async move {
                session.insert("written", true).await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/login/{user}",
            post(|session: Session, Path(user): Path<String>| async move {
                session.login(user).await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/write-then-token",
            post(|session: Session| async move {
                session.insert("cart", 1).await?;
                Ok::<_, SessionError>(CsrfToken::for_session(&session).await?.masked())
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/clear",
            post(|session: Session| async move {
                session.clear().await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route(
            "/keys",
            get(|session: Session| async move {
                Ok::<_, SessionError>(session.keys().await?.join(","))
            }),
        )
        .route(
            "/regenerate",
            post(|session: Session| async move {
                session.regenerate().await?;
                Ok::<_, SessionError>(StatusCode::NO_CONTENT)
            }),
        )
        .route("/hooks/incoming", post(|| async { "hook" }))
        .layer(csrf)
        .layer(sessions.clone());
    App {
        router,
        store,
        cookie_name: sessions.cookie_name().to_owned(),
    }
}

fn client(app: &App) -> Client {
    Client {
        router: app.router.clone(),
        cookie_name: app.cookie_name.clone(),
        cookie: None,
    }
}

/// A browser-like unsafe request from the app's own pages.
fn unsafe_post(client: &Client, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = client.request("POST", path, body);
    let h = request.headers_mut();
    h.insert(header::HOST, HOST.parse().unwrap());
    for (name, value) in headers {
        h.insert(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

async fn token(client: &mut Client) -> String {
    let reply = client.get("/token").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

async fn send(client: &mut Client, request: Request<Body>) -> Reply {
    client.send(request).await
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[tokio::test]
async fn a_cross_site_form_post_is_refused_before_any_session_work() {
    let app = app();
    let mut victim = client(&app);
    let t = token(&mut victim).await;
    app.store.reset();
    let request = unsafe_post(
        &victim,
        "/echo",
        &[
            FORM,
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        &format!("msg=hi&csrf_token={t}"),
    );
    let reply = send(&mut victim, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "CSRF check failed: cross-site request\n");
    assert_eq!(
        app.store.calls().total(),
        0,
        "refused before any store call"
    );
}

#[tokio::test]
async fn a_sibling_subdomain_is_refused_although_it_is_the_same_site() {
    let app = app();
    let mut victim = client(&app);
    let t = token(&mut victim).await;
    let request = unsafe_post(
        &victim,
        "/echo",
        &[
            FORM,
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.example.test"),
        ],
        &format!("msg=hi&csrf_token={t}"),
    );
    assert_eq!(
        send(&mut victim, request).await.status,
        StatusCode::FORBIDDEN
    );
    // A browser without Fetch Metadata still sends Origin.
    let request = unsafe_post(
        &victim,
        "/echo",
        &[FORM, ("origin", "http://evil.example.test")],
        &format!("msg=hi&csrf_token={t}"),
    );
    let reply = send(&mut victim, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "CSRF check failed: origin not allowed\n");
}

#[tokio::test]
async fn same_origin_requests_with_a_token_pass_by_header_or_form_field() {
    let app = app();
    let mut c = client(&app);
    let same_origin = [
        ("sec-fetch-site", "same-origin"),
        ("origin", "http://app.example.test"),
    ];

    let t = token(&mut c).await;
    let request = unsafe_post(
        &c,
        "/write",
        &[same_origin[0], same_origin[1], ("x-csrf-token", &t)],
        "",
    );
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    assert!(c.cookie.is_some(), "the write created a session");

    let t = token(&mut c).await;
    let request = unsafe_post(
        &c,
        "/echo",
        &[FORM, same_origin[0], same_origin[1]],
        &format!("msg=hello+world&csrf_token={t}"),
    );
    let reply = send(&mut c, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body, "hello world",
        "the handler still reads the whole form"
    );
}

#[tokio::test]
async fn missing_forged_and_foreign_tokens_are_refused() {
    let app = app();
    let mut alice = client(&app);
    alice.post("/login/alice").await; // no token: refused
    assert!(alice.cookie.is_none());
    let t = token(&mut alice).await;
    let request = unsafe_post(&alice, "/login/alice", &[("x-csrf-token", &t)], "");
    assert_eq!(
        send(&mut alice, request).await.status,
        StatusCode::NO_CONTENT
    );

    let missing = unsafe_post(&alice, "/write", &[], "");
    let reply = send(&mut alice, missing).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "CSRF check failed: missing token\n");

    let forged = "A".repeat(86);
    for bad in [forged.as_str(), "short", &"!".repeat(86)] {
        let request = unsafe_post(&alice, "/write", &[("x-csrf-token", bad)], "");
        let reply = send(&mut alice, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(reply.body, "CSRF check failed: invalid or expired token\n");
    }

    // Bob's valid token replayed in Alice's session.
    let mut bob = client(&app);
    let t = token(&mut bob).await;
    let request = unsafe_post(&bob, "/login/bob", &[("x-csrf-token", &t)], "");
    send(&mut bob, request).await;
    let bobs = token(&mut bob).await;
    let request = unsafe_post(&alice, "/write", &[("x-csrf-token", &bobs)], "");
    assert_eq!(
        send(&mut alice, request).await.status,
        StatusCode::FORBIDDEN
    );
    let request = unsafe_post(&bob, "/write", &[("x-csrf-token", &bobs)], "");
    assert_eq!(send(&mut bob, request).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn masked_tokens_differ_per_response_and_all_verify() {
    let app = app();
    let mut c = client(&app);
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &t)], "");
    send(&mut c, request).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(token(&mut c).await);
    }
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "no token repeats on the wire");
    for t in &tokens {
        let request = unsafe_post(&c, "/write", &[("x-csrf-token", t)], "");
        assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn asking_for_a_token_creates_no_session_and_sets_no_cookie() {
    let app = app();
    let mut visitor = client(&app);
    for _ in 0..3 {
        let reply = visitor.get("/token").await;
        assert!(
            reply.set_cookies().is_empty(),
            "no cookie for a visitor who never posts"
        );
    }
    assert_eq!(app.store.calls().total(), 0);
    assert!(app.store.inner().is_empty());

    // The token still works when the visitor does post.
    let t = token(&mut visitor).await;
    let request = unsafe_post(&visitor, "/login/alice", &[("x-csrf-token", &t)], "");
    assert_eq!(
        send(&mut visitor, request).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.store.inner().len(), 1);
}

#[tokio::test]
async fn the_token_rotates_on_login_and_regenerate() {
    let app = app();
    let mut c = client(&app);
    let anonymous = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &anonymous)], "");
    send(&mut c, request).await;
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &anonymous)], "");
    assert_eq!(
        send(&mut c, request).await.status,
        StatusCode::FORBIDDEN,
        "pre-login token"
    );

    let before = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &before)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &before)], "");
    assert_eq!(
        send(&mut c, request).await.status,
        StatusCode::FORBIDDEN,
        "login rotated it"
    );

    let before = token(&mut c).await;
    let request = unsafe_post(&c, "/regenerate", &[("x-csrf-token", &before)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &before)], "");
    assert_eq!(
        send(&mut c, request).await.status,
        StatusCode::FORBIDDEN,
        "regenerate rotated it"
    );
    let fresh = token(&mut c).await;
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &fresh)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn safe_methods_exempt_paths_and_trusted_origins() {
    let app = app();
    let mut c = client(&app);
    assert_eq!(
        c.get("/token").await.status,
        StatusCode::OK,
        "GET is never checked"
    );
    let hook = unsafe_post(
        &c,
        "/hooks/incoming",
        &[("sec-fetch-site", "cross-site")],
        "",
    );
    assert_eq!(send(&mut c, hook).await.body, "hook", "exempt prefix");

    let t = token(&mut c).await;
    let trusted = unsafe_post(
        &c,
        "/write",
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://admin.example.test"),
            ("x-csrf-token", &t),
        ],
        "",
    );
    assert_eq!(send(&mut c, trusted).await.status, StatusCode::NO_CONTENT);
    let untrusted_no_token = unsafe_post(
        &c,
        "/write",
        &[("origin", "https://admin.example.test")],
        "",
    );
    assert_eq!(
        send(&mut c, untrusted_no_token).await.status,
        StatusCode::FORBIDDEN,
        "a trusted origin still needs the token"
    );
}

#[tokio::test]
async fn an_oversized_form_is_refused_with_413() {
    let app = app();
    let mut c = client(&app);
    let body = format!("msg={}", "x".repeat(5000));
    let request = unsafe_post(&c, "/echo", &[FORM], &body);
    let reply = send(&mut c, request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn wrong_layer_order_fails_closed() {
    let sessions = SessionLayer::builder(MemoryStore::new())
        .key(common::key(1))
        .build()
        .unwrap();
    let router = Router::new()
        .route("/write", post(|| async { "unreachable" }))
        .route("/token", get(|t: CsrfToken| async move { t.masked() }))
        .layer(sessions)
        .layer(CsrfLayer::new());
    let reply = common::read(
        router
            .clone()
            .oneshot(Request::post("/write").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

    let no_csrf = Router::new()
        .route("/token", get(|t: CsrfToken| async move { t.masked() }))
        .layer(
            SessionLayer::builder(MemoryStore::new())
                .key(common::key(1))
                .build()
                .unwrap(),
        );
    let reply = common::read(
        no_csrf
            .oneshot(Request::get("/token").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "no token without the check"
    );
}

#[tokio::test]
async fn a_store_outage_during_the_check_answers_503() {
    let app = app();
    let mut c = client(&app);
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &t)], "");
    send(&mut c, request).await;
    let t = token(&mut c).await;
    app.store.set_failing(true);
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    let reply = send(&mut c, request).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    app.store.set_failing(false);
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_anonymous_token_counts_only_for_a_visitor_without_a_session() {
    let app = app();
    let mut c = client(&app);
    // A script fetches one token; its first post creates a session.
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    assert!(c.cookie.is_some());
    // The public token no longer acts on that session: a new one is needed.
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::FORBIDDEN);
    let fresh = token(&mut c).await;
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &fresh)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn another_visitors_anonymous_token_cannot_touch_an_anonymous_session_with_data() {
    let app = app();
    // The victim has an anonymous session with a cart, and no secret was
    // ever stored for it.
    let mut victim = client(&app);
    let t = token(&mut victim).await;
    let request = unsafe_post(&victim, "/write", &[("x-csrf-token", &t)], "");
    send(&mut victim, request).await;
    assert!(victim.cookie.is_some());
    // The attacker's token is the public anonymous one; their page makes
    // the victim's browser post it (a client sending neither `Origin` nor
    // `Sec-Fetch-Site`).
    let mut attacker = client(&app);
    let public = token(&mut attacker).await;
    let forced = unsafe_post(&victim, "/write", &[("x-csrf-token", &public)], "");
    assert_eq!(
        send(&mut victim, forced).await.status,
        StatusCode::FORBIDDEN
    );
    // A cookie whose session has ended is no session: the token counts.
    let dead_cookie = victim.cookie.clone();
    let bound = token(&mut victim).await;
    let logout = unsafe_post(&victim, "/logout", &[("x-csrf-token", &bound)], "");
    assert_eq!(
        send(&mut victim, logout).await.status,
        StatusCode::NO_CONTENT
    );
    let mut stale = client(&app);
    stale.cookie = dead_cookie;
    let request = unsafe_post(&stale, "/clear", &[("x-csrf-token", &public)], "");
    assert_eq!(
        send(&mut stale, request).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn tokens_rendered_at_once_right_after_login_all_work() {
    let app = app();
    let mut c = client(&app);
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &t)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    // Two tabs and parallel XHRs ask for a token at the same moment.
    let fetches: Vec<_> = (0..32)
        .map(|_| {
            let mut tab = c.clone();
            tokio::spawn(async move { token(&mut tab).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for fetch in fetches {
        tokens.push(fetch.await.unwrap());
    }
    for (i, t) in tokens.iter().enumerate() {
        let request = unsafe_post(&c, "/write", &[("x-csrf-token", t)], "");
        assert_eq!(
            send(&mut c, request).await.status,
            StatusCode::NO_CONTENT,
            "token {i} of {}",
            tokens.len()
        );
    }
}

#[tokio::test]
async fn a_token_rendered_with_the_write_that_creates_the_session_works() {
    let app = app();
    let mut c = client(&app);
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/write-then-token", &[("x-csrf-token", &t)], "");
    let reply = send(&mut c, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(c.cookie.is_some(), "the write created the session");
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &reply.body)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_token_is_no_session_data_and_survives_clear() {
    let app = app();
    let mut c = client(&app);
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/login/alice", &[("x-csrf-token", &t)], "");
    send(&mut c, request).await;
    let t = token(&mut c).await;
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    send(&mut c, request).await;
    assert_eq!(
        c.get("/keys").await.body,
        "written",
        "no secret among the keys"
    );
    let request = unsafe_post(&c, "/clear", &[("x-csrf-token", &t)], "");
    assert_eq!(send(&mut c, request).await.status, StatusCode::NO_CONTENT);
    let request = unsafe_post(&c, "/write", &[("x-csrf-token", &t)], "");
    assert_eq!(
        send(&mut c, request).await.status,
        StatusCode::NO_CONTENT,
        "forms open in other tabs keep working after clear()"
    );
}
