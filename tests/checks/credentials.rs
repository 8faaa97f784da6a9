//! Sessions bound to the credential their login saw, and re-authentication
//! for sensitive actions: a changed password, an operator's reset or a
//! deleted account ends the sessions in the store, and a sensitive route
//! wants a recent password.

use std::time::Duration;

use axum::http::{header, StatusCode};
use cloakroom::store::SessionStore;

use crate::support::app::{delete_account, set_password, TestApp};
use crate::support::client::Client;

/// A user of the credential table, with a name of this test's own.
fn new_user(password: &str) -> String {
    let user = format!("cred-{}", rand_suffix());
    set_password(&user, password);
    user
}

fn rand_suffix() -> String {
    cloakroom::id::SessionId::generate()
        .expect("randomness")
        .store_key()
        .short()
}

async fn password_login<S: SessionStore + Clone>(
    app: &TestApp<S>,
    user: &str,
    password: &str,
) -> Client {
    let mut client = app.client();
    let request = client.request("POST", &format!("/password-login/{user}"), password);
    let reply = client.send(request).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{user} logs in");
    client
}

/// What `/me` answers an API client: the user's name, or the status.
async fn me(client: &Client) -> Result<String, StatusCode> {
    let mut request = client.request("GET", "/me", "");
    request.headers_mut().insert(
        header::ACCEPT,
        header::HeaderValue::from_static("application/json"),
    );
    let reply = client.send_alone(request).await;
    match reply.status {
        StatusCode::OK => Ok(reply.body.split(' ').next().unwrap_or_default().to_owned()),
        status => Err(status),
    }
}

pub(crate) async fn a_password_change_keeps_this_session_and_ends_the_others_at_once<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let user = new_user("old password");
    let phone = password_login(&app, &user, "old password").await;
    let mut laptop = password_login(&app, &user, "old password").await;
    assert_eq!(app.sessions_of(&user).await, 2);

    let request = laptop.request("POST", "/password", "new password");
    let reply = laptop.send(request).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    assert_eq!(app.sessions_of(&user).await, 1, "the phone's ended at once");
    assert_eq!(me(&laptop).await, Ok(user.clone()), "this one stays");
    assert_eq!(me(&phone).await, Err(StatusCode::UNAUTHORIZED));
    // The new password works, the old one does not.
    let again = password_login(&app, &user, "new password").await;
    assert_eq!(me(&again).await, Ok(user.clone()));
}

pub(crate) async fn a_credential_changed_elsewhere_ends_each_session_at_its_next_load<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let user = new_user("hunter2");
    let phone = password_login(&app, &user, "hunter2").await;
    let laptop = password_login(&app, &user, "hunter2").await;
    assert_eq!(me(&phone).await, Ok(user.clone()));

    // An operator resets the password in the user table, touching no
    // session.
    set_password(&user, "reset by support");
    assert_eq!(me(&phone).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(
        app.sessions_of(&user).await,
        1,
        "the phone's session is ended in the store, not only refused"
    );
    assert_eq!(me(&laptop).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(app.sessions_of(&user).await, 0);
    // Setting the old password back does not revive them.
    set_password(&user, "hunter2");
    assert_eq!(me(&phone).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(me(&laptop).await, Err(StatusCode::UNAUTHORIZED));
}

pub(crate) async fn a_deleted_account_ends_its_sessions_even_when_the_name_returns<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let user = new_user("first owner");
    let old_browser = password_login(&app, &user, "first owner").await;
    delete_account(&user);
    assert_eq!(me(&old_browser).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(app.sessions_of(&user).await, 0, "ended in the store");
    // Someone else signs up under the same name: the old browser is not
    // signed in as them.
    set_password(&user, "second owner");
    assert_eq!(me(&old_browser).await, Err(StatusCode::UNAUTHORIZED));
    let new_owner = password_login(&app, &user, "second owner").await;
    assert_eq!(me(&new_owner).await, Ok(user.clone()));
}

pub(crate) async fn a_login_that_did_not_bind_its_session_is_ended_for_a_user_with_a_credential<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let user = new_user("pw");
    let mut client = app.client();
    let reply = client.post(&format!("/unbound-login/{user}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(me(&client).await, Err(StatusCode::UNAUTHORIZED));
    assert_eq!(app.sessions_of(&user).await, 0);
}

pub(crate) async fn a_sensitive_route_wants_a_password_confirmed_within_the_window<
    S: SessionStore + Clone,
>(
    store: S,
) {
    let app = TestApp::new(store);
    let user = new_user("pw");
    let mut client = password_login(&app, &user, "pw").await;
    let reply = client.get("/sensitive").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, user.as_str())
    );

    // Five minutes (the default window) later, a browser is sent to log in
    // again, with the way back.
    app.clock.advance(Duration::from_secs(300));
    let mut request = client.request("GET", "/sensitive", "");
    request.headers_mut().insert(
        header::ACCEPT,
        header::HeaderValue::from_static("text/html"),
    );
    let reply = client.send(request).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.header(header::LOCATION),
        Some("/login?next=%2Fsensitive")
    );
    assert_eq!(me(&client).await, Ok(user.clone()), "still logged in");

    // Confirming the password opens it again.
    assert_eq!(
        client.post("/confirm-password").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(client.get("/sensitive").await.status, StatusCode::OK);

    // Anonymous: as any route needing a user.
    let mut visitor = app.client();
    assert_ne!(visitor.get("/sensitive").await.status, StatusCode::OK);
}
