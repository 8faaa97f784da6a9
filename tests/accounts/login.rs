//! Signing in and out: wrong passwords, the `next` page and open
//! redirects, remember-me, flash messages, logout, CSRF, and escaping.

use std::process::{Command, Stdio};

use hyper::{Method, StatusCode};

use crate::app::{
    binary, free_port, Accounts, ALICE, ALICE_PASSWORD, BOB, FIREFOX_ON_LINUX, SAFARI_ON_IPHONE,
};

#[tokio::test]
async fn a_wrong_password_is_refused_and_starts_no_session() {
    let app = Accounts::start().await;
    let mut browser = app.browser(FIREFOX_ON_LINUX);

    let wrong = browser.login(ALICE, "correct horse battery stable").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.set_cookie().is_none(),
        "no session for a failed login"
    );
    assert!(browser.cookie.is_none());
    assert!(wrong.body.contains("Wrong user name or password."));
    // The form comes back, with the name filled in and a token to try again.
    let form = wrong.form("/login");
    assert!(form.field("csrf_token").is_some());
    assert!(wrong.body.contains("value=\"alice\""));

    // An unknown name gets the same answer: no user enumeration.
    let unknown = browser.login("mallory", ALICE_PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.set_cookie().is_none());
    assert!(unknown.body.contains("Wrong user name or password."));
    // Another user's password is as wrong as any other.
    let crossed = browser.login(BOB, ALICE_PASSWORD).await;
    assert_eq!(crossed.status, StatusCode::UNAUTHORIZED);

    assert_eq!(browser.account_user().await, None);
}

#[tokio::test]
async fn login_shows_the_user_and_its_flash_once() {
    let app = Accounts::start().await;
    let mut browser = app.browser(FIREFOX_ON_LINUX);

    let login = browser.login(ALICE, ALICE_PASSWORD).await;
    login.assert_redirect("/account");
    let cookie = login.set_cookie().expect("login sets the session cookie");
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }

    let account = browser.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(account.body.contains("Alice Liddell"), "{}", account.body);
    assert_eq!(account.flashes(), ["Signed in as Alice Liddell."]);
    assert_eq!(
        account.headers.get("cache-control").unwrap(),
        "no-store",
        "personal pages are not cached"
    );
    // Shown once: the next page has no flash.
    let again = browser.get("/account").await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.flashes().is_empty(), "{:?}", again.flashes());
    assert_eq!(
        browser.account_user().await.as_deref(),
        Some("Alice Liddell")
    );

    // The login page sends a signed-in user on.
    browser.get("/login").await.assert_redirect("/account");
    browser
        .get("/login?next=%2Faccount%2Fdevices")
        .await
        .assert_redirect("/account/devices");
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_login_and_back() {
    let app = Accounts::start().await;
    let mut browser = app.browser(FIREFOX_ON_LINUX);

    let account = browser.get("/account").await;
    account.assert_redirect("/login?next=%2Faccount");
    assert!(
        account.set_cookie().is_none(),
        "a redirect starts no session"
    );
    for page in ["/account/devices", "/account/password"] {
        let reply = browser.get(page).await;
        let query = serde_urlencoded::to_string([("next", page)]).unwrap();
        reply.assert_redirect(&format!("/login?{query}"));
    }
    // A script (no text/html in Accept) gets 401 instead.
    let script = app
        .browser(FIREFOX_ON_LINUX)
        .send_accepting(Method::GET, "/account", "application/json")
        .await;
    assert_eq!(script.status, StatusCode::UNAUTHORIZED);

    let login_page = browser.get("/login?next=%2Faccount").await;
    assert_eq!(login_page.status, StatusCode::OK);
    let form = login_page.form("/login");
    assert_eq!(form.field("next"), Some("/account"));
    let login = browser
        .submit(&form, &[("user", ALICE), ("password", ALICE_PASSWORD)])
        .await;
    login.assert_redirect("/account");

    // Another page to go back to.
    let mut second = app.browser(FIREFOX_ON_LINUX);
    second.get("/account/devices").await;
    let page = second.get("/login?next=%2Faccount%2Fdevices").await;
    let login = second
        .submit(
            &page.form("/login"),
            &[("user", ALICE), ("password", ALICE_PASSWORD)],
        )
        .await;
    login.assert_redirect("/account/devices");
    // The `next` of a failed login is kept for the next try.
    let mut third = app.browser(FIREFOX_ON_LINUX);
    let page = third.get("/login?next=%2Faccount%2Fpassword").await;
    let failed = third
        .submit(&page.form("/login"), &[("user", ALICE), ("password", "no")])
        .await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        failed.form("/login").field("next"),
        Some("/account/password")
    );
}

