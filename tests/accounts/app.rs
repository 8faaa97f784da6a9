//! Starting the example binary, a browser stand-in to drive it, and just
//! enough HTML reading to find forms, their hidden fields and the rows of
//! the devices page.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) const ALICE: &str = "alice";
pub(crate) const ALICE_PASSWORD: &str = "correct horse battery staple";
pub(crate) const BOB: &str = "bob";
pub(crate) const BOB_PASSWORD: &str = "hunter2 is not a password";

pub(crate) const FIREFOX_ON_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
pub(crate) const SAFARI_ON_IPHONE: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
     (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";

/// The example binary, built next to the test binaries (checked with
/// [`check_binary`]).
pub(crate) fn binary() -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path
        .join("examples")
        .join(format!("accounts{}", std::env::consts::EXE_SUFFIX));
    check_binary(&binary);
    binary
}

/// Fails unless the binary exists and is newer than the example's source:
/// `cargo test --test accounts` alone does not build examples, and a stale
/// binary would test old code.
fn check_binary(binary: &Path) {
    let build = "build it with `cargo build --all-features --example accounts` \
                 (or run `cargo test --all-features`, which builds the examples)";
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", binary.display()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/accounts.rs");
    if let Ok(edited) = std::fs::metadata(&source).and_then(|m| m.modified()) {
        assert!(
            edited <= built,
            "{} is older than {}: {build}",
            binary.display(),
            source.display()
        );
    }
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// The running example; stopped when dropped.
pub(crate) struct Accounts {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Accounts {
    /// Starts the example on the memory store with a fixed key, and waits
    /// until it listens (its users' passwords are hashed first).
    pub(crate) async fn start() -> Self {
        let binary = binary();
        let addr = free_port();
        let child = Command::new(&binary)
            .env("ACCOUNTS_ADDR", addr.to_string())
            .env("SESSION_KEY", "5a".repeat(32))
            .env("SESSION_STORE", "memory")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the accounts example");
        let mut app = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = app.child.try_wait().expect("child status") {
                panic!("the accounts example exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the example did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        app
    }

    /// A new browser (empty cookie jar) that sends `user_agent`.
    pub(crate) fn browser(&self, user_agent: &str) -> Browser {
        Browser {
            client: Client::builder(TokioExecutor::new()).build_http(),
            origin: format!("http://{}", self.addr),
            user_agent: user_agent.to_owned(),
            cookie: None,
        }
    }
}

/// A response with its body read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    /// The one `Set-Cookie` header, if any.
    pub(crate) fn set_cookie(&self) -> Option<&str> {
        let mut all = self.headers.get_all(header::SET_COOKIE).iter();
        let first = all.next()?;
        assert!(all.next().is_none(), "more than one Set-Cookie");
        Some(first.to_str().expect("an ASCII Set-Cookie"))
    }

    pub(crate) fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .map(|value| value.to_str().expect("an ASCII Location"))
    }

    /// Asserts a `303` to `location`.
    #[track_caller]
    pub(crate) fn assert_redirect(&self, location: &str) {
        assert_eq!(
            (self.status, self.location()),
            (StatusCode::SEE_OTHER, Some(location)),
            "{}",
            self.body
        );
    }

    /// The forms on the page posting to `action`.
    pub(crate) fn forms(&self, action: &str) -> Vec<HtmlForm> {
        forms(&self.body)
            .into_iter()
            .filter(|form| form.action == action)
            .collect()
    }

    /// The one form posting to `action`.
    #[track_caller]
    pub(crate) fn form(&self, action: &str) -> HtmlForm {
        let mut forms = self.forms(action);
        assert_eq!(forms.len(), 1, "one form for {action} on\n{}", self.body);
        forms.pop().unwrap()
    }

    /// The flash messages on the page.
    pub(crate) fn flashes(&self) -> Vec<String> {
        elements(&self.body, "<li class=\"flash ", "</li>")
            .map(|li| decode(&li[li.find('>').expect("a closed tag") + 1..]))
            .collect()
    }

