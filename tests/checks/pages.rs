//! What pages of an app with logins rely on: flash messages carried to the
//! next page exactly once, and routes that need a user ([`LoggedIn`],
//! [`CurrentUser`]) answering a browser and an API client each the right
//! way.
//!
//! [`LoggedIn`]: cloakroom::login::LoggedIn
//! [`CurrentUser`]: cloakroom::login::CurrentUser

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use cloakroom::login::LoginRequired;
use cloakroom::{store::SessionStore, Flash, FlashLevel, SessionError};

use crate::support::app::TestApp;
use crate::support::client::{logged_in, whoami, Client};
use crate::support::reply::Reply;

async fn flashes(client: &mut Client) -> Vec<Flash> {
    let reply = client.get("/flashes").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("flash list")
}

fn messages(flashes: &[Flash]) -> Vec<&str> {
    flashes.iter().map(|f| f.message.as_str()).collect()
}

pub(crate) async fn a_flash_is_shown_once_on_the_next_page<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = logged_in(&app, "alice").await;
    client.put("/set/theme", "dark").await;
    let reply = client
        .send(client.request("POST", "/flash", "Saved."))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    client
        .send(client.request("POST", "/flash", "And again."))
        .await;
    let shown = flashes(&mut client).await;
    assert_eq!(messages(&shown), ["Saved.", "And again."], "oldest first");
    assert_eq!(shown[0].level, FlashLevel::Success);
    assert!(flashes(&mut client).await.is_empty(), "shown once only");
    // Taking them left the rest of the session alone.
    assert_eq!(client.get("/get/theme").await.body, "dark");
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));
}

pub(crate) async fn pages_without_flashes_write_nothing<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    // A visitor without a session: not even a load.
    let mut visitor = app.client();
    app.store.reset();
    assert!(flashes(&mut visitor).await.is_empty());
    assert_eq!(app.calls().total(), 0, "no store call");
    assert!(visitor.cookie.is_none(), "and no session started");
    // A logged-in user with nothing waiting: the load, and no write.
    let mut client = logged_in(&app, "alice").await;
    app.store.reset();
    let reply = client.get("/flashes").await;
    let calls = app.calls();
    assert_eq!(calls.load, 1);
    assert_eq!(calls.total(), 1, "nothing written: {calls:?}");
    assert!(reply.set_cookies().is_empty());
}

pub(crate) async fn a_page_takes_its_flashes_in_one_extractor_argument<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    // A visitor without a session: an empty list, no store call, no
    // session started.
    let mut visitor = app.client();
    app.store.reset();
    let reply = visitor.get("/layout").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "0 []")
    );
    assert_eq!(app.calls().total(), 0, "no store call");
    assert!(visitor.cookie.is_none(), "and no session started");

    let mut client = logged_in(&app, "alice").await;
    client.put("/set/theme", "dark").await;
    for message in ["Saved.", "And again."] {
        let reply = client.send(client.request("POST", "/flash", message)).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    }
    let reply = client.get("/layout").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "2 [success:Saved.|success:And again.]"),
        "oldest first, in one argument"
    );
    // Taken: the next page shows none, and costs only the load.
    app.store.reset();
    let reply = client.get("/layout").await;
    assert_eq!(reply.body, "0 []", "shown once only");
    let calls = app.calls();
    assert_eq!(
        (calls.load, calls.total()),
        (1, 1),
        "nothing written: {calls:?}"
    );
    assert_eq!(client.get("/get/theme").await.body, "dark");
    assert_eq!(whoami(&client).await.as_deref(), Some("alice"));

    // A second extractor in the same request finds them taken.
    client.send(client.request("POST", "/flash", "Once.")).await;
    assert_eq!(client.get("/layout-twice").await.body, "1 then 0");
    assert!(flashes(&mut client).await.is_empty());
}

pub(crate) async fn flashes_survive_login_and_logout_into_the_next_page<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.post("/login-with-flash/alice").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(
        messages(&flashes(&mut client).await),
        ["Signed in as alice."]
    );
    assert!(flashes(&mut client).await.is_empty());

    let reply = client.post("/logout-with-flash").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(whoami(&client).await, None, "logged out");
    assert!(
        client.cookie.is_some(),
        "a fresh session carries the message"
    );
    assert_eq!(app.sessions_of("alice").await, 0);
    let shown = flashes(&mut client).await;
    assert_eq!(messages(&shown), ["Signed out."]);
    assert_eq!(shown[0].level, FlashLevel::Info);
    assert!(flashes(&mut client).await.is_empty());
}

