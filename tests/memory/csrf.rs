//! CSRF protection end to end: `CsrfLayer` inside `SessionLayer` on the
//! test app (`TestApp::with_layer`), on the memory store: the rules that
//! do not depend on the store (where a request comes from, form and
//! multipart limits, the layer's order, the app's failure page, the
//! token's renderings). What depends on the session and its store is
//! checked on every store, in `tests/checks/csrf.rs`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::HeaderName;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use cloakroom::{
    csrf::CsrfBody, csrf::CsrfFailure, csrf::CsrfFailureReason, csrf::CsrfLayer, csrf::CsrfToken,
    MemoryStore, SessionLayer,
};
use hyper::body::Frame;
use tower::util::MapRequestLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::support::app::{key, TestApp};
use crate::support::client::Client;
use crate::support::csrf::{
    self, described, file_bytes, logged_in, multipart, post_with_token, token, unsafe_post, upload,
    FORM, MULTIPART,
};
use crate::support::logs;
use crate::support::reply::read;

fn app() -> TestApp<MemoryStore> {
    csrf::app(MemoryStore::new())
}

#[tokio::test]
async fn a_cross_site_form_post_is_refused_before_any_session_work() {
    let app = app();
    let mut victim = app.client();
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
    let reply = victim.send(request).await;
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
    let mut victim = app.client();
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
    assert_eq!(victim.send(request).await.status, StatusCode::FORBIDDEN);
    // A browser without Fetch Metadata still sends Origin.
    let request = unsafe_post(
        &victim,
        "/echo",
        &[FORM, ("origin", "http://evil.example.test")],
        &format!("msg=hi&csrf_token={t}"),
    );
    let reply = victim.send(request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "CSRF check failed: origin not allowed\n");
}

#[tokio::test]
async fn same_origin_requests_with_a_token_pass_by_header_or_form_field() {
    let app = app();
    let mut c = app.client();
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
    assert_eq!(c.send(request).await.status, StatusCode::NO_CONTENT);
    assert!(c.cookie.is_some(), "the write created a session");

    let t = token(&mut c).await;
    let request = unsafe_post(
        &c,
        "/echo",
        &[FORM, same_origin[0], same_origin[1]],
        &format!("msg=hello+world&csrf_token={t}"),
    );
    let reply = c.send(request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body, "hello world",
        "the handler still reads the whole form"
    );
}

#[tokio::test]
async fn safe_methods_exempt_paths_and_trusted_origins() {
    let app = app();
    let mut c = app.client();
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
    assert_eq!(c.send(hook).await.body, "hook", "exempt prefix");

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
    assert_eq!(c.send(trusted).await.status, StatusCode::NO_CONTENT);
    let untrusted_no_token = unsafe_post(
        &c,
        "/write",
        &[("origin", "https://admin.example.test")],
        "",
    );
    assert_eq!(
        c.send(untrusted_no_token).await.status,
        StatusCode::FORBIDDEN,
        "a trusted origin still needs the token"
    );
}

