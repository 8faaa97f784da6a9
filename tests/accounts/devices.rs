//! One user on several devices: the devices page, signing out another
//! device (and only one's own), and a password change that signs out every
//! other device.

use hyper::StatusCode;

use crate::app::{
    Accounts, Browser, DeviceRow, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, FIREFOX_ON_LINUX,
    SAFARI_ON_IPHONE,
};

/// The rows of `browser`'s devices page.
async fn devices(browser: &mut Browser) -> Vec<DeviceRow> {
    let page = browser.get("/account/devices").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.devices()
}

/// Alice on a laptop and on a phone.
async fn laptop_and_phone(app: &Accounts) -> (Browser, Browser) {
    let mut laptop = app.browser(FIREFOX_ON_LINUX);
    laptop.signed_in(ALICE, ALICE_PASSWORD).await;
    let mut phone = app.browser(SAFARI_ON_IPHONE);
    phone.signed_in(ALICE, ALICE_PASSWORD).await;
    (laptop, phone)
}

#[tokio::test]
async fn the_devices_page_lists_both_devices_and_signs_out_the_other() {
    let app = Accounts::start().await;
    let (mut laptop, mut phone) = laptop_and_phone(&app).await;

    let rows = devices(&mut laptop).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let this = rows.iter().find(|row| row.current).expect("this device");
    assert_eq!(this.label, "Firefox on Linux");
    assert!(
        this.sign_out.is_none(),
        "no sign-out button for this device"
    );
    let other = rows.iter().find(|row| !row.current).expect("the phone");
    assert_eq!(other.label, "Safari on iPhone");
    let sign_out = other.sign_out.clone().expect("a sign-out button");
    assert!(sign_out.field("csrf_token").is_some());

    // The phone sees the same two, from its side.
    let from_phone = devices(&mut phone).await;
    let current: Vec<&str> = from_phone
        .iter()
        .filter(|row| row.current)
        .map(|row| row.label.as_str())
        .collect();
    assert_eq!(current, ["Safari on iPhone"]);
    assert_eq!(from_phone.len(), 2);

    let signed_out = laptop.submit(&sign_out, &[]).await;
    signed_out.assert_redirect("/account/devices");
    let page = laptop.get("/account/devices").await;
    assert_eq!(page.flashes(), ["The device was signed out."]);
    let rows = page.devices();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].current);

    // The phone's next request is anonymous; the laptop is still in.
    assert_eq!(phone.account_user().await, None);
    assert_eq!(
        laptop.account_user().await.as_deref(),
        Some("Alice Liddell")
    );

    // The same button again: that session is gone.
    let again = laptop.submit(&sign_out, &[]).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signing_out_this_device_by_its_handle_is_a_logout() {
    let app = Accounts::start().await;
    let (mut laptop, mut phone) = laptop_and_phone(&app).await;
    // The laptop's own page has no button for it; the phone's has.
    let laptop_handle = devices(&mut phone)
        .await
        .into_iter()
        .find(|row| !row.current)
        .and_then(|row| row.sign_out)
        .and_then(|form| form.field("session").map(str::to_owned))
        .expect("the laptop on the phone's devices page");
    let page = laptop.get("/account/devices").await;
    let token = page
        .form("/account/devices/sign-out-others")
        .field("csrf_token")
        .expect("a token")
        .to_owned();
    let reply = laptop
        .post(
            "/account/devices/sign-out",
            &[("csrf_token", &token), ("session", &laptop_handle)],
        )
        .await;
    reply.assert_redirect("/login");
    assert_eq!(
        laptop.get("/login").await.flashes(),
        ["You are signed out."]
    );
    assert_eq!(laptop.account_user().await, None);
    assert_eq!(phone.account_user().await.as_deref(), Some("Alice Liddell"));
}

#[tokio::test]
async fn sign_out_every_other_device_keeps_this_one() {
    let app = Accounts::start().await;
    let (mut laptop, mut phone) = laptop_and_phone(&app).await;
    let mut tablet = app.browser(SAFARI_ON_IPHONE);
    tablet.signed_in(ALICE, ALICE_PASSWORD).await;
    let mut bob = app.browser(FIREFOX_ON_LINUX);
    bob.signed_in(BOB, BOB_PASSWORD).await;

    let reply = laptop
        .submit_on("/account/devices", "/account/devices/sign-out-others", &[])
        .await;
    reply.assert_redirect("/account/devices");
    let page = laptop.get("/account/devices").await;
    assert_eq!(page.flashes(), ["Signed out 2 other devices."]);
    assert_eq!(page.devices().len(), 1);
    assert_eq!(phone.account_user().await, None);
    assert_eq!(tablet.account_user().await, None);
    assert_eq!(
        laptop.account_user().await.as_deref(),
        Some("Alice Liddell")
    );
    // Another user's sessions are not touched.
    assert_eq!(bob.account_user().await.as_deref(), Some("Bob Cratchit"));
}

