//! CSRF tokens and the sessions they are bound to, on every store: a
//! token counts for its own session only, follows the session through
//! its creation, login and regenerate, fails closed when the store is
//! down, and a token issued while the session is ended elsewhere never
//! brings it back. The store-independent rules (where a request comes
//! from, form and multipart limits, the app's failure page) are tested
//! on the memory store alone, in `tests/memory/csrf.rs`.

use std::future::Future;

use axum::http::StatusCode;
use cloakroom::store::SessionStore;

use crate::support::app::TestApp;
use crate::support::client::{assert_unavailable, whoami, with_handler_paused, Client};
use crate::support::csrf::{
    app, described, file_bytes, logged_in, multipart, post_with_token, token, unsafe_post, upload,
    FORM,
};
use crate::support::reply::Reply;

pub(crate) async fn tokens_are_bound_to_their_session_and_forged_ones_are_refused<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut alice = app.client();
    let reply = alice.post("/login/alice").await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "a login without a token"
    );
    assert!(alice.cookie.is_none());
    let t = token(&mut alice).await;
    assert_eq!(
        post_with_token(&mut alice, "/login/alice", &t).await.status,
        StatusCode::NO_CONTENT
    );

    let missing = unsafe_post(&alice, "/write", &[], "");
    let reply = alice.send(missing).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.body, "CSRF check failed: missing token\n");

    let forged = "A".repeat(86);
    for bad in [forged.as_str(), "short", &"!".repeat(86)] {
        let reply = post_with_token(&mut alice, "/write", bad).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(reply.body, "CSRF check failed: invalid or expired token\n");
    }

    // Bob's valid token replayed in Alice's session.
    let mut bob = logged_in(&app, "bob").await;
    let bobs = token(&mut bob).await;
    assert_eq!(
        post_with_token(&mut alice, "/write", &bobs).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_with_token(&mut bob, "/write", &bobs).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(whoami(&alice).await.as_deref(), Some("alice"));
}

pub(crate) async fn masked_tokens_differ_per_response_and_all_verify<S: SessionStore + Clone>(
    store: S,
) {
    let app = app(store);
    let mut c = logged_in(&app, "alice").await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(token(&mut c).await);
    }
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "no token repeats on the wire");
    for t in &tokens {
        assert_eq!(
            post_with_token(&mut c, "/write", t).await.status,
            StatusCode::NO_CONTENT
        );
    }
}

pub(crate) async fn asking_for_a_token_creates_no_session_and_sets_no_cookie<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut visitor = app.client();
    for _ in 0..3 {
        let reply = visitor.get("/token").await;
        assert!(
            reply.set_cookies().is_empty(),
            "no cookie for a visitor who never posts"
        );
    }
    assert_eq!(app.calls().total(), 0, "no store call");

    // The token still works when the visitor does post.
    let t = token(&mut visitor).await;
    assert_eq!(
        post_with_token(&mut visitor, "/login/alice", &t)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.calls().create, 1, "the login is the one session");
    assert_eq!(app.sessions_of("alice").await, 1);
}

pub(crate) async fn the_token_rotates_on_login_and_regenerate<S: SessionStore + Clone>(store: S) {
    let app = app(store);
    let mut c = app.client();
    let anonymous = token(&mut c).await;
    post_with_token(&mut c, "/login/alice", &anonymous).await;
    assert_eq!(
        post_with_token(&mut c, "/write", &anonymous).await.status,
        StatusCode::FORBIDDEN,
        "pre-login token"
    );

    let before = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/login/alice", &before)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post_with_token(&mut c, "/write", &before).await.status,
        StatusCode::FORBIDDEN,
        "login rotated it"
    );

    let before = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/regenerate", &before).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post_with_token(&mut c, "/write", &before).await.status,
        StatusCode::FORBIDDEN,
        "regenerate rotated it"
    );
    let fresh = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/write", &fresh).await.status,
        StatusCode::NO_CONTENT
    );
}

pub(crate) async fn an_anonymous_token_counts_only_for_a_visitor_without_a_session<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut c = app.client();
    // A script fetches one token; its first post creates a session.
    let t = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/write", &t).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(c.cookie.is_some());
    // The public token no longer acts on that session: a new one is needed.
    assert_eq!(
        post_with_token(&mut c, "/write", &t).await.status,
        StatusCode::FORBIDDEN
    );
    let fresh = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/write", &fresh).await.status,
        StatusCode::NO_CONTENT
    );
}

