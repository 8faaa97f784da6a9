//! The demo in a real browser: headless Chromium driven through WebDriver
//! (chromedriver + fantoccini). A recording proxy in front of the demo shows
//! which requests carried the session cookie.
//!
//! Reported ignored when Chromium or chromedriver is missing, unless
//! `CLOAKROOM_REQUIRE_BACKENDS=1` (as in `.ci/run`) makes that a failure.
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::support::backend::{
    find_binary, free_port, hidden, scratch_dir, spawn_supervised, stop_supervised, unavailable,
    wait_for_port,
};
use crate::support::demo::{start_demo, Demo};
use crate::support::harness::{tests, Test};
use crate::support::proxy::TcpRecorder;

/// This module's tests, for `support::harness::main`.
pub(crate) fn tests() -> Vec<Test> {
    tests!(
        Some(&crate::CHROMIUM) => [
            a_real_browser_keeps_the_session_out_of_reach_of_scripts_and_other_sites,
            a_sibling_subdomain_gets_the_cookie_sent_but_the_csrf_layer_refuses_it,
            a_person_signs_in_counts_and_signs_out_another_device,
        ],
    )
}

const KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// Chromium and a chromedriver of its own, stopped when dropped.
struct Chrome {
    chromium: PathBuf,
    driver_url: String,
    driver: Child,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        stop_supervised(&mut self.driver);
    }
}

/// Chromium and chromedriver, or why they are not to be had.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    hidden("chromium")?;
    let dirs = [
        PathBuf::from("/usr/bin"),
        PathBuf::from("/usr/lib/chromium"),
    ];
    let chromium = find_binary("chromium", &dirs)
        .or_else(|| find_binary("chromium-browser", &dirs))
        .ok_or("chromium is not installed (apt-get install chromium)")?;
    let driver = find_binary("chromedriver", &dirs)
        .ok_or("chromedriver is not installed (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// Why there is no browser to drive, if so. Starts nothing.
pub(crate) fn missing() -> Option<String> {
    binaries().err()
}

fn chrome() -> Option<Chrome> {
    let (chromium, driver) = match binaries() {
        Ok(found) => found,
        Err(why) => return unavailable("Chromium", &why),
    };
    let addr = free_port();
    let log = scratch_dir("chromedriver").join("chromedriver.log");
    let child = spawn_supervised(&driver, &[format!("--port={}", addr.port())], &log, None);
    wait_for_port(addr, Duration::from_secs(30), &log);
    Some(Chrome {
        chromium,
        driver_url: format!("http://{addr}"),
        driver: child,
    })
}

impl Chrome {
    /// A new browser with its own empty profile (its own cookie jar).
    async fn browser(&self, extra_args: &[String]) -> Client {
        let profile = scratch_dir("chromium-profile");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_args.iter().cloned());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.display().to_string(),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.driver_url)
            .await
            .expect("a WebDriver session")
    }
}

/// An attacker's page: a form that posts to `target` as soon as it loads.
async fn attacker(target: String) -> SocketAddr {
    let page = format!(
        r#"<!doctype html><html><body>
<form id="attack" method="post" action="{target}">
<input type="hidden" name="csrf_token" value="guessed">
</form>
<script>document.getElementById('attack').submit();</script>
</body></html>"#
    );
    let app = Router::new().route("/", get(move || async move { Html(page) }));
    let port = free_port().port();
    // `localhost` may resolve to either loopback address.
    let v4 = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(axum::serve(v4, app.clone()).into_future());
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        tokio::spawn(axum::serve(v6, app).into_future());
    }
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The demo behind a recording proxy.
async fn recorded_demo() -> (Demo, TcpRecorder) {
    let demo = start_demo(&[("SESSION_KEY", KEY)]).await;
    let recorder = TcpRecorder::start(demo.addr).await;
    (demo, recorder)
}

async fn log_in(browser: &Client, base: &str, user: &str) {
    browser.goto(&format!("{base}/")).await.unwrap();
    let name = browser
        .find(Locator::Css("input[name=user]"))
        .await
        .unwrap();
    name.send_keys(user).await.unwrap();
    browser
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = browser
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .unwrap();
    assert_eq!(shown.text().await.unwrap(), user);
}

async fn logged_in_as(browser: &Client, base: &str) -> Option<String> {
    browser.goto(&format!("{base}/")).await.unwrap();
    match browser.find(Locator::Id("user")).await {
        Ok(element) => Some(element.text().await.unwrap()),
        Err(_) => {
            browser
                .find(Locator::Css("input[name=user]"))
                .await
                .expect("the login form");
            None
        }
    }
}

