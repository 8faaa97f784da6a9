//! Where a session was logged in from: the [`Device`] a store keeps with
//! each session, [`SessionHandle`], which names one of a user's sessions on
//! a "your devices" page, and [`ClientIp`], the opt-in rule that finds a
//! request's client address behind trusted proxies.
//!
//! # A devices page
//!
//! A login records where it came from: the `User-Agent`, cut to
//! [`MAX_USER_AGENT_LEN`] bytes
//! ([`record_user_agent(false)`](crate::SessionLayerBuilder::record_user_agent)
//! turns that off), and the client address if a [`ClientIp`] rule is
//! configured. [`Session::list_sessions`](crate::Session::list_sessions)
//! returns the user's sessions, most recently active first, each a
//! [`SessionInfo`](crate::store::SessionInfo) with its creation, last
//! activity and expiry times, whether it is persistent, whether it is the
//! current one, its [`Device`] (with a [`label`](Device::label) such as
//! `"Firefox on Linux"` under the `device-labels` feature) and its
//! [`handle`](crate::store::SessionInfo::handle).
//! [`Session::count_sessions`](crate::Session::count_sessions) counts them
//! without reading them.
//!
//! A handle is opaque and cannot be used as a cookie.
//! [`Session::logout_device`](crate::Session::logout_device) signs that
//! device out, and refuses with
//! [`SessionError::UnknownSession`](crate::SessionError::UnknownSession)
//! (`404`) any handle that is not one of the user's own live sessions, so
//! a devices page needs no ownership check of its own. The store checks
//! the owner in the same step that ends the session, so a device that logs
//! in as someone else at that moment keeps its new session; a handle of a
//! device that has since regenerated, or logged in again as the same user,
//! still signs it out for the five minutes its old ID leads on.
//!
//! Take the handle as text and parse it in the handler, with `?`: a
//! malformed handle then answers `404`, like a well-formed one that is not
//! the user's ([`ParseSessionHandleError`] converts into
//! [`SessionError::UnknownSession`](crate::SessionError::UnknownSession)),
//! so a client cannot tell the two apart and the page shows one answer.
//! (`Path<SessionHandle>` works too, but axum answers a handle it cannot
//! parse itself, with a `400` of its own wording.)
//!
//! ```no_run
//! use axum::extract::Path;
//! use axum::http::StatusCode;
//! use cloakroom::{device::SessionHandle, login::LoggedIn, Session, SessionError};
//!
//! async fn sign_out_device(
//!     _: LoggedIn,
//!     session: Session,
//!     Path(handle): Path<String>,
//! ) -> Result<StatusCode, SessionError> {
//!     let handle: SessionHandle = handle.parse()?; // 404 for junk
//!     session.logout_device(&handle).await?; // 404 for anyone else's handle
//!     Ok(StatusCode::NO_CONTENT)
//! }
//! ```
//!
//! `examples/devices.rs` is a whole devices page. Outside requests,
//! [`SessionAdmin`](crate::SessionAdmin) lists, counts and ends a user's
//! sessions by user id.
//!
//! # Client addresses
//!
//! The client address is off until you say where it comes from. Behind no
//! proxy, it is the TCP peer; behind proxies, name them with
//! [`ClientIp::trust_proxies`]: `X-Forwarded-For` (or the header given to
//! [`ClientIp::forwarded_header`]) is then read from the right, skipping
//! trusted addresses, and a request from an untrusted peer is never
//! believed about its own origin.
//!
//! Where the peer address is depends on the server:
//!
//! - **axum** puts it in the request extensions as
//!   `ConnectInfo<SocketAddr>` when the app is served with
//!   `into_make_service_with_connect_info::<SocketAddr>()`:
//!   [`ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>()`](ClientIp::from_connect_info),
//!   as below. ([`ClientIp::from_socket_addr`] finds nothing there.)
//! - **hyper** servers that insert the accepted connection's `SocketAddr`
//!   themselves: [`ClientIp::from_socket_addr`].
//! - Anything else: [`ClientIp::from_peer`], with a closure that finds it.
//!
//! Both extension readers log a `client_ip_unknown` warning (target
//! `cloakroom`) the first time a request comes without the extension, so
//! that a server wired without it does not go unnoticed.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use cloakroom::{device::ClientIp, Key, MemoryStore, SessionLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client_ip = ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>()
//!     // The load balancer in front of the app: its X-Forwarded-For is believed.
//!     .trust_proxies(["10.0.0.0/8"]);
//! let layer = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::generate()?)
//!     .client_ip(client_ip)
//!     .build()?;
//! let app = Router::new().route("/", get(|| async { "hi" })).layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The connection's address goes into each request as `ConnectInfo`.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{HeaderName, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Extensions, HeaderMap, HeaderValue, Method, Uri};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
pub use crate::id::store_key::{ParseSessionHandleError, SessionHandle};