#[tokio::test]
async fn an_open_redirect_in_next_is_ignored() {
    let app = Accounts::start().await;
    let evil = [
        "//evil.example",
        "//evil.example/account",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ];
    for next in evil {
        let mut browser = app.browser(FIREFOX_ON_LINUX);
        let query = serde_urlencoded::to_string([("next", next)]).unwrap();
        let page = browser.get(&format!("/login?{query}")).await;
        assert_eq!(page.status, StatusCode::OK);
        let form = page.form("/login");
        assert_eq!(
            form.field("next"),
            None,
            "{next:?} is not carried in the form"
        );
        // Posted by hand anyway: the login lands on the account page.
        let login = browser
            .submit(
                &form,
                &[
                    ("user", ALICE),
                    ("password", ALICE_PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        login.assert_redirect("/account");
        // Signed in already: the login page ignores it as well.
        browser
            .get(&format!("/login?{query}"))
            .await
            .assert_redirect("/account");
    }
}

#[tokio::test]
async fn remember_me_makes_the_cookie_persistent() {
    let app = Accounts::start().await;

    let mut remembered = app.browser(FIREFOX_ON_LINUX);
    let login = remembered.login_remembered(ALICE, ALICE_PASSWORD).await;
    login.assert_redirect("/account");
    let cookie = login.set_cookie().expect("a cookie");
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|attribute| attribute.strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("a persistent cookie: {cookie}"))
        .parse()
        .expect("seconds");
    assert!(
        max_age > 24 * 3600,
        "remembered for days, not {max_age} seconds"
    );

    let mut forgotten = app.browser(SAFARI_ON_IPHONE);
    let login = forgotten.login(ALICE, ALICE_PASSWORD).await;
    login.assert_redirect("/account");
    let cookie = login.set_cookie().expect("a cookie");
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "a browser-session cookie without remember-me: {cookie}"
    );

    // The devices page tells them apart.
    let devices = remembered.get("/account/devices").await.devices();
    let labels: Vec<&str> = devices.iter().map(|row| row.label.as_str()).collect();
    assert!(
        labels.contains(&"Firefox on Linux (remembered)"),
        "{labels:?}"
    );
    assert!(labels.contains(&"Safari on iPhone"), "{labels:?}");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = Accounts::start().await;
    let mut browser = app.browser(FIREFOX_ON_LINUX);
    browser.signed_in(ALICE, ALICE_PASSWORD).await;
    let old_cookie = browser.cookie.clone();

    let logout = browser.submit_on("/account", "/logout", &[]).await;
    logout.assert_redirect("/login");
    assert_ne!(browser.cookie, old_cookie, "the session cookie is replaced");
    let login_page = browser.get("/login").await;
    assert_eq!(login_page.status, StatusCode::OK);
    assert_eq!(login_page.flashes(), ["You are signed out."]);
    assert_eq!(browser.account_user().await, None);

    // The old cookie is dead, not just forgotten by the browser.
    let mut replay = app.browser(FIREFOX_ON_LINUX);
    replay.cookie = old_cookie;
    assert_eq!(replay.account_user().await, None);
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused() {
    let app = Accounts::start().await;

    let mut anonymous = app.browser(FIREFOX_ON_LINUX);
    let login = anonymous
        .post("/login", &[("user", ALICE), ("password", ALICE_PASSWORD)])
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert!(login.set_cookie().is_none());
    let forged = anonymous
        .post(
            "/login",
            &[
                ("csrf_token", "forged"),
                ("user", ALICE),
                ("password", ALICE_PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let mut browser = app.browser(FIREFOX_ON_LINUX);
    browser.signed_in(ALICE, ALICE_PASSWORD).await;
    let refused = browser.post("/logout", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        browser.account_user().await.as_deref(),
        Some("Alice Liddell"),
        "still signed in"
    );
    let refused = browser
        .post(
            "/account/password",
            &[
                ("current_password", ALICE_PASSWORD),
                ("new_password", "a brand new password"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = browser.post("/account/devices/sign-out-others", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // The password did not change.
    let mut other = app.browser(SAFARI_ON_IPHONE);
    other.signed_in(ALICE, ALICE_PASSWORD).await;
    assert_eq!(
        browser.account_user().await.as_deref(),
        Some("Alice Liddell")
    );
}

#[tokio::test]
async fn what_the_visitor_typed_is_escaped() {
    let app = Accounts::start().await;
    let mut browser = app.browser(FIREFOX_ON_LINUX);
    let name = "\"><script>alert(1)</script>";
    let reply = browser.login(name, "whatever").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.body.contains("<script>"), "{}", reply.body);
    assert!(
        reply.body.contains("&quot;&gt;&lt;script&gt;"),
        "{}",
        reply.body
    );
}

#[test]
fn a_bad_key_or_an_unknown_store_is_refused() {
    for (name, value) in [("SESSION_KEY", "not-hex"), ("SESSION_STORE", "floppy")] {
        let status = Command::new(binary())
            .env("ACCOUNTS_ADDR", free_port().to_string())
            .env(name, value)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run the example");
        assert!(!status.success(), "{name}={value} must be refused");
    }
}
