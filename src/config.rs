//! Layer configuration: the builder behind [`SessionLayer::builder`] and the
//! errors it reports for settings that contradict each other.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cloakroom::{ConfigError, Key, MemoryStore, SameSite, SessionLayer};
//!
//! let layer = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::from_hex(&"ab".repeat(32))?)
//!     .host_prefix(true)
//!     .same_site(SameSite::Strict)
//!     .idle_timeout(Duration::from_secs(15 * 60))
//!     .absolute_timeout(Duration::from_secs(8 * 3600))
//!     .build()?;
//!
//! // Contradictions are reported, never silently fixed.
//! let err = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::generate()?)
//!     .host_prefix(true)
//!     .domain("example.com")
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err, ConfigError::HostPrefixWithDomain);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::cookie::CookieSettings;
use crate::key::{Key, KeyRing};
use crate::layer::{Core, SessionLayer};
use crate::store::{DynStore, SessionStore};

const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
const DEFAULT_TOUCH_AFTER: f64 = 0.1;
/// Longest timeout accepted: 10 years. Longer values are almost certainly
/// unit mistakes, and would overflow date arithmetic in some stores.
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only with same-site requests, including top-level navigations
    /// from other sites being excluded.
    Strict,
    /// Sent with same-site requests and top-level `GET` navigations from
    /// other sites. The default: links into the app keep the user logged in,
    /// cross-site form posts do not carry the cookie.
    #[default]
    Lax,
    /// Sent with every request, cross-site included. Requires `Secure`.
    None,
}

