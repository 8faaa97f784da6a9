//! The test app behind a `CsrfLayer`, and the requests a browser or a
//! page's own script sends it: a token from `/token`, then unsafe requests
//! carrying it in the `x-csrf-token` header, a urlencoded form or a
//! `multipart/form-data` body.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cloakroom::csrf::CsrfLayer;
use cloakroom::store::SessionStore;

use super::app::{field_line, TestApp};
use super::client::Client;
use super::reply::Reply;

/// The `Host` every unsafe request names.
pub(crate) const HOST: &str = "app.example.test";

pub(crate) const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

pub(crate) const MULTIPART: (&str, &str) = ("content-type", "multipart/form-data; boundary=XyZ");

/// The test app on `store`, with a `CsrfLayer` inside the session layer:
/// `/hooks/` exempt, `https://admin.example.test` trusted, forms read up
/// to 4096 bytes.
pub(crate) fn app<S: SessionStore + Clone>(store: S) -> TestApp<S> {
    let csrf = CsrfLayer::builder()
        .exempt_prefix("/hooks/")
        .trusted_origin("https://admin.example.test")
        .max_form_bytes(4096)
        .build()
        .expect("valid CSRF configuration");
    TestApp::with_layer(store, |b| b, csrf)
}

/// A browser-like unsafe request from the app's own pages.
pub(crate) fn unsafe_post(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Body> {
    let mut request = client.request("POST", path, body);
    let h = request.headers_mut();
    h.insert(header::HOST, HOST.parse().expect("host"));
    for (name, value) in headers {
        h.insert(
            header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    request
}

/// A token from `/token`, as the app's scripts fetch it.
pub(crate) async fn token(client: &mut Client) -> String {
    let reply = client.get("/token").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// A new browser, logged in as `user` the way the app's own scripts do it:
/// a token from `/token`, then the login with it.
pub(crate) async fn logged_in<S: SessionStore + Clone>(app: &TestApp<S>, user: &str) -> Client {
    let mut client = app.client();
    let t = token(&mut client).await;
    let reply = post_with_token(&mut client, &format!("/login/{user}"), &t).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(client.cookie.is_some(), "login sets the session cookie");
    client
}

/// An unsafe request with the token in `x-csrf-token`, as the app's own
/// scripts send it.
pub(crate) async fn post_with_token(client: &mut Client, path: &str, token: &str) -> Reply {
    let request = unsafe_post(client, path, &[("x-csrf-token", token)], "");
    client.send(request).await
}

/// A `multipart/form-data` body of `(name, filename, value)` parts, framed
/// with the boundary `XyZ` as a browser frames a form.
pub(crate) fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, value) in parts {
        out.extend_from_slice(
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(filename) = filename {
            out.extend_from_slice(
                format!("; filename=\"{filename}\"\r\nContent-Type: application/octet-stream")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--XyZ--\r\n");
    out
}

/// A multipart form post to the test app's `/upload`, which reads it with
/// axum's `Multipart` and describes each field.
pub(crate) fn upload(client: &Client, body: impl Into<Body>) -> Request<Body> {
    let mut request = unsafe_post(client, "/upload", &[MULTIPART], "");
    *request.body_mut() = body.into();
    request
}

/// What `/upload` answers for these fields.
pub(crate) fn described(fields: &[(&str, &[u8])]) -> String {
    fields
        .iter()
        .map(|(name, data)| field_line(name, data))
        .collect()
}

/// A file's bytes: every byte value, CR LF and dashes included.
pub(crate) fn file_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}