pub(crate) async fn another_visitors_anonymous_token_cannot_touch_an_anonymous_session_with_data<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    // The victim has an anonymous session with a cart, and no secret was
    // ever stored for it.
    let mut victim = app.client();
    let t = token(&mut victim).await;
    post_with_token(&mut victim, "/write", &t).await;
    assert!(victim.cookie.is_some());
    // The attacker's token is the public anonymous one; their page makes
    // the victim's browser post it (a client sending neither `Origin` nor
    // `Sec-Fetch-Site`).
    let mut attacker = app.client();
    let public = token(&mut attacker).await;
    assert_eq!(
        post_with_token(&mut victim, "/write", &public).await.status,
        StatusCode::FORBIDDEN
    );
    // A cookie whose session has ended is no session: the token counts.
    let dead_cookie = victim.cookie.clone();
    let bound = token(&mut victim).await;
    assert_eq!(
        post_with_token(&mut victim, "/logout", &bound).await.status,
        StatusCode::NO_CONTENT
    );
    let mut stale = app.client();
    stale.cookie = dead_cookie;
    assert_eq!(
        post_with_token(&mut stale, "/clear", &public).await.status,
        StatusCode::NO_CONTENT
    );
}

pub(crate) async fn tokens_rendered_at_once_right_after_login_all_work<S: SessionStore + Clone>(
    store: S,
) {
    let app = app(store);
    let mut c = logged_in(&app, "alice").await;
    // Two tabs and parallel XHRs ask for a token at the same moment.
    let fetches: Vec<_> = (0..32)
        .map(|_| {
            let mut tab = c.clone();
            tokio::spawn(async move { token(&mut tab).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for fetch in fetches {
        tokens.push(fetch.await.expect("token task"));
    }
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(
            post_with_token(&mut c, "/write", t).await.status,
            StatusCode::NO_CONTENT,
            "token {i} of {}",
            tokens.len()
        );
    }
}

pub(crate) async fn a_token_rendered_with_the_write_that_creates_the_session_works<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut c = app.client();
    let t = token(&mut c).await;
    let reply = post_with_token(&mut c, "/write-then-token", &t).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(c.cookie.is_some(), "the write created the session");
    assert_eq!(
        post_with_token(&mut c, "/write", &reply.body).await.status,
        StatusCode::NO_CONTENT
    );
}

pub(crate) async fn a_token_extracted_before_the_handler_creates_the_session_verifies<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut c = app.client();
    let reply = c.get("/token-then-write").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(c.cookie.is_some(), "the handler created the session");
    assert_eq!(
        post_with_token(&mut c, "/write", &reply.body).await.status,
        StatusCode::NO_CONTENT
    );
}

pub(crate) async fn a_token_extracted_before_a_login_verifies_after_it<S: SessionStore + Clone>(
    store: S,
) {
    let app = app(store);
    for mut c in [app.client(), logged_in(&app, "bob").await] {
        let before = c.cookie.clone();
        let reply = c.get("/token-then-login/alice").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_ne!(c.cookie, before, "the login moved the session");
        assert_eq!(
            post_with_token(&mut c, "/write", &reply.body).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(whoami(&c).await.as_deref(), Some("alice"));
    }
}

pub(crate) async fn the_token_is_no_session_data_and_survives_clear<S: SessionStore + Clone>(
    store: S,
) {
    let app = app(store);
    let mut c = logged_in(&app, "alice").await;
    let t = token(&mut c).await;
    post_with_token(&mut c, "/write", &t).await;
    assert_eq!(
        c.get("/keys").await.body,
        r#"["written"]"#,
        "no secret among the keys"
    );
    assert_eq!(
        post_with_token(&mut c, "/clear", &t).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post_with_token(&mut c, "/write", &t).await.status,
        StatusCode::NO_CONTENT,
        "forms open in other tabs keep working after clear()"
    );
}

pub(crate) async fn a_store_outage_during_the_check_answers_503<S: SessionStore + Clone>(store: S) {
    let app = app(store);
    let mut c = logged_in(&app, "alice").await;
    let bound = token(&mut c).await;
    let public = token(&mut app.client()).await;
    let echo = |c: &Client, token: &str| {
        unsafe_post(c, "/echo", &[FORM, ("x-csrf-token", token)], "msg=hi")
    };
    app.store.set_failing(true);
    // The public token with a session cookie: the check must load the
    // session to see whether it is live, and fails closed before the
    // route (which touches no session) runs.
    let reply = c.send(echo(&c, &public)).await;
    assert_unavailable(&reply, "the check");
    // The session's own token is checked without the store; the write
    // behind it fails as any write does.
    let reply = c.send(echo(&c, &bound)).await;
    assert_eq!(
        reply.body, "hi",
        "a bound token costs the check no store call"
    );
    let reply = post_with_token(&mut c, "/write", &bound).await;
    assert_unavailable(&reply, "the write");

    app.store.set_failing(false);
    assert_eq!(
        c.send(echo(&c, &public)).await.status,
        StatusCode::FORBIDDEN,
        "back up, the public token is refused for a live session"
    );
    assert_eq!(
        post_with_token(&mut c, "/write", &bound).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(whoami(&c).await.as_deref(), Some("alice"));
}

pub(crate) async fn a_multipart_form_with_the_token_first_reaches_the_handler_byte_for_byte<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let file = file_bytes(3000);
    let mut c = app.client();
    let send = async |c: &mut Client, token: &str| {
        let body = multipart(&[
            ("csrf_token", None, token.as_bytes()),
            ("title", None, b"holiday"),
            ("file", Some("photo.jpg"), &file),
        ]);
        let reply = c.send(upload(c, body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let expected = described(&[
            ("csrf_token", token.as_bytes()),
            ("title", b"holiday"),
            ("file", &file),
        ]);
        assert_eq!(reply.body, expected, "the handler reads the form as sent");
    };

    // Without a session (the anonymous token), with one, logged in.
    let t = token(&mut c).await;
    send(&mut c, &t).await;
    assert!(c.cookie.is_none());
    let t = token(&mut c).await;
    assert_eq!(
        post_with_token(&mut c, "/write", &t).await.status,
        StatusCode::NO_CONTENT
    );
    let t = token(&mut c).await;
    send(&mut c, &t).await;
    let mut ann = logged_in(&app, "ann").await;
    let t = token(&mut ann).await;
    send(&mut ann, &t).await;

    // The token may come after small parts, and in the header instead.
    let t = token(&mut ann).await;
    let body = multipart(&[
        ("file", Some("a"), &file[..500]),
        ("csrf_token", None, t.as_bytes()),
    ]);
    assert_eq!(ann.send(upload(&ann, body)).await.status, StatusCode::OK);
    let body = multipart(&[("file", Some("a"), &file)]);
    let mut request = upload(&ann, body);
    request
        .headers_mut()
        .insert("x-csrf-token", t.parse().expect("header value"));
    let reply = ann.send(request).await;
    assert_eq!(reply.body, described(&[("file", &file)]));
}

pub(crate) async fn a_multipart_form_with_a_missing_or_wrong_token_is_refused<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut ann = logged_in(&app, "ann").await;
    let mut bob = logged_in(&app, "bob").await;
    let bobs = token(&mut bob).await;
    let public = token(&mut app.client()).await;
    let forged = "A".repeat(86);
    let file = file_bytes(100);
    let invalid = "CSRF check failed: invalid or expired token\n";
    for (name, token, text) in [
        ("none", None, "CSRF check failed: missing token\n"),
        ("forged", Some(forged.as_str()), invalid),
        ("another session's", Some(bobs.as_str()), invalid),
        ("the public one", Some(public.as_str()), invalid),
        ("empty", Some(""), invalid),
    ] {
        let mut parts = vec![("title", None, b"x".as_slice())];
        if let Some(token) = token {
            parts.push(("csrf_token", None, token.as_bytes()));
        }
        parts.push(("file", Some("f"), &file));
        let reply = ann.send(upload(&ann, multipart(&parts))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(reply.body, text, "{name}");
    }
}

/// Sends `GET path` (a `/wait/...` route that issues a token) from
/// `browser`, runs `between` while its handler is held, and returns the
/// reply, which must be the token and hand out no cookie.
async fn issued_during<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &Client,
    path: &str,
    between: impl Future<Output = ()>,
) -> String {
    let reply = with_handler_paused(app, browser, "GET", path, between).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    assert!(
        reply.set_cookies().is_empty(),
        "{path}: no cookie for a session ended meanwhile"
    );
    reply.body
}

/// Logs out everywhere from a second device of alice's, with its token.
async fn logout_everywhere_from(owner: &mut Client) -> Reply {
    let t = token(owner).await;
    let reply = post_with_token(owner, "/logout-everywhere", &t).await;
    assert_eq!(reply.body, "2", "both of alice's sessions ended");
    reply
}

/// What a token issued to alice's session while it was ended must leave:
/// sent with `browser`'s cookie to a page that wants a user, it acts as
/// nobody (`expected`: the CSRF check's own `403`; or, when the cookie
/// names the ended session the token is bound to, the check passes it as
/// it would any visitor's without a live session and the page sends the
/// form post to the login page, `303`), and alice has no session
/// anywhere.
async fn assert_the_token_revives_nothing<S: SessionStore + Clone>(
    app: &TestApp<S>,
    browser: &mut Client,
    issued: &str,
    expected: StatusCode,
) {
    let reply = post_with_token(browser, "/account", issued).await;
    assert_eq!(reply.status, expected, "{}", reply.body);
    assert!(reply.set_cookies().is_empty(), "no session handed out");
    assert_eq!(whoami(browser).await, None, "still logged out");
    assert_eq!(app.sessions_of("alice").await, 0);
}

pub(crate) async fn a_token_issued_while_another_tab_logs_out_is_refused_and_revives_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let browser = logged_in(&app, "alice").await;
    let mut other_tab = browser.clone();
    let issued = issued_during(&app, &browser, "/wait/token", async {
        let t = token(&mut other_tab).await;
        let reply = post_with_token(&mut other_tab, "/logout", &t).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
    })
    .await;
    // The tabs share one jar, which the logout emptied: the token is the
    // ended session's and no visitor without a session may use it.
    let mut jar = other_tab;
    assert!(jar.cookie.is_none());
    assert_the_token_revives_nothing(&app, &mut jar, &issued, StatusCode::FORBIDDEN).await;
    // A tab that still sends the ended cookie gets no session back either.
    let mut stale = browser;
    assert_the_token_revives_nothing(&app, &mut stale, &issued, StatusCode::SEE_OTHER).await;
}

pub(crate) async fn a_token_issued_while_the_user_is_logged_out_everywhere_revives_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    // By the user from another device, then by an admin.
    let mut device = logged_in(&app, "alice").await;
    let mut owner = logged_in(&app, "alice").await;
    let issued = issued_during(&app, &device, "/wait/token", async {
        logout_everywhere_from(&mut owner).await;
    })
    .await;
    assert_the_token_revives_nothing(&app, &mut device, &issued, StatusCode::SEE_OTHER).await;

    let mut device = logged_in(&app, "alice").await;
    let issued = issued_during(&app, &device, "/wait/token", async {
        let ended = app.layer.admin().logout_everywhere("alice").await;
        assert_eq!(ended.expect("admin logout everywhere"), 1);
    })
    .await;
    assert_the_token_revives_nothing(&app, &mut device, &issued, StatusCode::SEE_OTHER).await;
}

pub(crate) async fn a_token_issued_before_a_write_that_lost_to_logout_everywhere_revives_nothing<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut device = logged_in(&app, "alice").await;
    let mut owner = logged_in(&app, "alice").await;
    // The page issued its token and then writes (a cart) to a session
    // that logout-everywhere ended in between: the write is dropped.
    let issued = issued_during(&app, &device, "/wait/token-then-write", async {
        logout_everywhere_from(&mut owner).await;
    })
    .await;
    assert_the_token_revives_nothing(&app, &mut device, &issued, StatusCode::SEE_OTHER).await;
}

pub(crate) async fn a_token_rendered_by_a_login_that_lost_to_logout_everywhere_is_refused<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = app(store);
    let mut device = logged_in(&app, "alice").await;
    let mut owner = logged_in(&app, "alice").await;
    // Logging in again on a device whose session logout-everywhere ends
    // before the login commits: the token is bound to the new ID, which
    // no browser ever gets.
    let issued = issued_during(&app, &device, "/wait/login-then-token/alice", async {
        logout_everywhere_from(&mut owner).await;
    })
    .await;
    assert_the_token_revives_nothing(&app, &mut device, &issued, StatusCode::FORBIDDEN).await;
}