    /// The rows of the devices page.
    pub(crate) fn devices(&self) -> Vec<DeviceRow> {
        elements(&self.body, "<tr class=\"device\">", "</tr>")
            .map(|row| {
                let label = row
                    .strip_prefix("<td>")
                    .and_then(|cell| cell.split("</td>").next())
                    .expect("a first cell");
                DeviceRow {
                    label: decode(label),
                    current: row.contains("This device"),
                    sign_out: forms(row).into_iter().next(),
                }
            })
            .collect()
    }
}

/// One row of the devices page.
#[derive(Debug)]
pub(crate) struct DeviceRow {
    /// The device's label, with " (remembered)" for a remembered session.
    pub(crate) label: String,
    /// Marked as the device that asked for the page.
    pub(crate) current: bool,
    /// Its sign-out form (none for this device).
    pub(crate) sign_out: Option<HtmlForm>,
}

/// A form on a page: where it posts, and its hidden fields.
#[derive(Debug, Clone)]
pub(crate) struct HtmlForm {
    pub(crate) action: String,
    pub(crate) hidden: Vec<(String, String)>,
}

impl HtmlForm {
    /// The value of the hidden field `name`.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.hidden
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The text between each `start` (included) and the next `end` (not
/// included), `start` stripped.
fn elements<'a>(html: &'a str, start: &'a str, end: &'a str) -> impl Iterator<Item = &'a str> {
    html.match_indices(start).map(move |(at, _)| {
        let rest = &html[at + start.len()..];
        &rest[..rest.find(end).expect("a closed element")]
    })
}

fn forms(html: &str) -> Vec<HtmlForm> {
    elements(html, "<form ", "</form>")
        .map(|form| {
            let tag = &form[..form.find('>').expect("a closed form tag")];
            let hidden = elements(form, "<input ", ">")
                .filter(|input| attribute(input, "type").as_deref() == Some("hidden"))
                .map(|input| {
                    (
                        attribute(input, "name").expect("a named input"),
                        attribute(input, "value").unwrap_or_default(),
                    )
                })
                .collect();
            HtmlForm {
                action: attribute(tag, "action").expect("a form action"),
                hidden,
            }
        })
        .collect()
}

/// The value of the double-quoted attribute `name` in the tag text `tag`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let padded = format!(" {tag}");
    let marker = format!(" {name}=\"");
    let value = &padded[padded.find(&marker)? + marker.len()..];
    Some(decode(&value[..value.find('"')?]))
}

fn decode(html: &str) -> String {
    html_escape::decode_html_entities(html).into_owned()
}

/// A browser stand-in: one cookie jar, a User-Agent, `Accept: text/html`,
/// and `Origin` and `Sec-Fetch-Site` on posts, as browsers send them.
pub(crate) struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    origin: String,
    user_agent: String,
    /// The session cookie (`name=value`) the browser holds.
    pub(crate) cookie: Option<String>,
}

impl Browser {
    /// Sends a request as a browser navigating or posting a form: HTML
    /// accepted.
    pub(crate) async fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Reply {
        let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        self.request(method, path, html, form).await
    }

    /// Sends a request as a script would (`fetch`), accepting `accept`.
    pub(crate) async fn send_accepting(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
    ) -> Reply {
        self.request(method, path, accept, None).await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        accept: &str,
        form: Option<String>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.origin))
            .header(header::USER_AGENT, &self.user_agent)
            .header(header::ACCEPT, accept);
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie.as_str());
        }
        if method == Method::POST {
            request = request
                .header(header::ORIGIN, &self.origin)
                .header("sec-fetch-site", "same-origin");
        }
        if form.is_some() {
            request = request.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .expect("a request");
        let response = self
            .client
            .request(request)
            .await
            .expect("the example answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a body").to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
        };
        if let Some(set) = reply.set_cookie() {
            let pair = set.split(';').next().expect("a cookie pair").to_owned();
            self.cookie = (!set.contains("Max-Age=0")).then_some(pair);
        }
        reply
    }

    pub(crate) async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    /// Posts exactly `fields`, urlencoded: no token unless given.
    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).expect("a form");
        self.send(Method::POST, path, Some(body)).await
    }

    /// Submits `form` with its hidden fields (the CSRF token among them)
    /// and `fields`.
    pub(crate) async fn submit(&mut self, form: &HtmlForm, fields: &[(&str, &str)]) -> Reply {
        let mut all: Vec<(&str, &str)> = form
            .hidden
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        all.extend_from_slice(fields);
        self.post(&form.action, &all).await
    }

    /// Opens `page` and submits its form posting to `action`.
    pub(crate) async fn submit_on(
        &mut self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let page = self.get(page).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.submit(&page.form(action), fields).await
    }

    /// Signs in through the login form.
    pub(crate) async fn login(&mut self, user: &str, password: &str) -> Reply {
        self.submit_on(
            "/login",
            "/login",
            &[("user", user), ("password", password)],
        )
        .await
    }

    /// Signs in, ticking "remember me".
    pub(crate) async fn login_remembered(&mut self, user: &str, password: &str) -> Reply {
        let fields = [("user", user), ("password", password), ("remember", "on")];
        self.submit_on("/login", "/login", &fields).await
    }

    /// Signs in and checks that it worked.
    pub(crate) async fn signed_in(&mut self, user: &str, password: &str) {
        self.login(user, password).await.assert_redirect("/account");
        assert!(self.cookie.is_some(), "a session cookie");
    }

    /// The name `/account` shows, or `None` when it sends the browser to
    /// the login page.
    pub(crate) async fn account_user(&mut self) -> Option<String> {
        let page = self.get("/account").await;
        if page.status == StatusCode::SEE_OTHER {
            page.assert_redirect("/login?next=%2Faccount");
            return None;
        }
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let user = elements(&page.body, "<strong id=\"user\">", "</strong>")
            .next()
            .expect("the user on the account page");
        Some(decode(user))
    }
}