/// The longest User-Agent kept, in bytes: enough for every real browser,
/// short enough that a client cannot fill the store with its header.
pub const MAX_USER_AGENT_LEN: usize = 256;

/// Where a session was logged in from, recorded at login and kept with the
/// session: for "your devices" pages. Nothing of it is required; a store
/// that never saw a login keeps it empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The login request's `User-Agent`, cut to at most
    /// [`MAX_USER_AGENT_LEN`] bytes, unless the layer was told not to keep
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The login request's client address, when the layer has a
    /// [`ClientIp`] rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

impl Device {
    /// A device from a User-Agent header value and a client address: the
    /// value is kept as text (invalid UTF-8 replaced) and cut to
    /// [`MAX_USER_AGENT_LEN`] bytes on a character boundary.
    pub fn new(user_agent: Option<&HeaderValue>, ip: Option<IpAddr>) -> Self {
        let user_agent = user_agent
            .map(|value| truncate(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .filter(|agent| !agent.is_empty());
        Self { user_agent, ip }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.user_agent.is_none() && self.ip.is_none()
    }

    /// A short human label for the browser and system, such as `"Firefox on
    /// Linux"` or `"Safari on iPhone"`; `None` when no User-Agent was kept
    /// or it names nothing known.
    ///
    /// Worked out from the stored User-Agent each time it is asked for, so
    /// labels improve with the parser without touching stored sessions.
    /// Needs the `device-labels` feature (on by default); without it,
    /// always `None`.
    pub fn label(&self) -> Option<String> {
        label(self.user_agent.as_deref()?)
    }
}

/// Cuts `agent` to [`MAX_USER_AGENT_LEN`] bytes, on a character boundary.
fn truncate(mut agent: String) -> String {
    if agent.len() > MAX_USER_AGENT_LEN {
        let mut end = MAX_USER_AGENT_LEN;
        while !agent.is_char_boundary(end) {
            end -= 1;
        }
        agent.truncate(end);
    }
    agent
}

#[cfg(feature = "device-labels")]
fn label(agent: &str) -> Option<String> {
    const UNKNOWN: &str = "UNKNOWN";
    let parsed = woothee::parser::Parser::new().parse(agent)?;
    let browser = Some(parsed.name).filter(|name| *name != UNKNOWN && !name.is_empty());
    let system = match parsed.os {
        UNKNOWN | "" => None,
        "Mac OSX" => Some("macOS"),
        os => Some(os),
    };
    match (browser, system) {
        (Some(browser), Some(system)) => Some(format!("{browser} on {system}")),
        (Some(browser), None) => Some(browser.to_owned()),
        (None, Some(system)) => Some(format!("Unknown browser on {system}")),
        (None, None) => None,
    }
}

#[cfg(not(feature = "device-labels"))]
fn label(_agent: &str) -> Option<String> {
    None
}

type PeerFn = dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync;

/// Where the peer address comes from.
#[derive(Clone)]
enum Peer {
    /// A request extension the server framework inserts: read with `read`,
    /// and a missing one warned about once per layer, naming `extension`.
    Extension {
        read: fn(&Extensions) -> Option<IpAddr>,
        extension: &'static str,
    },
    /// The app's own closure, which may well find nothing.
    Custom(Arc<PeerFn>),
}

fn socket_addr_peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

fn connect_info_peer<C>(extensions: &Extensions) -> Option<IpAddr>
where
    C: Deref<Target = SocketAddr> + Send + Sync + 'static,
{
    extensions.get::<C>().map(|info| info.ip())
}

/// How the layer finds a request's client address, to record it with the
/// sessions it logs in ([`Device::ip`]). Off unless given to
/// [`SessionLayerBuilder::client_ip`](crate::SessionLayerBuilder::client_ip).
///
/// The address starts as the TCP peer, which the server framework puts in
/// the request extensions: axum as `ConnectInfo<SocketAddr>`
/// ([`ClientIp::from_connect_info`]), a hyper server of your own as a bare
/// `SocketAddr` ([`ClientIp::from_socket_addr`]), or elsewhere
/// ([`ClientIp::from_peer`]). When that peer is one of the trusted proxies, the forwarding header
/// (`X-Forwarded-For` unless [`ClientIp::forwarded_header`] says otherwise)
/// is read from the right: each trusted address there is skipped, and the
/// first untrusted one is the client. An unparsable entry stops the walk at
/// the last address vouched for. A request from an untrusted peer is never
/// believed about its own origin, so a client cannot claim any address it
/// likes.
#[derive(Clone)]
pub struct ClientIp {
    peer: Peer,
    trusted: Vec<String>,
    header: HeaderName,
}

impl ClientIp {
    fn with_peer(peer: Peer) -> Self {
        Self {
            peer,
            trusted: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    /// Reads the peer from the request extension `C`, a wrapper that
    /// derefs to the connection's [`SocketAddr`], and trusts no proxy: the
    /// peer is the client. For axum, name its `ConnectInfo<SocketAddr>`
    /// (this crate does not depend on axum, so it cannot name it for you):
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::extract::ConnectInfo;
    /// use cloakroom::device::ClientIp;
    ///
    /// let client_ip = ClientIp::from_connect_info::<ConnectInfo<SocketAddr>>();
    /// ```
    ///
    /// axum inserts it when the app is served with
    /// `app.into_make_service_with_connect_info::<SocketAddr>()` (with
    /// `axum::serve`, or `MockConnectInfo` in tests). Served without it,
    /// no address is recorded, and the layer logs a `client_ip_unknown`
    /// warning (target `cloakroom`) the first time a request lacks it.
    pub fn from_connect_info<C>() -> Self
    where
        C: Deref<Target = SocketAddr> + Send + Sync + 'static,
    {
        Self::with_peer(Peer::Extension {
            read: connect_info_peer::<C>,
            extension: std::any::type_name::<C>(),
        })
    }

    /// Reads the peer from a bare [`SocketAddr`] in the request
    /// extensions, for hyper servers that insert the accepted connection's
    /// address themselves (`examples/hyper.rs`), and trusts no proxy.
    ///
    /// Not for axum, which inserts `ConnectInfo<SocketAddr>` instead: use
    /// [`ClientIp::from_connect_info`] there. A request without the
    /// extension records no address, and the layer logs a
    /// `client_ip_unknown` warning (target `cloakroom`) the first time.
    pub fn from_socket_addr() -> Self {
        Self::with_peer(Peer::Extension {
            read: socket_addr_peer,
            extension: "std::net::SocketAddr",
        })
    }

    /// Reads the peer address with `peer` from the request extensions and
    /// trusts no proxy: the peer is the client. For a server that keeps the
    /// address somewhere [`from_connect_info`](Self::from_connect_info) and
    /// [`from_socket_addr`](Self::from_socket_addr) do not look, e.g.
    /// behind a Unix socket. `None` records no address, and is not warned
    /// about.
    pub fn from_peer(peer: impl Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static) -> Self {
        Self::with_peer(Peer::Custom(Arc::new(peer)))
    }

    /// Trusts the proxies in `networks` (addresses such as `"10.0.0.1"` or
    /// CIDR networks such as `"10.0.0.0/8"`, `"fd00::/8"`) to report the
    /// address they received a request from in the forwarding header.
    /// Checked by [`SessionLayerBuilder::build`](crate::SessionLayerBuilder::build).
    ///
    /// # Security
    ///
    /// Name only proxies that overwrite or append to the header: a trusted
    /// address that passes a client's header through unchanged lets the
    /// client choose the recorded address.
    pub fn trust_proxies<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted.extend(networks.into_iter().map(Into::into));
        self
    }

    /// The forwarding header trusted proxies write: `X-Forwarded-For` (the
    /// default) or any header with the same comma-separated form, such as
    /// `X-Real-IP`.
    pub fn forwarded_header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Checks the trusted networks.
    pub(crate) fn validated(self) -> Result<ClientIpRule, ConfigError> {
        let trusted = self
            .trusted
            .iter()
            .map(|network| parse_network(network))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientIpRule {
            peer: self.peer,
            trusted,
            header: self.header,
            warned: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn parse_network(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| ConfigError::InvalidTrustedProxy(text.to_owned()))
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// A [`ClientIp`] whose trusted networks were parsed.
#[derive(Clone)]
pub(crate) struct ClientIpRule {
    peer: Peer,
    trusted: Vec<IpNet>,
    header: HeaderName,
    /// A request lacked the peer's extension, and that was logged: once per
    /// layer is enough to point at the mistake.
    warned: Arc<AtomicBool>,
}

impl ClientIpRule {
    /// The client address of a request, or `None` when its peer is
    /// unknown.
    pub(crate) fn client(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = match &self.peer {
            Peer::Custom(peer) => peer(extensions),
            Peer::Extension { read, extension } => {
                let peer = read(extensions);
                if peer.is_none() && !self.warned.swap(true, Ordering::Relaxed) {
                    crate::events::client_ip_unknown(extension);
                }
                peer
            }
        }?
        .to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        // The header's entries, last (nearest hop) first, across every
        // occurrence of the header.
        let mut vouched = peer;
        let values: Vec<&HeaderValue> = headers.get_all(&self.header).iter().collect();
        for value in values.into_iter().rev() {
            let Ok(text) = value.to_str() else {
                return Some(vouched);
            };
            for entry in text.rsplit(',') {
                let Some(hop) = parse_hop(entry) else {
                    return Some(vouched);
                };
                if !self.is_trusted(hop) {
                    return Some(hop);
                }
                vouched = hop;
            }
        }
        Some(vouched)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|network| network.contains(&ip))
    }
}

/// One forwarding-header entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl fmt::Debug for ClientIpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIpRule")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// What the layer notes about a request for the device record of a login
/// in it, and the page it asked for, for a login redirect's `next`: cheap
/// to take (header and path clones share their bytes), turned into a
/// [`Device`] only when a login happens.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestOrigin {
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) ip: Option<IpAddr>,
    /// The path and query of a `GET` or `HEAD`, as the layer saw it (before
    /// a nested router strips a prefix).
    page: Option<PathAndQuery>,
}

impl RequestOrigin {
    pub(crate) fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
        record_user_agent: bool,
        client_ip: Option<&ClientIpRule>,
    ) -> Self {
        Self {
            user_agent: record_user_agent
                .then(|| headers.get(USER_AGENT).cloned())
                .flatten(),
            ip: client_ip.and_then(|rule| rule.client(extensions, headers)),
            page: (*method == Method::GET || *method == Method::HEAD)
                .then(|| uri.path_and_query().cloned())
                .flatten(),
        }
    }

    /// The page a `GET` or `HEAD` asked for.
    pub(crate) fn page(&self) -> Option<&str> {
        self.page.as_ref().map(PathAndQuery::as_str)
    }

    pub(crate) fn device(&self) -> Device {
        Device::new(self.user_agent.as_ref(), self.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(trusted: &[&str]) -> ClientIpRule {
        ClientIp::from_socket_addr()
            .trust_proxies(trusted.iter().copied())
            .validated()
            .unwrap()
    }

    fn request(peer: Option<&str>, forwarded: &[&str]) -> (Extensions, HeaderMap) {
        let mut extensions = Extensions::new();
        if let Some(peer) = peer {
            extensions.insert(peer.parse::<SocketAddr>().unwrap());
        }
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        (extensions, headers)
    }

    #[test]
    fn the_client_address_is_found_behind_trusted_proxies_only() {
        struct Test {
            name: &'static str,
            trusted: &'static [&'static str],
            peer: Option<&'static str>,
            forwarded: &'static [&'static str],
            expected: Option<&'static str>,
        }
        let tests = [
            Test {
                name: "no peer known",
                trusted: &[],
                peer: None,
                forwarded: &["192.0.2.1"],
                expected: None,
            },
            Test {
                name: "an untrusted peer is the client, whatever it claims",
                trusted: &["10.0.0.0/8"],
                peer: Some("198.51.100.7:5000"),
                forwarded: &["192.0.2.1"],
                expected: Some("198.51.100.7"),
            },
            Test {
                name: "a trusted proxy's last entry is the client",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["192.0.2.1"],
                expected: Some("192.0.2.1"),
            },
            Test {
                name: "a spoofed entry left of the real client is ignored",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["6.6.6.6, 192.0.2.1"],
                expected: Some("192.0.2.1"),
            },
            Test {
                name: "chains of trusted proxies are walked, across header lines",
                trusted: &["10.0.0.0/8", "172.16.0.1"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["6.6.6.6, 192.0.2.1", "172.16.0.1, 10.9.9.9"],
                expected: Some("192.0.2.1"),
            },
            Test {
                name: "junk stops the walk at the last vouched-for hop",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["192.0.2.1, not-an-ip"],
                expected: Some("10.1.2.3"),
            },
            Test {
                name: "a trusted proxy without the header is the client",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &[],
                expected: Some("10.1.2.3"),
            },
            Test {
                name: "only trusted hops: the leftmost",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["10.0.0.9, 10.0.0.8"],
                expected: Some("10.0.0.9"),
            },
            Test {
                name: "ports and IPv6 brackets are understood",
                trusted: &["10.0.0.0/8"],
                peer: Some("10.1.2.3:5000"),
                forwarded: &["[2001:db8::1]:4711"],
                expected: Some("2001:db8::1"),
            },
            Test {
                name: "IPv4-mapped IPv6 peers are IPv4",
                trusted: &["10.0.0.0/8"],
                peer: Some("[::ffff:10.1.2.3]:5000"),
                forwarded: &["192.0.2.1:80"],
                expected: Some("192.0.2.1"),
            },
        ];
        for test in tests {
            let (extensions, headers) = request(test.peer, test.forwarded);
            let found = rule(test.trusted).client(&extensions, &headers);
            let expected = test.expected.map(|ip| ip.parse::<IpAddr>().unwrap());
            assert_eq!(found, expected, "{}", test.name);
        }
    }

    #[test]
    fn bad_trusted_networks_are_refused_at_build() {
        for bad in ["10.0.0.0/33", "localhost", "", "10.0.0"] {
            let error = ClientIp::from_socket_addr()
                .trust_proxies([bad])
                .validated()
                .unwrap_err();
            assert_eq!(error, ConfigError::InvalidTrustedProxy(bad.to_owned()));
        }
        assert!(ClientIp::from_socket_addr()
            .trust_proxies(["10.0.0.1", "fd00::/8", " 192.168.0.0/16 "])
            .validated()
            .is_ok());
    }

    #[test]
    fn user_agents_are_cut_on_a_character_boundary() {
        let long = format!("{}é", "a".repeat(MAX_USER_AGENT_LEN - 1));
        let device = Device::new(Some(&HeaderValue::from_str(&long).unwrap()), None);
        let kept = device.user_agent.unwrap();
        assert_eq!(kept, "a".repeat(MAX_USER_AGENT_LEN - 1));
        let short = Device::new(Some(&HeaderValue::from_static("curl/8")), None);
        assert_eq!(short.user_agent.as_deref(), Some("curl/8"));
        assert!(Device::new(Some(&HeaderValue::from_static("")), None).is_empty());
        let bytes = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(
            Device::new(Some(&bytes), None).user_agent.as_deref(),
            Some("caf\u{fffd}")
        );
    }

    #[cfg(feature = "device-labels")]
    #[test]
    fn labels_name_the_browser_and_the_system() {
        let tests = [
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                Some("Firefox on Linux"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                Some("Safari on macOS"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                Some("Safari on iPhone"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                 Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                Some("Edge on Windows 10"),
            ),
            ("curl/8.5.0", Some("HTTP Library")),
            ("something else entirely", None),
        ];
        for (agent, expected) in tests {
            let device = Device {
                user_agent: Some(agent.to_owned()),
                ip: None,
            };
            assert_eq!(device.label().as_deref(), expected, "{agent}");
        }
        assert_eq!(Device::default().label(), None);
    }
}