#[tokio::test]
async fn an_oversized_form_is_refused_with_413() {
    let app = app();
    let mut c = app.client();
    let body = format!("msg={}", "x".repeat(5000));
    let request = unsafe_post(&c, "/echo", &[FORM], &body);
    let reply = c.send(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn wrong_layer_order_fails_closed() {
    let sessions = SessionLayer::builder(MemoryStore::new())
        .key(key(1))
        .build()
        .unwrap();
    let router = Router::new()
        .route("/write", post(|| async { "unreachable" }))
        .route("/token", get(|t: CsrfToken| async move { t.masked() }))
        .layer(sessions)
        .layer(CsrfLayer::new());
    let reply = read(
        router
            .clone()
            .oneshot(Request::post("/write").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

    // The test app's `/token`, without a `CsrfLayer`.
    let no_csrf = TestApp::new(MemoryStore::new());
    assert_eq!(
        no_csrf.client().get("/token").await.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "no token without the check"
    );
}

/// The `name` and `value` of the hidden input a page rendered.
fn hidden_input(page: &str) -> (String, String) {
    let attribute = |name: &str| {
        let start = page.find(&format!("{name}=\"")).expect("the attribute") + name.len() + 2;
        page[start..start + page[start..].find('"').expect("closed")].to_owned()
    };
    assert!(page.starts_with(r#"<input type="hidden" "#), "{page}");
    (attribute("name"), attribute("value"))
}

#[tokio::test]
async fn the_hidden_field_uses_the_field_name_the_layer_reads() {
    for (field, app) in [
        ("csrf_token", app()),
        (
            "authenticity",
            TestApp::with_layer(
                MemoryStore::new(),
                |b| b,
                CsrfLayer::builder()
                    .field_name("authenticity")
                    .build()
                    .unwrap(),
            ),
        ),
    ] {
        let mut c = logged_in(&app, "alice").await;
        let (name, value) = hidden_input(&c.get("/hidden").await.body);
        assert_eq!(name, field);
        let body = format!("{name}={value}&msg=hi");
        let request = unsafe_post(&c, "/echo", &[FORM], &body);
        let reply = c.send(request).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "hi"),
            "{field}"
        );
    }
}

const REFUSAL_HEADER: HeaderName = HeaderName::from_static("x-refusal-page");
/// What the app's renderer logs, to see where it falls among the crate's
/// events.
const RENDERED_LOG: &str = "the app renders its refusal page";

/// An app's own refusal page: its own status, body and headers, no
/// `Cache-Control`, and everything it was given written into the body.
fn refusal_page(failure: &CsrfFailure, request: &Parts) -> Response<String> {
    let mut page = Response::new(format!(
        "<p>refused {} {}: {:?}, default {} {:?}</p>",
        request.method,
        request.uri.path(),
        failure.reason(),
        failure.status().as_u16(),
        failure.body_text(),
    ));
    *page.status_mut() = StatusCode::IM_A_TEAPOT;
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(REFUSAL_HEADER, HeaderValue::from_static("yes"));
    page
}

/// The test app with its own failure response, counting how often the
/// response is rendered and how many requests reach the routes (pass
/// through the CSRF layer to the inner service).
struct Watched {
    app: TestApp<MemoryStore>,
    rendered: Arc<AtomicUsize>,
    reached: Arc<AtomicUsize>,
}

impl Watched {
    fn new(
        render: impl Fn(&CsrfFailure, &Parts) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        let rendered = Arc::new(AtomicUsize::new(0));
        let reached = Arc::new(AtomicUsize::new(0));
        let renders = rendered.clone();
        let csrf = CsrfLayer::builder()
            .exempt_prefix("/hooks/")
            .max_form_bytes(4096)
            .failure_response(move |failure: &CsrfFailure, request: &Parts| {
                renders.fetch_add(1, Ordering::SeqCst);
                tracing::info!("{RENDERED_LOG}");
                render(failure, request)
            })
            .build()
            .unwrap();
        let arrivals = reached.clone();
        let count_arrivals = MapRequestLayer::new(move |request: Request<CsrfBody<Body>>| {
            arrivals.fetch_add(1, Ordering::SeqCst);
            request
        });
        let app = TestApp::with_layer(
            MemoryStore::new(),
            |b| b,
            ServiceBuilder::new().layer(csrf).layer(count_arrivals),
        );
        Self {
            app,
            rendered,
            reached,
        }
    }

    /// (renders, requests that reached the routes) so far.
    fn counts(&self) -> (usize, usize) {
        (
            self.rendered.load(Ordering::SeqCst),
            self.reached.load(Ordering::SeqCst),
        )
    }
}

/// A request body that fails on the first read, as a connection reset
/// mid-upload does.
struct BrokenBody;

impl hyper::body::Body for BrokenBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(Some(Err(io::Error::other("connection reset"))))
    }
}

#[tokio::test]
async fn a_custom_failure_response_answers_every_failed_check_and_the_handler_never_runs() {
    struct Test {
        reason: CsrfFailureReason,
        /// The event's name for the reason.
        logged: &'static str,
        headers: &'static [(&'static str, &'static str)],
        /// Whether the request also carries a valid token.
        with_token: bool,
        body: Body,
        default_status: u16,
        default_text: &'static str,
    }
    let tests = [
        Test {
            reason: CsrfFailureReason::CrossSite,
            logged: "cross_site",
            headers: &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
            with_token: true,
            body: Body::empty(),
            default_status: 403,
            default_text: "CSRF check failed: cross-site request\n",
        },
        Test {
            reason: CsrfFailureReason::OriginNotAllowed,
            logged: "origin_not_allowed",
            headers: &[("origin", "http://evil.example.test")],
            with_token: true,
            body: Body::empty(),
            default_status: 403,
            default_text: "CSRF check failed: origin not allowed\n",
        },
        Test {
            reason: CsrfFailureReason::MissingToken,
            logged: "missing_token",
            headers: &[],
            with_token: false,
            body: Body::empty(),
            default_status: 403,
            default_text: "CSRF check failed: missing token\n",
        },
        Test {
            reason: CsrfFailureReason::InvalidToken,
            logged: "invalid_token",
            headers: &[(
                "x-csrf-token",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            )],
            with_token: false,
            body: Body::empty(),
            default_status: 403,
            default_text: "CSRF check failed: invalid or expired token\n",
        },
        Test {
            reason: CsrfFailureReason::FormTooLarge,
            logged: "form_too_large",
            headers: &[FORM],
            with_token: false,
            body: Body::from(format!("msg={}", "x".repeat(5000))),
            default_status: 413,
            default_text: "CSRF check failed: form too large to check\n",
        },
        Test {
            reason: CsrfFailureReason::UnreadableBody,
            logged: "unreadable_body",
            headers: &[FORM],
            with_token: false,
            body: Body::new(BrokenBody),
            default_status: 400,
            default_text: "could not read the request body\n",
        },
        Test {
            reason: CsrfFailureReason::TokenBeyondLimit,
            logged: "token_beyond_limit",
            headers: &[MULTIPART],
            with_token: false,
            body: Body::from(multipart(&[("file", Some("f"), &[b'x'; 5000])])),
            default_status: 403,
            default_text: TOO_LATE,
        },
        Test {
            reason: CsrfFailureReason::MalformedMultipart,
            logged: "malformed_multipart",
            headers: &[MULTIPART],
            with_token: false,
            body: Body::from("no boundary here"),
            default_status: 403,
            default_text: "CSRF check failed: malformed multipart form\n",
        },
    ];
    let watched = Watched::new(refusal_page);
    for test in tests {
        let name = format!("{:?}", test.reason);
        let mut c = watched.app.client();
        let t = token(&mut c).await;
        let mut headers: Vec<(&str, &str)> = test.headers.to_vec();
        if test.with_token {
            headers.push(("x-csrf-token", &t));
        }
        let mut request = unsafe_post(&c, "/write", &headers, "");
        *request.body_mut() = test.body;
        let before = watched.counts();
        let (logs, guard) = logs::capture();
        let reply = c.send(request).await;
        drop(guard);

        assert_eq!(
            reply.status,
            StatusCode::IM_A_TEAPOT,
            "{name}: the app's status"
        );
        assert_eq!(
            reply.body,
            format!(
                "<p>refused POST /write: {name}, default {} {:?}</p>",
                test.default_status, test.default_text
            ),
            "{name}: the app's body, from the failure and the request"
        );
        assert_eq!(
            reply.header(header::CONTENT_TYPE),
            Some("text/html; charset=utf-8"),
            "{name}"
        );
        assert_eq!(reply.header(REFUSAL_HEADER), Some("yes"), "{name}");
        assert_eq!(
            reply
                .headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .collect::<Vec<_>>(),
            ["no-store"],
            "{name}: the layer adds no-store to the app's page"
        );
        assert_eq!(
            watched.counts(),
            (before.0 + 1, before.1),
            "{name}: rendered once, and the request never reached the routes"
        );
        assert!(c.cookie.is_none(), "{name}: no session was created");
        assert!(
            watched.app.store.inner().is_empty(),
            "{name}: the write never ran"
        );

        let text = logs.text();
        let event = text
            .find(&format!(
                r#"event="csrf_rejected" reason="{}""#,
                test.logged
            ))
            .unwrap_or_else(|| panic!("{name}: the security event is logged:\n{text}"));
        let rendered = text
            .find(RENDERED_LOG)
            .unwrap_or_else(|| panic!("{name}: the renderer ran:\n{text}"));
        assert!(
            event < rendered,
            "{name}: the event is logged before the app renders:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_custom_failure_response_keeps_its_own_cache_control() {
    let watched = Watched::new(|failure: &CsrfFailure, request: &Parts| {
        let mut page = refusal_page(failure, request);
        page.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=0"),
        );
        page
    });
    let mut c = watched.app.client();
    let request = unsafe_post(&c, "/write", &[], "");
    let reply = c.send(request).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(
        reply
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .collect::<Vec<_>>(),
        ["private, max-age=0"]
    );
}

#[tokio::test]
async fn safe_methods_exempt_paths_and_passing_checks_never_render_the_failure_response() {
    let watched = Watched::new(refusal_page);
    let mut c = watched.app.client();
    let cross_site = ("sec-fetch-site", "cross-site");
    let (logs, _guard) = logs::capture();

    // Safe methods, cross-site and without a token: never checked.
    for (method, status) in [
        ("GET", StatusCode::OK),
        ("HEAD", StatusCode::OK),
        // `/token` routes only GET (and HEAD): axum's own 405.
        ("OPTIONS", StatusCode::METHOD_NOT_ALLOWED),
        ("TRACE", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let mut request = c.request(method, "/token", "");
        request.headers_mut().insert(
            HeaderName::from_static(cross_site.0),
            HeaderValue::from_static(cross_site.1),
        );
        assert_eq!(c.send(request).await.status, status, "{method}");
    }
    // An exempt path, cross-site and without a token.
    let hook = unsafe_post(&c, "/hooks/incoming", &[cross_site], "");
    assert_eq!(c.send(hook).await.body, "hook");
    // An unsafe request that passes the checks.
    let t = token(&mut c).await;
    let request = unsafe_post(
        &c,
        "/write",
        &[("sec-fetch-site", "same-origin"), ("x-csrf-token", &t)],
        "",
    );
    assert_eq!(c.send(request).await.status, StatusCode::NO_CONTENT);

    assert_eq!(
        watched.counts(),
        (0, 7),
        "never rendered; every request reached the routes"
    );
    assert!(!logs.text().contains("csrf_rejected"), "{}", logs.text());
}

#[tokio::test]
async fn a_store_outage_in_the_check_answers_the_standard_503_despite_a_custom_response() {
    let watched = Watched::new(refusal_page);
    let app = &watched.app;
    let mut c = logged_in(app, "alice").await;
    // The public anonymous token, sent with a session cookie: the check
    // must load the session to see whether it is live.
    let public = token(&mut app.client()).await;
    let before = watched.counts();
    app.store.set_failing(true);
    let reply = post_with_token(&mut c, "/write", &public).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "session store unavailable, try again shortly\n");
    assert_eq!(reply.header(header::RETRY_AFTER), Some("5"));
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(reply.header(REFUSAL_HEADER), None);
    assert_eq!(
        watched.counts(),
        before,
        "not rendered, and the request never reached the routes"
    );
    // Once the store is back, the same request is a failed check.
    app.store.set_failing(false);
    let reply = post_with_token(&mut c, "/write", &public).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(watched.counts(), (before.0 + 1, before.1));
}

#[tokio::test]
async fn a_missing_session_layer_answers_the_standard_500_despite_a_custom_response() {
    let rendered = Arc::new(AtomicUsize::new(0));
    let renders = rendered.clone();
    let csrf = CsrfLayer::builder()
        .failure_response(move |failure: &CsrfFailure, request: &Parts| {
            renders.fetch_add(1, Ordering::SeqCst);
            refusal_page(failure, request)
        })
        .build()
        .unwrap();
    let router: Router = Router::new()
        .route("/write", post(|| async { "unreachable" }))
        .layer(csrf);
    let reply = read(
        router
            .oneshot(Request::post("/write").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The layer's own explanation (debug builds), not the app's page.
    assert!(
        reply.body.contains("must be inside SessionLayer"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(reply.header(REFUSAL_HEADER), None);
    assert_eq!(rendered.load(Ordering::SeqCst), 0);
}

/// The `content` of the page's `<meta name="csrf-token">` tag, checking
/// the page is the test app's `/meta` and holds that one tag.
fn meta_content(page: &str) -> &str {
    let content = page
        .strip_prefix(r#"<!doctype html><head><meta name="csrf-token" content=""#)
        .and_then(|rest| rest.strip_suffix(r#""></head>"#))
        .unwrap_or_else(|| panic!("one csrf-token meta tag: {page}"));
    assert_eq!(content.len(), 86, "{content}");
    assert!(
        content
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{content}"
    );
    content
}

async fn meta_token(client: &mut Client) -> String {
    let reply = client.get("/meta").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookies().is_empty(),
        "rendering the tag sets no cookie"
    );
    meta_content(&reply.body).to_owned()
}

#[tokio::test]
async fn the_meta_tag_token_passes_a_later_post_in_the_header_or_the_form() {
    let app = app();

    // A visitor without a session: the page's token logs them in.
    let mut alice = app.client();
    let t = meta_token(&mut alice).await;
    assert_eq!(
        post_with_token(&mut alice, "/login/alice", &t).await.status,
        StatusCode::NO_CONTENT
    );

    // Logged in: each page holds a new masking of the session's token, and
    // each passes, in the header or as the form field.
    let first = meta_token(&mut alice).await;
    let second = meta_token(&mut alice).await;
    assert_ne!(first, second, "masked afresh on every page");
    assert_eq!(
        post_with_token(&mut alice, "/write", &first).await.status,
        StatusCode::NO_CONTENT
    );
    let form = unsafe_post(
        &alice,
        "/echo",
        &[FORM],
        &format!("msg=hi&csrf_token={second}"),
    );
    assert_eq!(alice.send(form).await.body, "hi");

    // Another session's tag is no good, nor the pre-login one.
    let mut bob = logged_in(&app, "bob").await;
    let bobs = meta_token(&mut bob).await;
    assert_eq!(
        post_with_token(&mut alice, "/write", &bobs).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_with_token(&mut alice, "/write", &t).await.status,
        StatusCode::FORBIDDEN
    );
}

const TOO_LATE: &str =
    "CSRF check failed: no token field near the start of the multipart form (send it before any file)\n";

#[tokio::test]
async fn a_token_after_a_part_larger_than_the_limit_is_refused_with_the_reason() {
    // The app reads at most 4096 bytes of a form.
    let app = app();
    let mut c = logged_in(&app, "ann").await;
    let t = token(&mut c).await;
    let late = multipart(&[
        ("file", Some("big.bin"), &file_bytes(5000)),
        ("csrf_token", None, t.as_bytes()),
    ]);
    let reply = c.send(upload(&c, late)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, TOO_LATE);
    // Nor is a form without the field that is larger than the limit.
    let none = multipart(&[("file", Some("big.bin"), &file_bytes(5000))]);
    assert_eq!(c.send(upload(&c, none)).await.body, TOO_LATE);
    // The same token, first, passes.
    let first = multipart(&[
        ("csrf_token", None, t.as_bytes()),
        ("file", Some("big.bin"), &file_bytes(5000)),
    ]);
    assert_eq!(c.send(upload(&c, first)).await.status, StatusCode::OK);
}

/// A request body of the given chunks that counts the frames taken from
/// it, for telling what the layer read from what the handler read.
struct CountedChunks {
    chunks: std::collections::VecDeque<Bytes>,
    taken: Arc<AtomicUsize>,
}

impl hyper::body::Body for CountedChunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let chunk = self.chunks.pop_front();
        if chunk.is_some() {
            self.taken.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The frames taken from a request's [`CountedChunks`], and how many had
/// been taken when the request passed the CSRF layer.
#[derive(Clone)]
struct Frames {
    taken: Arc<AtomicUsize>,
    at_arrival: Arc<AtomicUsize>,
}

#[tokio::test]
async fn a_large_file_after_the_token_passes_without_the_layer_reading_it() {
    let csrf = CsrfLayer::builder().max_form_bytes(4096).build().unwrap();
    let note_arrival = MapRequestLayer::new(|request: Request<CsrfBody<Body>>| {
        if let Some(frames) = request.extensions().get::<Frames>() {
            let taken = frames.taken.load(Ordering::SeqCst);
            frames.at_arrival.store(taken, Ordering::SeqCst);
        }
        request
    });
    let app = TestApp::with_layer(
        MemoryStore::new(),
        |b| b,
        ServiceBuilder::new().layer(csrf).layer(note_arrival),
    );
    let mut c = app.client();
    let t = token(&mut c).await;
    let file = file_bytes(1024 * 1024);
    let sent = multipart(&[
        ("csrf_token", None, t.as_bytes()),
        ("file", Some("video.mp4"), &file),
    ]);
    let frames = Frames {
        taken: Arc::new(AtomicUsize::new(0)),
        at_arrival: Arc::new(AtomicUsize::new(usize::MAX)),
    };
    let chunks: std::collections::VecDeque<Bytes> =
        sent.chunks(1024).map(Bytes::copy_from_slice).collect();
    let total = chunks.len();
    let mut request = upload(
        &c,
        Body::new(CountedChunks {
            chunks,
            taken: frames.taken.clone(),
        }),
    );
    request.extensions_mut().insert(frames.clone());

    let reply = c.send(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        described(&[("csrf_token", t.as_bytes()), ("file", &file)]),
        "the handler reads the whole file"
    );
    // The token's part and the boundary after it lie in the first frame.
    assert_eq!(
        frames.at_arrival.load(Ordering::SeqCst),
        1,
        "the layer took one frame of {total}"
    );
    assert_eq!(frames.taken.load(Ordering::SeqCst), total);
}

#[tokio::test]
async fn a_malformed_multipart_form_is_refused() {
    let app = app();
    let mut c = logged_in(&app, "ann").await;
    let t = token(&mut c).await;
    let well_formed = multipart(&[("csrf_token", None, t.as_bytes())]);
    let cut = well_formed[..well_formed.len() - 12].to_vec();
    let other_boundary = String::from_utf8(well_formed.clone())
        .unwrap()
        .replace("XyZ", "Other");
    for (name, content_type, body) in [
        ("no boundary", "multipart/form-data", well_formed.clone()),
        ("another boundary", MULTIPART.1, other_boundary.into_bytes()),
        ("cut in the token's part", MULTIPART.1, cut),
        (
            "not multipart",
            MULTIPART.1,
            format!("csrf_token={t}").into_bytes(),
        ),
        ("empty", MULTIPART.1, Vec::new()),
    ] {
        let mut request = upload(&c, body);
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        let reply = c.send(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(
            reply.body, "CSRF check failed: malformed multipart form\n",
            "{name}"
        );
    }
    assert_eq!(c.send(upload(&c, well_formed)).await.status, StatusCode::OK);
}