/// Settings that cannot work, reported by [`SessionLayerBuilder::build`]
/// and by key constructors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No signing key was given.
    MissingKey,
    /// A key ring was built from no keys.
    EmptyKeyRing,
    /// A signing key is shorter than 32 bytes.
    KeyTooShort {
        /// The length given, in bytes.
        len: usize,
    },
    /// A key given as hex text is not hex.
    KeyNotHex,
    /// The cookie name is empty or has characters a cookie name cannot have.
    InvalidCookieName,
    /// The cookie domain is empty or has characters that would break the
    /// `Set-Cookie` header.
    InvalidDomain,
    /// The cookie path does not start with `/` or has characters that would
    /// break the `Set-Cookie` header.
    InvalidPath,
    /// The `__Host-` prefix forbids a `Domain` attribute.
    HostPrefixWithDomain,
    /// The `__Host-` prefix requires `Secure`.
    HostPrefixWithoutSecure,
    /// The `__Host-` prefix requires `Path=/`.
    HostPrefixWithPath,
    /// `SameSite=None` cookies are refused by browsers unless `Secure`.
    SameSiteNoneWithoutSecure,
    /// A timeout is under one second or over ten years.
    TimeoutOutOfRange,
    /// The absolute timeout is shorter than the idle timeout.
    AbsoluteShorterThanIdle,
    /// `touch_after` is not a fraction between 0.0 and 1.0.
    TouchAfterOutOfRange,
    /// A store key prefix is too long or contains characters it must not
    /// (for Redis: `{` or `}`, which would act as a cluster hash tag).
    InvalidKeyPrefix,
    /// A [`CsrfLayer`](crate::CsrfLayer) setting is invalid; names which.
    InvalidCsrfSetting(&'static str),
    /// A PostgreSQL schema name is not a plain lower-case identifier of at
    /// most 63 bytes (`^[a-z_][a-z0-9_]{0,62}$`).
    InvalidSchemaName(String),
    /// A PostgreSQL table name is not a plain lower-case identifier of at
    /// most 48 bytes (`^[a-z_][a-z0-9_]{0,47}$`), short enough for the index
    /// names derived from it.
    InvalidTableName(String),
    /// A sweep batch size of zero, which could never delete a row.
    ZeroSweepBatchSize,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingKey => f.write_str("no signing key: call `.key(...)` or `.key_ring(...)`"),
            Self::EmptyKeyRing => f.write_str("a key ring needs at least one key"),
            Self::KeyTooShort { len } => write!(
                f,
                "signing keys need at least {} bytes, this one has {len}",
                crate::key::MIN_KEY_LEN
            ),
            Self::KeyNotHex => f.write_str("the signing key is not hex text"),
            Self::InvalidCookieName => f.write_str("the cookie name is not a valid cookie token"),
            Self::InvalidDomain => {
                f.write_str("the cookie domain is empty or has invalid characters")
            }
            Self::InvalidPath => f.write_str(
                "the cookie path must start with '/' and have no ';' or control characters",
            ),
            Self::HostPrefixWithDomain => f.write_str("the __Host- prefix forbids a Domain"),
            Self::HostPrefixWithoutSecure => f.write_str("the __Host- prefix requires Secure"),
            Self::HostPrefixWithPath => f.write_str("the __Host- prefix requires Path=/"),
            Self::SameSiteNoneWithoutSecure => f.write_str("SameSite=None requires Secure"),
            Self::TimeoutOutOfRange => {
                f.write_str("timeouts must be between one second and ten years")
            }
            Self::AbsoluteShorterThanIdle => {
                f.write_str("the absolute timeout is shorter than the idle timeout")
            }
            Self::TouchAfterOutOfRange => f.write_str("touch_after must be between 0.0 and 1.0"),
            Self::InvalidCsrfSetting(what) => write!(f, "invalid CSRF setting: {what}"),
            Self::InvalidSchemaName(name) => write!(
                f,
                "invalid schema name {name:?}: expected 1 to 63 characters from a-z, 0-9 \
                 and _, not starting with a digit"
            ),
            Self::InvalidTableName(name) => write!(
                f,
                "invalid table name {name:?}: expected 1 to 48 characters from a-z, 0-9 \
                 and _, not starting with a digit"
            ),
            Self::ZeroSweepBatchSize => f.write_str("the sweep batch size must be at least 1"),
            Self::InvalidKeyPrefix => {
                f.write_str("the key prefix is too long or contains '{' or '}'")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated settings every request of one layer shares.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    pub(crate) cookie: CookieSettings,
    pub(crate) keys: KeyRing,
    pub(crate) idle_timeout: time::Duration,
    pub(crate) absolute_timeout: time::Duration,
    pub(crate) touch_after: f64,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Builds a [`SessionLayer`]; start with [`SessionLayer::builder`].
///
/// Every default is the safe one: an `HttpOnly`, `Secure`, `SameSite=Lax`
/// cookie named `id` on `Path=/` with no `Domain`, a browser-session cookie
/// (no `Max-Age`), a 30-minute idle timeout, a 12-hour absolute timeout,
/// and an idle deadline that is extended once a tenth of the idle window has
/// passed. Only a signing key must be given.
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct SessionLayerBuilder {
    store: Arc<dyn DynStore>,
    keys: Vec<Key>,
    key_ring: Option<KeyRing>,
    name: String,
    host_prefix: bool,
    domain: Option<String>,
    path: String,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    persistent: bool,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    touch_after: f64,
    clock: Arc<dyn Clock>,
}

impl SessionLayerBuilder {
    pub(crate) fn new<S: SessionStore>(store: S) -> Self {
        Self {
            store: Arc::new(store),
            keys: Vec::new(),
            key_ring: None,
            name: "id".to_owned(),
            host_prefix: false,
            domain: None,
            path: "/".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: false,
            idle_timeout: DEFAULT_IDLE,
            absolute_timeout: DEFAULT_ABSOLUTE,
            touch_after: DEFAULT_TOUCH_AFTER,
            clock: Arc::new(SystemClock),
        }
    }

    /// The key that signs new cookies (and verifies them).
    pub fn key(mut self, key: Key) -> Self {
        self.keys.insert(0, key);
        self
    }

    /// A retired key that still verifies cookies but signs none. Add the
    /// previous key here when rotating; remove it later to log out everyone
    /// who still holds a cookie it signed.
    pub fn previous_key(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// A whole key ring at once; replaces keys given by
    /// [`key`](Self::key) and [`previous_key`](Self::previous_key).
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.keys.clear();
        self.key_ring = Some(ring);
        self
    }

    /// The cookie name, `id` by default. Generic names reveal nothing about
    /// the stack.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Prefixes the cookie name with `__Host-`, off by default.
    ///
    /// Browsers then accept the cookie only if it is `Secure`, has
    /// `Path=/` and no `Domain`, so a sibling subdomain cannot plant or
    /// overwrite it. Recommended whenever the app owns its host name.
    pub fn host_prefix(mut self, enabled: bool) -> Self {
        self.host_prefix = enabled;
        self
    }

    /// Sets the cookie's `Domain` attribute; none by default.
    ///
    /// # Security
    ///
    /// With a domain the cookie is also sent to every subdomain of it, so
    /// any of them (and anyone who takes one over) receives the session
    /// cookie. Without one, the cookie goes only to the host that set it.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets the cookie's `Path`, `/` by default.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets `SameSite`, `Lax` by default.
    ///
    /// # Security
    ///
    /// `None` sends the cookie on cross-site requests, so cross-site forms
    /// and scripts act as the user; only use it with CSRF protection, for
    /// apps embedded in other sites.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Whether the cookie carries `Secure`; on by default.
    ///
    /// # Security
    ///
    /// Without `Secure` the browser also sends the cookie over plain HTTP,
    /// where anyone on the network path can read it and take over the
    /// session. Browsers treat `http://localhost` as secure, so local
    /// development does not need this.
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Whether the cookie carries `HttpOnly`; on by default.
    ///
    /// # Security
    ///
    /// Without `HttpOnly`, scripts on the page (including any injected by
    /// an XSS flaw) can read the session cookie and send it elsewhere.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// Gives every new session a persistent cookie (`Max-Age` set to the
    /// time left before the session expires); off by default, so cookies
    /// last until the browser closes. A single session can opt in with
    /// [`Session::remember_me`](crate::Session::remember_me).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// How long a session may go unused before it expires; 30 minutes by
    /// default.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a session may live however active it is; 12 hours by
    /// default. Must not be shorter than the idle timeout.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = timeout;
        self
    }

    /// The fraction of the idle window (0.0 to 1.0) that must pass before
    /// a request extends the idle deadline; 0.1 by default.
    ///
    /// Rolling expiry then costs a store write at most once per
    /// `touch_after × idle_timeout` per session instead of on every request,
    /// at the price of the effective idle timeout lying between
    /// `(1 − touch_after) × idle_timeout` and `idle_timeout`. 0.0 extends on
    /// every request.
    pub fn touch_after(mut self, fraction: f64) -> Self {
        self.touch_after = fraction;
        self
    }

    /// The clock the layer reads; the system clock by default. Tests pass a
    /// [`ManualClock`](crate::ManualClock) to exercise expiry without
    /// sleeping.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first setting that cannot work: no key,
    /// an invalid cookie name, domain or path, a `__Host-` prefix with a
    /// domain, another path or without `Secure`, `SameSite=None` without
    /// `Secure`, a timeout out of range, an absolute timeout shorter than
    /// the idle one, or `touch_after` outside 0.0 to 1.0.
    pub fn build(self) -> Result<SessionLayer, ConfigError> {
        let keys = match self.key_ring {
            Some(ring) => ring,
            None if self.keys.is_empty() => return Err(ConfigError::MissingKey),
            None => KeyRing::from_keys(self.keys)?,
        };
        if self.host_prefix {
            if self.domain.is_some() {
                return Err(ConfigError::HostPrefixWithDomain);
            }
            if !self.secure {
                return Err(ConfigError::HostPrefixWithoutSecure);
            }
            if self.path != "/" {
                return Err(ConfigError::HostPrefixWithPath);
            }
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneWithoutSecure);
        }
        let idle_timeout = timeout(self.idle_timeout)?;
        let absolute_timeout = timeout(self.absolute_timeout)?;
        if absolute_timeout < idle_timeout {
            return Err(ConfigError::AbsoluteShorterThanIdle);
        }
        if !(0.0..=1.0).contains(&self.touch_after) {
            return Err(ConfigError::TouchAfterOutOfRange);
        }
        let name = if self.host_prefix {
            format!("__Host-{}", self.name)
        } else {
            self.name
        };
        let cookie = CookieSettings::new(
            name,
            self.domain,
            self.path,
            self.secure,
            self.http_only,
            self.same_site,
            self.persistent,
        )?;
        let config = SessionConfig {
            cookie,
            keys,
            idle_timeout,
            absolute_timeout,
            touch_after: self.touch_after,
            clock: self.clock,
        };
        Ok(SessionLayer::from_core(Core {
            store: self.store,
            config,
        }))
    }
}

