//! The session cookie: its attributes, junk and forged cookies, key
//! rotation, and the cache headers that keep it out of shared caches.

use axum::http::{header, StatusCode};
use cloakroom::{store::SessionStore, KeyRing, SameSite};

use super::cookie_of;
use crate::support::app::{key, TestApp, IDLE};
use crate::support::client::{logged_in, whoami};
use crate::support::logs;

pub(crate) async fn cookie_attributes_are_safe_by_default<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/set/k", "v").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let c = cookie_of(&reply);
    assert_eq!(c.name(), "__Host-id", "the __Host- prefix by default");
    assert_eq!(
        c.value().len(),
        66,
        "base64url ID, dot, base64url HMAC-SHA256"
    );
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(c.path(), Some("/"));
    assert_eq!(c.domain(), None);
    assert_eq!(c.max_age(), None, "a browser-session cookie by default");
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(reply.header(header::VARY), Some("Cookie"));
}

pub(crate) async fn configured_attributes_reach_the_cookie<S: SessionStore + Clone>(store: S) {
    let (logs, _guard) = logs::capture();
    let app = TestApp::with(store, |b| {
        b.cookie_name("sid")
            .domain("example.test")
            .path("/app")
            .same_site(SameSite::Strict)
            .secure(false)
            .http_only(false)
            .persistent(true)
    });
    let mut client = app.client();
    client.cookie_name = "sid".into();
    let reply = client.put("/set/k", "v").await;
    let c = cookie_of(&reply);
    assert_eq!(c.name(), "sid");
    assert_eq!(c.domain(), Some("example.test"));
    assert_eq!(c.path(), Some("/app"));
    assert_eq!(c.same_site(), Some(cookie::SameSite::Strict));
    assert_eq!(c.secure(), None);
    assert_eq!(c.http_only(), None);
    assert_eq!(
        c.max_age(),
        Some(time::Duration::seconds(IDLE.as_secs() as i64)),
        "persistent cookies live until the idle deadline"
    );
    assert_eq!(client.get("/get/k").await.body, "v");
    assert!(
        logs.text().contains("cookie_without_secure"),
        "secure(false) is announced at start-up as a development setting"
    );
}

pub(crate) async fn host_prefix_cookie_is_named_and_scoped_for_it<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::with(store, |b| b.host_prefix(true));
    let mut client = app.client();
    assert_eq!(client.cookie_name, "__Host-id");
    let c = cookie_of(&client.put("/set/k", "v").await);
    assert_eq!(c.name(), "__Host-id");
    assert_eq!(c.secure(), Some(true));
    assert_eq!(c.path(), Some("/"));
    assert_eq!(c.domain(), None);
    assert_eq!(client.get("/get/k").await.body, "v");
    // A cookie without the prefix is not the session cookie.
    let mut unprefixed = app.client();
    unprefixed.cookie_name = "id".into();
    unprefixed.cookie = client.cookie.clone();
    assert_eq!(unprefixed.get("/get/k").await.status, StatusCode::NOT_FOUND);
}