fn request_with_accept(
    client: &Client,
    method: &str,
    path: &str,
    accept: &str,
) -> axum::http::Request<axum::body::Body> {
    let mut request = client.request(method, path, "");
    request
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
    request
}

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn location(reply: &Reply) -> Option<&str> {
    reply.header(header::LOCATION)
}

pub(crate) async fn a_page_needing_a_user_sends_browsers_to_login_and_apis_a_401<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::with(store, |b| b.login_url("/sign-in"));
    let mut visitor = app.client();
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/account?tab=devices",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&reply),
        Some("/sign-in?next=%2Faccount%3Ftab%3Ddevices")
    );
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));

    // Inside a nested router, `next` is still the whole path.
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/area/page",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_eq!(location(&reply), Some("/sign-in?next=%2Farea%2Fpage"));

    // A form post is sent to the login page without `next` (a GET there
    // would not repeat the post).
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "POST",
            "/account",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), Some("/sign-in"));

    // Scripts and API clients get a 401.
    for headers in [
        &[("accept", "application/json")][..],
        &[("accept", "*/*"), ("sec-fetch-mode", "cors")],
        &[("accept", "*/*"), ("x-requested-with", "XMLHttpRequest")],
    ] {
        let mut request = visitor.request("GET", "/account", "");
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        let reply = visitor.send(request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(location(&reply), None);
    }
    // A client that says nothing (curl, a test script) is sent to log in.
    let reply = visitor.get("/account").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "no Accept at all");
    assert_eq!(location(&reply), Some("/sign-in?next=%2Faccount"));
    assert!(visitor.cookie.is_none(), "no session was started");

    assert_eq!(visitor.get("/maybe-account").await.body, "anonymous");
    let mut alice = logged_in(&app, "alice").await;
    let reply = alice
        .send(request_with_accept(
            &alice,
            "GET",
            "/account",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
    assert_eq!(alice.get("/maybe-account").await.body, "alice");
}

pub(crate) async fn the_current_user_is_loaded_once_per_request_and_gone_users_are_logged_out<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut alice = logged_in(&app, "alice").await;
    let reply = alice.get("/me").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice (one load)")
    );
    assert_eq!(alice.get("/maybe-me").await.body, "alice");

    // An account deleted since the login counts as no user.
    let mut ghost = logged_in(&app, "ghost").await;
    let reply = ghost
        .send(request_with_accept(&ghost, "GET", "/me", BROWSER_ACCEPT))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), Some("/login?next=%2Fme"));
    assert_eq!(app.sessions_of("ghost").await, 0, "ended in the store");
    assert_eq!(ghost.get("/maybe-me").await.body, "nobody");

    // The app's own failure is its own answer.
    let mut broken = logged_in(&app, "broken").await;
    let reply = broken.get("/me").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::BAD_GATEWAY, "user database down")
    );
    let mut visitor = app.client();
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/me",
            "application/json",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// The app's own answer to a route that needs a user: it names what it
/// was given and the request it answers, and tries to change what the
/// crate keeps (status, caching).
fn render_login_required(rejection: &LoginRequired, request: &Parts) -> Response {
    let what = match rejection {
        LoginRequired::Redirect { location } => format!("redirect to {location}"),
        LoginRequired::Unauthorized => "unauthorized".to_owned(),
        other => format!("unexpected {other:?}"),
    };
    let mut page = Response::new(Body::from(format!(
        "login page: {what}, for {} {}",
        request.method, request.uri
    )));
    let headers = page.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    page
}

/// The app's own answer to a session error, likewise.
fn render_session_error(error: &SessionError, request: &Parts) -> Response {
    let accept = request
        .headers
        .get(header::ACCEPT)
        .map_or("-", |accept| accept.to_str().unwrap());
    let mut page = Response::new(Body::from(format!(
        "error page: {}, for {} {} ({accept})",
        error.status().as_u16(),
        request.method,
        request.uri
    )));
    *page.status_mut() = StatusCode::OK;
    page.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    page
}