/// One HTTP/1.1 request as recorded: method, path and headers.
#[derive(Debug)]
struct RecordedRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl RecordedRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a recorded HTTP/1.1 byte stream (several connections' worth,
/// keep-alive included) into requests, skipping bodies by
/// `Content-Length`.
fn http_requests(mut bytes: &[u8]) -> Vec<RecordedRequest> {
    let mut requests = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = request.parse(bytes) else {
            break;
        };
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let recorded = RecordedRequest {
            method: request.method.unwrap_or_default().to_owned(),
            path: request.path.unwrap_or_default().to_owned(),
            headers,
        };
        let body_len: usize = recorded
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        bytes = &bytes[(head_len + body_len).min(bytes.len())..];
        requests.push(recorded);
    }
    requests
}

fn posts_to(requests: &[RecordedRequest], path: &str) -> Vec<bool> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| {
            r.header("cookie")
                .is_some_and(|c| c.split(';').any(|p| p.trim().starts_with("__Host-id=")))
        })
        .collect()
}

/// The script a page of the app runs to bump the counter the legitimate
/// way: token from `/api/csrf`, sent as `x-csrf-token`.
const COUNTER_SCRIPT: &str = r#"
const done = arguments[arguments.length - 1];
fetch('/api/csrf').then(r => r.json()).then(t =>
  fetch('/api/counter', {method: 'POST', headers: {'x-csrf-token': t.token}})
).then(r => r.json()).then(j => done(j.counter)).catch(e => done('error: ' + e));
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_keeps_the_session_out_of_reach_of_scripts_and_other_sites() {
    let Some(chrome) = chrome() else {
        return;
    };
    let (_demo, recorder) = recorded_demo().await;
    let base = format!("http://127.0.0.1:{}", recorder.addr.port());
    let first = chrome.browser(&[]).await;

    // Log in through the form.
    log_in(&first, &base, "alice").await;

    // The session cookie exists, but scripts cannot see it.
    let cookies = first.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "__Host-id")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    let visible = first
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert!(
        !visible.as_str().unwrap_or_default().contains("__Host-id="),
        "document.cookie shows the session: {visible}"
    );

    // A reload stays logged in.
    first.refresh().await.unwrap();
    assert_eq!(logged_in_as(&first, &base).await.as_deref(), Some("alice"));

    // A second browser logs in as the same user and logs out everywhere.
    let second = chrome.browser(&[]).await;
    log_in(&second, &base, "alice").await;
    second
        .find(Locator::Css("form[action='/logout-everywhere'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    second
        .wait()
        .for_element(Locator::Css("input[name=user]"))
        .await
        .unwrap();
    assert_eq!(
        logged_in_as(&first, &base).await,
        None,
        "the first browser is logged out"
    );
    second.close().await.unwrap();

    // A page on another site (localhost is not the same site as 127.0.0.1)
    // posts a form to the app: the browser leaves the session cookie off.
    log_in(&first, &base, "alice").await;
    let evil = attacker(format!("{base}/api/counter")).await;
    recorder.reset();
    first
        .goto(&format!("http://localhost:{}/", evil.port()))
        .await
        .unwrap();
    let refused = first
        .wait()
        .for_element(Locator::Css("body"))
        .await
        .unwrap();
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("CSRF check failed"),
        "the attack was refused: {text}"
    );
    let attacks = posts_to(&http_requests(&recorder.sent()), "/api/counter");
    assert_eq!(
        attacks,
        [false],
        "one cross-site post, without the session cookie"
    );

    // The counter never moved: the first legitimate increment gives 1.
    first.goto(&format!("{base}/")).await.unwrap();
    let counter = first.execute_async(COUNTER_SCRIPT, vec![]).await.unwrap();
    assert_eq!(counter, json!(1));
    first.close().await.unwrap();
}

/// `SameSite` alone does not stop a sibling subdomain: it is the same site,
/// so the cookie rides along. The CSRF layer is what stops it.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_subdomain_gets_the_cookie_sent_but_the_csrf_layer_refuses_it() {
    let Some(chrome) = chrome() else {
        return;
    };
    let (_demo, recorder) = recorded_demo().await;
    let evil_port = free_port().port();
    // Two hosts of one site. Browsers treat `*.localhost` over plain HTTP
    // as a secure context for cookies, so the `Secure`, `__Host-` session
    // cookie is stored as it would be over HTTPS on a real domain.
    let app = format!("http://app.example.localhost:{}", recorder.addr.port());
    let evil = format!("http://evil.example.localhost:{evil_port}");
    let browser = chrome
        .browser(&["--host-resolver-rules=MAP *.example.localhost 127.0.0.1".to_owned()])
        .await;
    log_in(&browser, &app, "alice").await;

    let page = format!(
        r#"<!doctype html><html><body>
<form id="attack" method="post" action="{app}/api/counter"></form>
<script>document.getElementById('attack').submit();</script>
</body></html>"#
    );
    let attacker = Router::new().route("/", get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", evil_port))
        .await
        .unwrap();
    tokio::spawn(axum::serve(listener, attacker).into_future());

    recorder.reset();
    browser.goto(&format!("{evil}/")).await.unwrap();
    let text = browser
        .wait()
        .for_element(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("CSRF check failed"),
        "the attack was refused: {text}"
    );
    let attacks = posts_to(&http_requests(&recorder.sent()), "/api/counter");
    assert_eq!(attacks, [true], "same site: the session cookie rode along");

    browser.goto(&format!("{app}/")).await.unwrap();
    let counter = browser.execute_async(COUNTER_SCRIPT, vec![]).await.unwrap();
    assert_eq!(counter, json!(1), "the attacker's post changed nothing");
    browser.close().await.unwrap();
}

