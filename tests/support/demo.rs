//! The demo binary as a black box: start it, and drive it over real HTTP
//! like a browser (cookie jar, form fields with their CSRF tokens) or a
//! script (`x-csrf-token` from `GET /api/csrf`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, LOCATION, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::backend::free_port;
use super::reply::{read, Reply};

/// The demo binary, built by `cargo test` next to the test binaries.
pub(crate) fn demo_binary() -> PathBuf {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX))
}

pub(crate) struct Demo {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_demo(envs: &[(&str, &str)]) -> Demo {
    let binary = demo_binary();
    assert!(
        binary.exists(),
        "{} missing: run `cargo test` (it builds examples)",
        binary.display()
    );
    let addr = free_port();
    let mut command = Command::new(binary);
    command
        .env("DEMO_ADDR", addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    let demo = Demo {
        child: command.spawn().expect("spawn demo"),
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "demo did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo
}

/// A browser stand-in with a cookie jar: the session cookie, and any
/// other cookie the demo sets (its logout message).
pub(crate) struct Browser {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    /// The session cookie, as `name=value`.
    pub(crate) cookie: Option<String>,
    others: Vec<(String, String)>,
    user_agent: Option<&'static str>,
}

/// User-Agent headers of two real browsers.
pub(crate) const FIREFOX_ON_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
pub(crate) const SAFARI_ON_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
     AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

impl Browser {
    pub(crate) fn new(demo: &Demo) -> Self {
        Self {
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", demo.addr),
            cookie: None,
            others: Vec::new(),
            user_agent: None,
        }
    }

    /// A browser that sends `user_agent` with every request.
    pub(crate) fn with_user_agent(demo: &Demo, user_agent: &'static str) -> Self {
        Self {
            user_agent: Some(user_agent),
            ..Self::new(demo)
        }
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Reply {
        match content_type {
            Some(ct) => {
                self.send_with(method, path, &[("content-type", ct)], body)
                    .await
            }
            None => self.send_with(method, path, &[], body).await,
        }
    }

    /// Sends a request with the jar's cookie and these headers, and keeps
    /// the session cookie the response sets.
    pub(crate) async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        self.send_bytes(method, path, headers, Bytes::from(body.to_owned()))
            .await
    }

    /// [`Browser::send_with`] with a body of any bytes.
    pub(crate) async fn send_bytes(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let jar: Vec<String> = self
            .cookie
            .iter()
            .cloned()
            .chain(
                self.others
                    .iter()
                    .map(|(name, value)| format!("{name}={value}")),
            )
            .collect();
        if !jar.is_empty() {
            request = request.header(COOKIE, jar.join("; "));
        }
        if let Some(agent) = self.user_agent {
            request = request.header(USER_AGENT, agent);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).unwrap();
        let response = self.client.request(request).await.expect("demo answers");
        let reply = read(response).await;
        for set in reply.set_cookies() {
            let pair = set.split(';').next().unwrap().to_owned();
            let (name, value) = pair.split_once('=').expect("name=value");
            let removed = set.contains("Max-Age=0");
            if name.starts_with("__Host-") {
                self.cookie = (!removed).then_some(pair.clone());
            } else {
                self.others.retain(|(other, _)| other != name);
                if !removed {
                    self.others.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        reply
    }

    pub(crate) async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path, None, "").await
    }

    /// The token scripts get from `GET /api/csrf`.
    pub(crate) async fn csrf(&mut self) -> String {
        let reply = self.get("/api/csrf").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.set_cookie().is_none(),
            "asking for a token sets no cookie"
        );
        reply.json::<Value>()["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// An `/api` write as a script does it: token in `x-csrf-token`.
    pub(crate) async fn api(&mut self, method: Method, path: &str, body: &str) -> Reply {
        let token = self.csrf().await;
        self.send_with(method, path, &[("x-csrf-token", &token)], body)
            .await
    }

    /// A form post as the browser does it: the hidden `csrf_token` field of
    /// the form on `GET /` (when the page has that form), plus the fields
    /// given.
    pub(crate) async fn submit(&mut self, action: &str, fields: &[(&str, &str)]) -> Reply {
        self.submit_on("/", action, fields).await
    }

    /// [`Browser::submit`] from the form on the page at `page`.
    pub(crate) async fn submit_on(
        &mut self,
        page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let page = self.get(page).await;
        // A logged-in page has no login form: take a script's token then.
        let token = if page.body.contains(&format!("action=\"{action}\"")) {
            hidden_token(&page.body, action)
        } else {
            self.csrf().await
        };
        let mut form: Vec<(&str, &str)> = vec![("csrf_token", &token)];
        form.extend_from_slice(fields);
        let body = serde_urlencoded::to_string(&form).unwrap();
        self.send(
            Method::POST,
            action,
            Some("application/x-www-form-urlencoded"),
            &body,
        )
        .await
    }

    /// A `multipart/form-data` post as a browser sends a form with a file
    /// input: the `(name, value)` fields, then `file` as `upload.bin`, in
    /// that order.
    pub(crate) async fn post_multipart(
        &mut self,
        action: &str,
        fields: &[(&str, &str)],
        file: &[u8],
    ) -> Reply {
        let boundary = "----cloakroom-test-7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload.bin\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        self.send_bytes(
            Method::POST,
            action,
            &[("content-type", &content_type)],
            Bytes::from(body),
        )
        .await
    }

    pub(crate) async fn post(&mut self, path: &str) -> Reply {
        self.submit(path, &[]).await
    }

    pub(crate) async fn login(&mut self, user: &str) -> Reply {
        self.submit("/login", &[("user", user)]).await
    }
}

/// The value of the hidden `csrf_token` input of the form posting to
/// `action` on `page`.
fn hidden_token(page: &str, action: &str) -> String {
    let form_start = page
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form for {action} on the page:\n{page}"));
    let form = &page[form_start..];
    let form = &form[..form.find("</form>").expect("a closed form")];
    let marker = "name=\"csrf_token\" value=\"";
    let start = form.find(marker).expect("every form carries csrf_token") + marker.len();
    form[start..start + form[start..].find('"').unwrap()].to_owned()
}

/// Walks the whole demo contract (the demo table in docs/demo.md, CSRF included)
/// against a running demo. `tag` makes user names unique, for
/// stores that outlive one demo process.
pub(crate) async fn check_contract(demo: &Demo, tag: &str) {
    let mut alice = Browser::new(demo);

    // Anonymous: a login form, no cookie.
    let page = alice.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header(CONTENT_TYPE).unwrap().starts_with("text/html"));
    assert!(page.body.contains("action=\"/login\""));
    assert!(
        page.set_cookie().is_none(),
        "an anonymous visit sets no cookie"
    );
    assert_eq!(alice.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        alice.get("/api/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );

    // The counter works anonymously and creates a session.
    let refused = alice.send(Method::POST, "/api/counter", None, "").await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "writes need the CSRF token"
    );
    assert!(refused.set_cookie().is_none());
    let cross_site = alice
        .send_with(
            Method::POST,
            "/api/counter",
            &[("sec-fetch-site", "cross-site")],
            "",
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(
        alice
            .api(Method::POST, "/api/counter", "")
            .await
            .json::<Value>()["counter"],
        1
    );
    let anonymous_cookie = alice.cookie.clone().expect("counter created a session");
    assert_eq!(
        alice
            .api(Method::POST, "/api/counter", "")
            .await
            .json::<Value>()["counter"],
        2
    );

    // Notes.
    let put = alice
        .api(Method::PUT, "/api/notes/greeting", "hello, world")
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let note = alice.get("/api/notes/greeting").await;
    assert_eq!(
        (note.status, note.body.as_str()),
        (StatusCode::OK, "hello, world")
    );
    assert_eq!(
        alice.get("/api/notes/missing").await.status,
        StatusCode::NOT_FOUND
    );
    // Text the store cannot hold is the client's error on every store, and
    // changes nothing.
    let nul = alice
        .api(Method::PUT, "/api/notes/greeting", "secret\u{0}card")
        .await;
    assert_eq!(nul.status, StatusCode::BAD_REQUEST);
    assert_eq!(alice.get("/api/notes/greeting").await.body, "hello, world");

    // Login validation.
    for bad in ["", &"x".repeat(65), "a\u{0}b"] {
        assert_eq!(
            alice.login(bad).await.status,
            StatusCode::BAD_REQUEST,
            "name {bad:?}"
        );
    }
    let no_field = alice.submit("/login", &[("name", "x")]).await;
    assert_eq!(no_field.status, StatusCode::BAD_REQUEST);

    // Login: 303 to /, fresh ID.
    let name = format!("Ålice <script>{tag}");
    let name = name.as_str();
    let login = alice.login(name).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.header(LOCATION), Some("/"));
    let cookie = session_set_cookie(&login).expect("login sets a cookie");
    assert!(cookie.starts_with("__Host-"), "{cookie}");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert_ne!(alice.cookie.as_deref(), Some(anonymous_cookie.as_str()));
    let me: Value = alice.get("/api/me").await.json();
    assert_eq!(me, serde_json::json!({"user": name, "sessions": 1}));
    assert_eq!(
        alice.login(&"é".repeat(64)).await.status,
        StatusCode::SEE_OTHER,
        "64 chars is fine"
    );
    alice.login(name).await;

    let page = alice.get("/").await;
    assert!(
        page.body.contains(&format!("Ålice &lt;script&gt;{tag}")),
        "the name is escaped"
    );
    assert!(page.body.contains("action=\"/logout\""));
    assert!(page.body.contains("action=\"/logout-everywhere\""));

    // A second device of the same user.
    let mut phone = Browser::new(demo);
    phone.login(name).await;
    let listed: Value = phone.get("/api/sessions").await.json();
    let listed = listed.as_array().expect("a JSON array");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1);
    for s in listed {
        for field in ["created", "last_seen"] {
            let text = s[field].as_str().unwrap();
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{field} {text:?} is not RFC 3339: {e}"));
        }
    }
    assert_eq!(alice.get("/api/me").await.json::<Value>()["sessions"], 2);

    // Logout everywhere from the phone logs out the laptop too.
    let everywhere = phone.post("/logout-everywhere").await;
    assert_eq!(everywhere.status, StatusCode::SEE_OTHER);
    assert_eq!(everywhere.header(LOCATION), Some("/"));
    assert_eq!(alice.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(phone.get("/api/me").await.status, StatusCode::UNAUTHORIZED);

    // Logout expires the cookie; the old cookie is dead.
    alice.login(&format!("bob{tag}")).await;
    let old = alice.cookie.clone().unwrap();
    let logout = alice.post("/logout").await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(logout.header(LOCATION), Some("/"));
    assert!(session_set_cookie(&logout).unwrap().contains("Max-Age=0"));
    let mut replay = Browser::new(demo);
    replay.cookie = Some(old);
    assert_eq!(replay.get("/api/me").await.status, StatusCode::UNAUTHORIZED);

    check_accounts_and_devices(demo, tag).await;
    check_upload(demo, tag).await;
}

/// `POST /upload`: the token in a multipart form, for an anonymous visitor
/// with a session and for a logged-in user.
async fn check_upload(demo: &Demo, tag: &str) {
    // Every byte value, CR LF and dashes included.
    let file: Vec<u8> = (0..3000_usize).map(|i| (i * 7 % 256) as u8).collect();

    // The visitor's session comes from a counter click, and the token
    // after it.
    let mut visitor = Browser::new(demo);
    let counted = visitor.api(Method::POST, "/api/counter", "").await;
    assert_eq!(counted.status, StatusCode::OK);
    assert!(visitor.cookie.is_some(), "the counter created a session");
    let visitors = visitor.csrf().await;
    let reply = visitor
        .post_multipart("/upload", &[("csrf_token", &visitors)], &file)
        .await;
    assert_eq!(
        (reply.status, reply.json::<Value>()),
        (StatusCode::OK, serde_json::json!({"bytes": 3000}))
    );

    let mut user = Browser::new(demo);
    user.login(&format!("uploader{tag}")).await;
    let token = user.csrf().await;
    let reply = user
        .post_multipart("/upload", &[("csrf_token", &token)], &file)
        .await;
    assert_eq!(
        (reply.status, reply.json::<Value>()),
        (StatusCode::OK, serde_json::json!({"bytes": 3000}))
    );

    let forged = "A".repeat(86);
    for (name, fields) in [
        ("missing", vec![("title", "holiday")]),
        ("wrong", vec![("csrf_token", forged.as_str())]),
        ("another session's", vec![("csrf_token", visitors.as_str())]),
    ] {
        let reply = user.post_multipart("/upload", &fields, &file).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{name} token: {}",
            reply.body
        );
    }
}

/// The `Set-Cookie` of the session cookie, among the response's cookies.
pub(crate) fn session_set_cookie(reply: &Reply) -> Option<String> {
    let mut session = reply
        .set_cookies()
        .into_iter()
        .filter(|set| set.starts_with("__Host-"));
    let found = session.next();
    assert!(session.next().is_none(), "one session cookie at most");
    found
}

/// How many flash messages the page shows.
fn flashes(page: &Reply) -> usize {
    page.body.matches("class=\"flash\"").count()
}

/// The demo contract, part 2: the login page with `next` and `remember`,
/// `/account` behind login, devices with handles and labels, ending one by
/// its handle, and flash messages.
async fn check_accounts_and_devices(demo: &Demo, tag: &str) {
    let carol = format!("carol{tag}");
    let dave = format!("dave{tag}");

    // The login page carries a safe `next` and drops any other.
    let mut laptop = Browser::with_user_agent(demo, FIREFOX_ON_LINUX);
    let form = laptop.get("/login?next=%2Faccount").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.header(CONTENT_TYPE).unwrap().starts_with("text/html"));
    for field in [
        "name=\"user\"",
        "type=\"password\" name=\"password\"",
        "type=\"checkbox\" name=\"remember\"",
        "name=\"next\" value=\"/account\"",
    ] {
        assert!(form.body.contains(field), "{field} on\n{}", form.body);
    }
    assert!(form.set_cookie().is_none(), "the login page sets no cookie");
    for evil in ["%2F%2Fevil.example", "https%3A%2F%2Fevil.example%2F"] {
        let page = laptop.get(&format!("/login?next={evil}")).await;
        assert!(
            page.body.contains("name=\"next\" value=\"\""),
            "{evil}: dropped"
        );
        assert!(!page.body.contains("evil.example"), "{evil}");
    }

    // `/account` needs a login: browsers are sent to log in, APIs get 401.
    let anonymous = laptop.get("/account").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.header(LOCATION), Some("/login?next=%2Faccount"));
    let api = laptop
        .send_with(
            Method::GET,
            "/account",
            &[("accept", "application/json")],
            "",
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // Logging in from there, remembered: back to `/account`, a persistent
    // cookie, and one message on the next page only.
    let login = laptop
        .submit_on(
            "/login?next=%2Faccount",
            "/login",
            &[
                ("user", &carol),
                ("password", "anything"),
                ("remember", "on"),
                ("next", "/account"),
            ],
        )
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.header(LOCATION), Some("/account"));
    let cookie = session_set_cookie(&login).unwrap();
    assert!(cookie.contains("Max-Age="), "remembered: {cookie}");
    let account = laptop.get("/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(account.body.contains(&format!("id=\"user\">{carol}<")));
    assert_eq!(flashes(&account), 1, "{}", account.body);
    assert!(account.body.contains("Signed in as"));
    assert_eq!(flashes(&laptop.get("/account").await), 0, "shown once");

    // Without `remember`, a cookie for this browser session only; an
    // unsafe `next` is ignored.
    let mut phone = Browser::with_user_agent(demo, SAFARI_ON_IPHONE);
    for (next, to) in [
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        ("/api/me", "/api/me"),
    ] {
        let login = phone
            .submit("/login", &[("user", &dave), ("next", next)])
            .await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(login.header(LOCATION), Some(to), "{next}");
        let cookie = session_set_cookie(&login).unwrap();
        assert!(!cookie.contains("Max-Age"), "not remembered: {cookie}");
        assert_eq!(flashes(&phone.get("/").await), 1, "{next}");
    }
    assert_eq!(phone.login(&carol).await.status, StatusCode::SEE_OTHER);

    // Each session lists a handle and a label.
    let listed: Value = laptop.get("/api/sessions").await.json();
    let listed = listed.as_array().expect("a JSON array").clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let entry = |current: bool| {
        listed
            .iter()
            .find(|s| s["current"] == current)
            .expect("one current, one other")
            .clone()
    };
    let (mine, theirs) = (entry(true), entry(false));
    assert_eq!(mine["label"], "Firefox on Linux");
    assert_eq!(theirs["label"], "Safari on iPhone");
    let handle = theirs["handle"].as_str().expect("a handle").to_owned();
    assert_ne!(handle, mine["handle"].as_str().unwrap());
    let page = laptop.get("/").await;
    assert!(page.body.contains("Safari on iPhone"), "{}", page.body);
    assert!(page.body.contains(&format!("/sessions/{handle}/sign-out")));

    // A handle is no cookie.
    let mut forger = Browser::new(demo);
    forger.cookie = Some(format!("__Host-id={handle}"));
    assert_eq!(forger.get("/api/me").await.status, StatusCode::UNAUTHORIZED);

    // Someone else's handle, an unknown one or junk: 404, nothing ended.
    let mut erin = Browser::new(demo);
    erin.login(&format!("erin{tag}")).await;
    let erins: Value = erin.get("/api/sessions").await.json();
    let erins = erins[0]["handle"].as_str().unwrap().to_owned();
    for other in [erins.as_str(), &"0".repeat(64), "junk"] {
        let reply = laptop
            .api(Method::DELETE, &format!("/api/sessions/{other}"), "")
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{other}");
    }
    assert_eq!(erin.get("/api/me").await.status, StatusCode::OK);
    let mut stranger = Browser::new(demo);
    let reply = stranger
        .api(Method::DELETE, &format!("/api/sessions/{handle}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(phone.get("/api/me").await.status, StatusCode::OK);

    // The laptop signs the phone out.
    let ended = laptop
        .api(Method::DELETE, &format!("/api/sessions/{handle}"), "")
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(phone.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(laptop.get("/api/me").await.status, StatusCode::OK);
    let page = laptop.get("/").await;
    assert_eq!(flashes(&page), 1, "{}", page.body);
    assert!(page.body.contains("Signed out Safari on iPhone."));
    assert_eq!(flashes(&laptop.get("/").await), 0, "shown once");
    let again = laptop
        .api(Method::DELETE, &format!("/api/sessions/{handle}"), "")
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "already ended");

    // The page's sign-out button does the same.
    phone.login(&carol).await;
    let listed: Value = laptop.get("/api/sessions").await.json();
    let other = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .expect("the phone again")["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let button = format!("/sessions/{other}/sign-out");
    let reply = laptop
        .submit_on("/account", &button, &[("next", "/account")])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header(LOCATION), Some("/account"));
    assert_eq!(phone.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(flashes(&laptop.get("/account").await), 1);

    // Logging out leaves a message for the next page, and only that one.
    let logout = laptop.post("/logout").await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(logout.header(LOCATION), Some("/"));
    assert!(session_set_cookie(&logout).unwrap().contains("Max-Age=0"));
    assert!(laptop.cookie.is_none());
    let page = laptop.get("/").await;
    assert_eq!(flashes(&page), 1, "{}", page.body);
    assert!(page.body.contains("You have signed out."));
    assert_eq!(flashes(&laptop.get("/").await), 0, "shown once");
    assert_eq!(laptop.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
}

/// An open `GET /api/stream` of the demo: its body, read event by event.
pub(crate) struct DemoStream {
    body: hyper::body::Incoming,
    buffer: String,
}

/// When a stream check gives up waiting: a hang guard, not a measure (the
/// contract's 1 s is measured by the load bench).
const STREAM_WITHIN: Duration = Duration::from_secs(10);

impl DemoStream {
    /// The next event: its `event:` name (`message` when it has none) and
    /// its data; `None` once the stream has closed.
    pub(crate) async fn next_event(&mut self) -> Option<(String, String)> {
        use http_body_util::BodyExt as _;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                return Some((name, data));
            }
            let frame = tokio::time::timeout(STREAM_WITHIN, self.body.frame())
                .await
                .expect("the stream says something in time")?
                .expect("the stream's body");
            if let Some(data) = frame.data_ref() {
                self.buffer
                    .push_str(std::str::from_utf8(data).expect("utf-8 events"));
            }
        }
    }

    /// Waits for the `end` event and then the close; returns the end's
    /// data.
    pub(crate) async fn end(mut self) -> String {
        loop {
            match self.next_event().await {
                Some((name, data)) if name == "end" => {
                    assert!(
                        self.next_event().await.is_none(),
                        "the stream closes after its end event"
                    );
                    return data;
                }
                Some(_) => {}
                None => panic!("the stream closed without an end event"),
            }
        }
    }
}

impl Browser {
    /// Opens `GET /api/stream` with this browser's cookie and checks the
    /// first event arrives.
    pub(crate) async fn open_stream(&self) -> DemoStream {
        let mut request = Request::get(format!("{}/api/stream", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = self.client.request(request).await.expect("demo answers");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "a logged-in stream opens"
        );
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/event-stream",
            "an event stream"
        );
        let mut stream = DemoStream {
            body: response.into_body(),
            buffer: String::new(),
        };
        let (name, _) = stream.next_event().await.expect("a first event");
        assert_eq!(name, "message", "ticks while the session lives");
        stream
    }

    /// The same browser's cookie, sent to another demo process.
    pub(crate) fn on(&self, demo: &Demo) -> Browser {
        Browser {
            cookie: self.cookie.clone(),
            ..Browser::new(demo)
        }
    }
}

/// Part 3's `GET /api/stream`: a stream held on `b` ends when its session
/// ends through `a` (the same process, or another on the same store) by
/// each means the contract names. Both demos need
/// `DEMO_ADMIN_TOKEN=let-me-in`. `tag` makes user names unique.
pub(crate) async fn check_streams(a: &Demo, b: &Demo, tag: &str) {
    // Anonymous: 401.
    let reply = Browser::new(b).get("/api/stream").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // A logout with the stream's cookie.
    let mut ann = Browser::new(a);
    ann.login(&format!("ann{tag}")).await;
    let stream = ann.on(b).open_stream().await;
    assert_eq!(ann.post("/logout").await.status, StatusCode::SEE_OTHER);
    assert_eq!(stream.end().await, "session ended");

    // Logout-everywhere from another session of the user.
    let bob = format!("bob{tag}");
    let (mut phone, mut laptop) = (Browser::new(a), Browser::new(a));
    phone.login(&bob).await;
    laptop.login(&bob).await;
    let stream = phone.on(b).open_stream().await;
    laptop.post("/logout-everywhere").await;
    assert_eq!(stream.end().await, "session ended");

    // Ending the device from another one.
    let cat = format!("cat{tag}");
    let (mut phone, mut laptop) = (Browser::new(a), Browser::new(a));
    phone.login(&cat).await;
    laptop.login(&cat).await;
    let stream = phone.on(b).open_stream().await;
    let listed: Value = serde_json::from_str(&laptop.get("/api/sessions").await.body).unwrap();
    let phone_handle = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .expect("the phone's session")["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = laptop
        .api(Method::DELETE, &format!("/api/sessions/{phone_handle}"), "")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");

    // An operator's credential reset.
    let dan = format!("dan{tag}");
    let mut dans = Browser::new(a);
    let reply = dans.login(&dan).await;
    assert_eq!(
        reply.status,
        StatusCode::SEE_OTHER,
        "{dan} logs in: {}",
        reply.body
    );
    let stream = dans.on(b).open_stream().await;
    let mut operator = Browser::new(a);
    let reply = operator
        .send_with(
            Method::POST,
            &format!("/api/admin/users/{dan}/credential"),
            &[("x-admin-token", "let-me-in")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(stream.end().await, "session ended");
    assert_eq!(dans.get("/api/me").await.status, StatusCode::UNAUTHORIZED);

    // A session that is not ended keeps its stream: it ticks on.
    let mut eve = Browser::new(a);
    eve.login(&format!("eve{tag}")).await;
    let mut stream = eve.on(b).open_stream().await;
    let mut other = Browser::new(a);
    other.login(&format!("fay{tag}")).await;
    other.post("/logout-everywhere").await;
    for _ in 0..2 {
        let (name, _) = stream.next_event().await.expect("still open");
        assert_eq!(name, "message", "still ticking");
    }
}