fn timeout(d: Duration) -> Result<time::Duration, ConfigError> {
    whole_seconds_in_range(d).ok_or(ConfigError::TimeoutOutOfRange)
}

/// `d` in whole seconds, if it lies between one second and ten years: the
/// range every timeout and session lifetime must keep.
pub(crate) fn whole_seconds_in_range(d: Duration) -> Option<time::Duration> {
    // Whole seconds, like every timestamp the stores keep; the range check
    // keeps the value far inside i64.
    (Duration::from_secs(1)..=MAX_TIMEOUT)
        .contains(&d)
        .then(|| time::Duration::seconds(d.as_secs() as i64))
}

impl fmt::Debug for SessionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field(
                "keys",
                &(self.keys.len() + self.key_ring.as_ref().map_or(0, KeyRing::len)),
            )
            .field("cookie_name", &self.name)
            .field("host_prefix", &self.host_prefix)
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("persistent", &self.persistent)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("touch_after", &self.touch_after)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn builder() -> SessionLayerBuilder {
        SessionLayer::builder(MemoryStore::new()).key(Key::from_bytes(&[9; 32]).unwrap())
    }

    fn err(b: SessionLayerBuilder) -> ConfigError {
        b.build().expect_err("settings should be refused")
    }

    #[test]
    fn defaults_build() {
        assert!(builder().build().is_ok());
    }

    #[test]
    fn a_key_is_required() {
        assert_eq!(
            err(SessionLayer::builder(MemoryStore::new())),
            ConfigError::MissingKey
        );
    }

    #[test]
    fn host_prefix_contradictions_are_refused() {
        let b = || builder().host_prefix(true);
        assert_eq!(
            err(b().domain("example.com")),
            ConfigError::HostPrefixWithDomain
        );
        assert_eq!(err(b().secure(false)), ConfigError::HostPrefixWithoutSecure);
        assert_eq!(err(b().path("/app")), ConfigError::HostPrefixWithPath);
        assert!(b().build().is_ok());
    }

    #[test]
    fn same_site_none_needs_secure() {
        assert_eq!(
            err(builder().same_site(SameSite::None).secure(false)),
            ConfigError::SameSiteNoneWithoutSecure
        );
        assert!(builder().same_site(SameSite::None).build().is_ok());
    }

    #[test]
    fn absolute_shorter_than_idle_is_refused() {
        assert_eq!(
            err(builder()
                .idle_timeout(Duration::from_secs(600))
                .absolute_timeout(Duration::from_secs(599))),
            ConfigError::AbsoluteShorterThanIdle
        );
    }

    #[test]
    fn timeouts_out_of_range_are_refused() {
        assert_eq!(
            err(builder().idle_timeout(Duration::from_millis(500))),
            ConfigError::TimeoutOutOfRange
        );
        assert_eq!(
            err(builder().absolute_timeout(Duration::from_secs(u64::MAX))),
            ConfigError::TimeoutOutOfRange
        );
    }

    #[test]
    fn touch_after_must_be_a_fraction() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                err(builder().touch_after(bad)),
                ConfigError::TouchAfterOutOfRange
            );
        }
        assert!(builder().touch_after(0.0).build().is_ok());
        assert!(builder().touch_after(1.0).build().is_ok());
    }

    #[test]
    fn invalid_cookie_attributes_are_refused() {
        assert_eq!(
            err(builder().cookie_name("")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(
            err(builder().cookie_name("a b")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(
            err(builder().cookie_name("a=b")),
            ConfigError::InvalidCookieName
        );
        assert_eq!(err(builder().domain("a;b")), ConfigError::InvalidDomain);
        assert_eq!(err(builder().domain("")), ConfigError::InvalidDomain);
        assert_eq!(err(builder().path("app")), ConfigError::InvalidPath);
        assert_eq!(err(builder().path("/a;b")), ConfigError::InvalidPath);
    }

    #[test]
    fn key_ring_replaces_single_keys() {
        let ring = KeyRing::new(Key::from_bytes(&[1; 32]).unwrap());
        assert!(SessionLayer::builder(MemoryStore::new())
            .key_ring(ring)
            .build()
            .is_ok());
    }

    #[test]
    fn builder_debug_hides_keys() {
        let shown = format!("{:?}", builder());
        assert!(shown.contains("keys: 1"));
        assert!(!shown.contains("0909"));
    }
}