/// The showcase pages as a person uses them: sent to log in from
/// `/account` and back, remembered, a message once, the counter counting on
/// the page, and one device signing out another from the devices list.
///
/// With `CLOAKROOM_SCREENSHOT=PATH` set, the devices page is saved there as
/// a PNG (the README's screenshot is made this way).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_counts_and_signs_out_another_device() {
    let Some(chrome) = chrome() else {
        return;
    };
    let demo = start_demo(&[("SESSION_KEY", KEY)]).await;
    let base = format!("http://127.0.0.1:{}", demo.addr.port());
    let laptop = chrome.browser(&["--window-size=900,1000".to_owned()]).await;

    // The account page sends a visitor to log in, and back after.
    laptop.goto(&format!("{base}/account")).await.unwrap();
    let url = laptop.current_url().await.unwrap();
    assert_eq!(url.path(), "/login");
    assert_eq!(url.query(), Some("next=%2Faccount"));
    laptop
        .find(Locator::Css("input[name=user]"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    laptop
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("hunter2")
        .await
        .unwrap();
    laptop
        .find(Locator::Css("input[name=remember]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    laptop
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    laptop
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .unwrap();
    assert_eq!(laptop.current_url().await.unwrap().path(), "/account");
    let flashes = laptop.find_all(Locator::Css(".flash")).await.unwrap();
    assert_eq!(flashes.len(), 1);
    assert_eq!(flashes[0].text().await.unwrap(), "Signed in as alice.");
    let cookie = laptop.get_named_cookie("__Host-id").await.unwrap();
    assert!(
        cookie.expires().is_some(),
        "remembered: a persistent cookie"
    );
    laptop.refresh().await.unwrap();
    laptop
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .unwrap();
    assert!(
        laptop
            .find_all(Locator::Css(".flash"))
            .await
            .unwrap()
            .is_empty(),
        "the message is shown once"
    );

    // The counter counts on the page, and the count is the session's.
    for expected in ["1", "2"] {
        laptop
            .find(Locator::Id("count"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let counter = laptop.find(Locator::Id("counter")).await.unwrap();
        let mut shown = String::new();
        for _ in 0..100 {
            shown = counter.text().await.unwrap();
            if shown == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(shown, expected);
    }
    laptop.refresh().await.unwrap();
    let counter = laptop.find(Locator::Id("counter")).await.unwrap();
    assert_eq!(counter.text().await.unwrap(), "2");

    // A phone logs in as the same user; the laptop lists it by name.
    let phone = chrome
        .browser(&[format!(
            "--user-agent={}",
            crate::support::demo::SAFARI_ON_IPHONE
        )])
        .await;
    log_in(&phone, &base, "alice").await;
    laptop.goto(&format!("{base}/account")).await.unwrap();
    let devices = laptop
        .find_all(Locator::Css("ul.devices li"))
        .await
        .unwrap();
    assert_eq!(devices.len(), 2);
    // This browser first (this very request is the latest activity), then
    // the phone.
    assert!(devices[0].text().await.unwrap().contains("this browser"));
    let phone_row = devices[1].text().await.unwrap();
    assert!(phone_row.contains("Safari on iPhone"), "{phone_row}");
    assert!(phone_row.contains("just now"), "{phone_row}");
    if let Ok(path) = std::env::var("CLOAKROOM_SCREENSHOT") {
        std::fs::write(&path, laptop.screenshot().await.unwrap()).unwrap();
    }

    // Its sign-out button ends the phone's session, with a message.
    devices[1]
        .find(Locator::Css("button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = laptop
        .wait()
        .for_element(Locator::Css(".flash"))
        .await
        .unwrap();
    assert_eq!(flash.text().await.unwrap(), "Signed out Safari on iPhone.");
    assert_eq!(
        laptop
            .find_all(Locator::Css("ul.devices li"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(logged_in_as(&phone, &base).await, None, "the phone is out");
    assert_eq!(logged_in_as(&laptop, &base).await.as_deref(), Some("alice"));

    // Signing out leaves a message on the next page.
    laptop
        .find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flash = laptop
        .wait()
        .for_element(Locator::Css(".flash"))
        .await
        .unwrap();
    assert_eq!(flash.text().await.unwrap(), "You have signed out.");
    assert_eq!(logged_in_as(&laptop, &base).await, None);
    phone.close().await.unwrap();
    laptop.close().await.unwrap();
}