#[tokio::test]
async fn another_users_or_a_forged_handle_is_refused() {
    let app = Accounts::start().await;
    let (mut laptop, mut phone) = laptop_and_phone(&app).await;
    // Bob on two devices: his laptop's devices page shows his phone's
    // handle.
    let mut bob = app.browser(SAFARI_ON_IPHONE);
    bob.signed_in(BOB, BOB_PASSWORD).await;
    let mut bob_laptop = app.browser(FIREFOX_ON_LINUX);
    bob_laptop.signed_in(BOB, BOB_PASSWORD).await;
    let bob_handle = devices(&mut bob_laptop)
        .await
        .into_iter()
        .find(|row| !row.current)
        .and_then(|row| row.sign_out)
        .and_then(|form| form.field("session").map(str::to_owned))
        .expect("Bob's phone on Bob's devices page");

    // Alice's page gives her a sign-out form (and its token); she swaps in
    // Bob's handle, then made-up ones.
    let rows = devices(&mut laptop).await;
    let form = rows
        .iter()
        .find_map(|row| row.sign_out.clone())
        .expect("the phone's sign-out form");
    let token = form.field("csrf_token").unwrap().to_owned();
    for handle in [bob_handle.as_str(), &"0".repeat(64), "not-a-handle", ""] {
        let reply = laptop
            .post(
                "/account/devices/sign-out",
                &[("csrf_token", &token), ("session", handle)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "handle {handle:?}");
        assert!(reply.body.contains("not one of your devices"));
    }
    // Nobody was signed out.
    assert_eq!(bob.account_user().await.as_deref(), Some("Bob Cratchit"));
    assert_eq!(
        bob_laptop.account_user().await.as_deref(),
        Some("Bob Cratchit")
    );
    assert_eq!(phone.account_user().await.as_deref(), Some("Alice Liddell"));
    assert_eq!(
        laptop.account_user().await.as_deref(),
        Some("Alice Liddell")
    );

    // Signed out, the form is no use either: sent to the login page.
    let mut anonymous = app.browser(FIREFOX_ON_LINUX);
    let page = anonymous.get("/login").await;
    let token = page.form("/login").field("csrf_token").unwrap().to_owned();
    let reply = anonymous
        .post(
            "/account/devices/sign-out",
            &[("csrf_token", &token), ("session", &bob_handle)],
        )
        .await;
    reply.assert_redirect("/login");
    assert_eq!(bob.account_user().await.as_deref(), Some("Bob Cratchit"));
}

#[tokio::test]
async fn a_password_change_signs_out_the_other_devices_only() {
    let app = Accounts::start().await;
    let (mut laptop, mut phone) = laptop_and_phone(&app).await;
    let new_password = "tr0ub4dor and then some";

    // A wrong current password changes nothing.
    let wrong = laptop
        .submit_on(
            "/account/password",
            "/account/password",
            &[
                ("current_password", "not my password"),
                ("new_password", new_password),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("The current password is wrong."));
    // Nor does a new password that is too short.
    let short = laptop
        .submit_on(
            "/account/password",
            "/account/password",
            &[
                ("current_password", ALICE_PASSWORD),
                ("new_password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(phone.account_user().await.as_deref(), Some("Alice Liddell"));

    let before = laptop.cookie.clone();
    let changed = laptop
        .submit_on(
            "/account/password",
            "/account/password",
            &[
                ("current_password", ALICE_PASSWORD),
                ("new_password", new_password),
            ],
        )
        .await;
    changed.assert_redirect("/account");
    assert_ne!(laptop.cookie, before, "the session moved to a fresh ID");
    let account = laptop.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert_eq!(
        account.flashes(),
        ["Password changed; signed out 1 other device."]
    );

    // The phone is signed out, the laptop is not.
    assert_eq!(phone.account_user().await, None);
    assert_eq!(
        laptop.account_user().await.as_deref(),
        Some("Alice Liddell")
    );
    let rows = devices(&mut laptop).await;
    assert_eq!(rows.len(), 1, "{rows:?}");

    // The old password no longer works; the new one does.
    let old = phone.login(ALICE, ALICE_PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    phone.signed_in(ALICE, new_password).await;
    assert_eq!(phone.account_user().await.as_deref(), Some("Alice Liddell"));
}