fn assert_rendered(reply: &Reply, status: StatusCode, body: &str) {
    assert_eq!((reply.status, reply.body.as_str()), (status, body));
    assert_eq!(
        reply.header(header::CACHE_CONTROL),
        Some("no-store"),
        "{body}: never cached"
    );
}

pub(crate) async fn the_app_renders_login_required_and_session_errors_itself<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::with(store, |b| {
        b.login_url("/sign-in")
            .login_required_response(render_login_required)
            .session_error_response(render_session_error)
    });

    // A browser asking for a page that needs a user: the app's page, with
    // the crate's status and Location.
    let mut visitor = app.client();
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/account?tab=devices",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_rendered(
        &reply,
        StatusCode::SEE_OTHER,
        "login page: redirect to /sign-in?next=%2Faccount%3Ftab%3Ddevices, \
         for GET /account?tab=devices",
    );
    assert_eq!(
        location(&reply),
        Some("/sign-in?next=%2Faccount%3Ftab%3Ddevices")
    );
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        Some("text/html"),
        "the app's own"
    );
    // An API client: its 401, in the app's words.
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/sensitive",
            "application/json",
        ))
        .await;
    assert_rendered(
        &reply,
        StatusCode::UNAUTHORIZED,
        "login page: unauthorized, for GET /sensitive",
    );
    assert_eq!(location(&reply), None);
    assert!(visitor.cookie.is_none(), "no session was started");

    // Session errors a handler returns: 401 without a user, 404 for a
    // handle that is not the user's.
    let handle = "ab".repeat(32);
    let reply = visitor.delete(&format!("/devices/{handle}")).await;
    assert_rendered(
        &reply,
        StatusCode::UNAUTHORIZED,
        &format!("error page: 401, for DELETE /devices/{handle} (-)"),
    );
    let mut alice = logged_in(&app, "alice").await;
    let reply = alice.delete("/devices/junk").await;
    assert_rendered(
        &reply,
        StatusCode::NOT_FOUND,
        "error page: 404, for DELETE /devices/junk (-)",
    );

    // A store failure: from a handler, from the login extractor and from
    // the flash extractor, each the app's page with the 503's Retry-After.
    app.store.set_failing(true);
    for path in ["/whoami", "/account", "/layout"] {
        let reply = alice
            .send(request_with_accept(&alice, "GET", path, "application/json"))
            .await;
        assert_rendered(
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("error page: 503, for GET {path} (application/json)"),
        );
        assert_eq!(reply.header(header::RETRY_AFTER), Some("5"), "{path}");
    }
    app.store.set_failing(false);
    assert_eq!(whoami(&alice).await.as_deref(), Some("alice"));

    // A rendered answer still carries what the session asks of the
    // response: a user gone since the login is logged out, cookie and all.
    let mut ghost = logged_in(&app, "ghost").await;
    let reply = ghost
        .send(request_with_accept(&ghost, "GET", "/me", BROWSER_ACCEPT))
        .await;
    assert_rendered(
        &reply,
        StatusCode::SEE_OTHER,
        "login page: redirect to /sign-in?next=%2Fme, for GET /me",
    );
    assert!(
        super::is_removal(&reply),
        "the ended session's cookie is removed"
    );
    assert_eq!(ghost.cookie, None);

    // Pages that answer normally are left alone.
    let reply = alice.get("/account").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "alice")
    );
}

pub(crate) async fn a_router_behind_the_login_guard_answers_as_the_extractors_do<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut visitor = app.client();
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/guarded",
            BROWSER_ACCEPT,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), Some("/login?next=%2Fguarded"));
    let reply = visitor
        .send(request_with_accept(
            &visitor,
            "GET",
            "/guarded",
            "application/json",
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(visitor.cookie, None, "the guard creates no session");

    let mut alice = logged_in(&app, "alice").await;
    let reply = alice.get("/guarded").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "inside")
    );
    assert_eq!(alice.get("/admin-only").await.status, StatusCode::FORBIDDEN);
    let mut admin = logged_in(&app, "admin").await;
    let reply = admin.get("/admin-only").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "admin page")
    );
}