pub(crate) async fn junk_cookies_are_anonymous_and_cost_no_store_call<S: SessionStore + Clone>(
    store: S,
) {
    // The plain name (no prefix without `Secure`), which the literal
    // headers below use.
    let app = TestApp::with(store, |b| b.secure(false));
    let mut real = app.client();
    real.put("/set/k", "v").await;
    let good = real.cookie.clone().unwrap();
    let (id_part, tag_part) = good.split_at(22);
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_key = KeyRing::new(key(7)).sign(&cloakroom::id::SessionId::generate().unwrap());
    let huge = format!("id={}", "a".repeat(8192));
    let many: Vec<String> = (0..100).map(|i| format!("id=junk{i}")).collect();
    let repeated = "id=a; ".repeat(40);

    let cases: Vec<Vec<Vec<u8>>> = vec![
        vec![b"id=not base64!!".to_vec()],
        vec![b"id=".to_vec()],
        vec![b"id".to_vec()],
        vec![b"=".to_vec()],
        vec![b";;;;".to_vec()],
        vec![format!("id={id_part}").into_bytes()],
        vec![format!("id={id_part}.").into_bytes()],
        vec![format!("id={id_part}{tag_part}x").into_bytes()],
        vec![format!("id={}", &good[..65]).into_bytes()],
        vec![format!("id={flipped}").into_bytes()],
        vec![format!("id={other_key}").into_bytes()],
        vec![format!("id={}", good.replace('.', "!")).into_bytes()],
        vec!["id=ключ✓".as_bytes().to_vec()],
        // Exactly the cookie's byte length, with a multi-byte character
        // across the ID/tag boundary (once a panic in `KeyRing::verify`).
        vec![format!("id={}ക{}", "A".repeat(21), "B".repeat(42)).into_bytes()],
        vec![b"id=\xe9\xe9\xff".to_vec()],
        vec![huge.into_bytes()],
        many.iter().map(|c| c.clone().into_bytes()).collect(),
        vec![repeated.into_bytes()],
        vec![format!("id=\"{flipped}\"").into_bytes()],
    ];
    app.store.reset();
    for case in &cases {
        let headers: Vec<&[u8]> = case.iter().map(Vec::as_slice).collect();
        for path in ["/whoami", "/get/k"] {
            let reply = real.get_with_cookie_headers(path, &headers).await;
            assert!(
                reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::NOT_FOUND,
                "{path} with {case:?}: {}",
                reply.status
            );
            assert!(
                reply.set_cookies().is_empty(),
                "junk is not answered with cookies"
            );
        }
    }
    assert_eq!(app.calls().total(), 0, "no junk cookie reached the store");
    // The real session is untouched by all of that.
    assert_eq!(real.get("/get/k").await.body, "v");
}

pub(crate) async fn a_valid_cookie_among_junk_duplicates_still_counts<S: SessionStore + Clone>(
    store: S,
) {
    let app = TestApp::with(store, |b| b.secure(false));
    let mut real = app.client();
    real.put("/set/k", "v").await;
    let good = real.cookie.clone().unwrap();
    let header = format!("id=junk; other=1; id={good}; id=more-junk");
    let reply = real
        .get_with_cookie_headers("/get/k", &[header.as_bytes()])
        .await;
    assert_eq!(reply.body, "v");
    let reply = real
        .get_with_cookie_headers(
            "/get/k",
            &[b"id=x", b"a=b", format!("id={good}").as_bytes()],
        )
        .await;
    assert_eq!(reply.body, "v");
}

pub(crate) async fn key_rotation_keeps_sessions_until_the_old_key_leaves_the_ring<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let old_app = TestApp::new(store.clone());
    let client = logged_in(&old_app, "alice").await;
    let old_cookie = client.cookie.clone().unwrap();

    let rotated = TestApp::with(store.clone(), |b| {
        b.key_ring(KeyRing::new(key(2)).with_previous(key(1)))
    });
    let mut on_rotated = rotated.client();
    on_rotated.cookie = Some(old_cookie.clone());
    assert_eq!(
        whoami(&on_rotated).await.as_deref(),
        Some("alice"),
        "nobody is logged out"
    );
    let fresh = logged_in(&rotated, "bob").await;

    let retired = TestApp::with(store, |b| b.key_ring(KeyRing::new(key(2))));
    let mut on_retired = retired.client();
    on_retired.cookie = Some(old_cookie);
    assert_eq!(
        whoami(&on_retired).await,
        None,
        "old key dropped: logged out"
    );
    assert_eq!(retired.calls().total(), 0, "rejected before the store");
    on_retired.cookie = fresh.cookie.clone();
    assert_eq!(
        whoami(&on_retired).await.as_deref(),
        Some("bob"),
        "new cookies use the new key"
    );
    assert_eq!(whoami(&fresh).await.as_deref(), Some("bob"));
}

pub(crate) async fn handler_cache_policy_is_kept<S: SessionStore + Clone>(store: S) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/cached/k", "").await;
    assert!(!reply.set_cookies().is_empty());
    assert_eq!(
        reply.header(header::CACHE_CONTROL),
        Some("private, max-age=60")
    );
    assert_eq!(reply.header(header::VARY), Some("Cookie"));
}

pub(crate) async fn a_publicly_cacheable_response_never_carries_a_session_cookie<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let mut client = app.client();
    let reply = client.put("/public/k", "").await;
    assert!(!reply.set_cookies().is_empty());
    assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
}
