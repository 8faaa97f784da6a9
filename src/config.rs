//! The layer's settings: what the builder collects ([`Settings`], with the
//! safe defaults) and what a built layer shares with every request
//! ([`SessionConfig`]), and the one place the first becomes the second.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::cookie::CookieSettings;
use crate::device::{ClientIp, ClientIpRule};
use crate::error::ConfigError;
use crate::key::{Key, KeyRing};
#[cfg(feature = "axum")]
use crate::respond::ResponseHooks;

const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
const DEFAULT_ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
const DEFAULT_REMEMBER_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_REMEMBER_ABSOLUTE: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_TOUCH_AFTER: f64 = 0.1;
/// The largest `touch_after`: past half the idle window, a user active
/// at steady intervals shorter than the idle timeout is logged out (the
/// effective idle timeout falls to `(1 - touch_after) × idle_timeout`).
pub(crate) const MAX_TOUCH_AFTER: f64 = 0.5;
const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;
pub(crate) const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_LOGIN_URL: &str = "/login";
/// How recent a password confirmation must be for a sensitive action,
/// unless the builder says otherwise: five minutes.
const DEFAULT_REAUTHENTICATION_WINDOW: Duration = Duration::from_secs(300);
const MIN_STORE_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest timeout accepted: 10 years. Longer values are almost certainly
/// unit mistakes, and would overflow date arithmetic in some stores.
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The validated settings every request of one layer shares.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    pub(crate) cookie: CookieSettings,
    pub(crate) keys: KeyRing,
    /// Whether new sessions get a persistent cookie.
    pub(crate) persistent: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    /// The idle window of a remembered session.
    pub(crate) remember_idle_timeout: Duration,
    /// How long a remembered session lives at most, from its creation.
    pub(crate) remember_absolute_timeout: Duration,
    pub(crate) touch_after: f64,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether a login keeps the request's `User-Agent`.
    pub(crate) record_user_agent: bool,
    /// How to find the client address a login keeps, if at all.
    pub(crate) client_ip: Option<ClientIpRule>,
    /// Where [`LoggedIn`](crate::login::LoggedIn) sends a browser without a user.
    /// Only `LoggedIn` reads it, so without the `axum` feature it is kept
    /// (the builder still validates it) but unread.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) login_url: String,
    /// How recent a password confirmation
    /// [`Reauthenticated`](crate::login::Reauthenticated) accepts.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) reauthentication_window: Duration,
    /// The app's own renderers of login-required answers and session
    /// errors.
    #[cfg(feature = "axum")]
    pub(crate) responses: ResponseHooks,
    /// The app said it needs no CSRF checks: no warning when unsafe
    /// requests from browsers pass with none.
    pub(crate) csrf_not_needed: bool,
}

/// What [`SessionLayerBuilder`](crate::SessionLayerBuilder) collects, not
/// yet checked; the defaults are the safe ones.
pub(crate) struct Settings {
    pub(crate) cookie: CookieSettings,
    pub(crate) key: Option<Key>,
    pub(crate) previous_keys: Vec<Key>,
    pub(crate) key_ring: Option<KeyRing>,
    pub(crate) persistent: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) absolute_timeout: Duration,
    pub(crate) remember_idle_timeout: Duration,
    pub(crate) remember_absolute_timeout: Duration,
    pub(crate) touch_after: f64,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) store_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) record_user_agent: bool,
    pub(crate) client_ip: Option<ClientIp>,
    pub(crate) login_url: String,
    pub(crate) reauthentication_window: Duration,
    #[cfg(feature = "axum")]
    pub(crate) responses: ResponseHooks,
    pub(crate) csrf_not_needed: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cookie: CookieSettings::default(),
            key: None,
            previous_keys: Vec::new(),
            key_ring: None,
            persistent: false,
            idle_timeout: DEFAULT_IDLE,
            absolute_timeout: DEFAULT_ABSOLUTE,
            remember_idle_timeout: DEFAULT_REMEMBER_IDLE,
            remember_absolute_timeout: DEFAULT_REMEMBER_ABSOLUTE,
            touch_after: DEFAULT_TOUCH_AFTER,
            max_sessions_per_user: Some(DEFAULT_MAX_SESSIONS_PER_USER),
            store_timeout: DEFAULT_STORE_TIMEOUT,
            clock: Arc::new(SystemClock),
            record_user_agent: true,
            client_ip: None,
            login_url: DEFAULT_LOGIN_URL.to_owned(),
            reauthentication_window: DEFAULT_REAUTHENTICATION_WINDOW,
            #[cfg(feature = "axum")]
            responses: ResponseHooks::default(),
            csrf_not_needed: false,
        }
    }
}

impl Settings {
    /// Checks the settings: the layer's configuration and the store
    /// timeout, or the first setting that cannot work.
    pub(crate) fn validate(self) -> Result<(SessionConfig, Duration), ConfigError> {
        let keys = match (self.key_ring, self.key) {
            (Some(ring), _) => ring,
            (None, Some(key)) => {
                KeyRing::from_keys(std::iter::once(key).chain(self.previous_keys))?
            }
            (None, None) => return Err(ConfigError::MissingKey),
        };
        let cookie = self.cookie.validated()?;
        let idle_timeout = timeout("idle_timeout", self.idle_timeout)?;
        let absolute_timeout = timeout("absolute_timeout", self.absolute_timeout)?;
        if absolute_timeout < idle_timeout {
            return Err(ConfigError::AbsoluteShorterThanIdle {
                setting: "absolute_timeout",
                absolute: self.absolute_timeout,
                absolute_is_default: self.absolute_timeout == DEFAULT_ABSOLUTE,
                idle: self.idle_timeout,
            });
        }
        let remember_idle_timeout =
            timeout("remember_me_idle_timeout", self.remember_idle_timeout)?;
        let remember_absolute_timeout = timeout(
            "remember_me_absolute_timeout",
            self.remember_absolute_timeout,
        )?;
        if remember_absolute_timeout < remember_idle_timeout {
            return Err(ConfigError::AbsoluteShorterThanIdle {
                setting: "remember_me_absolute_timeout",
                absolute: self.remember_absolute_timeout,
                absolute_is_default: self.remember_absolute_timeout == DEFAULT_REMEMBER_ABSOLUTE,
                idle: self.remember_idle_timeout,
            });
        }
        if !(0.0..=MAX_TOUCH_AFTER).contains(&self.touch_after) {
            return Err(ConfigError::TouchAfterOutOfRange);
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::ZeroSessionsPerUser);
        }
        if !(MIN_STORE_TIMEOUT..=MAX_STORE_TIMEOUT).contains(&self.store_timeout) {
            return Err(ConfigError::StoreTimeoutOutOfRange);
        }
        let client_ip = self.client_ip.map(ClientIp::validated).transpose()?;
        let login_url = login_url(self.login_url)?;
        timeout("reauthentication_window", self.reauthentication_window)?;
        let config = SessionConfig {
            cookie,
            keys,
            persistent: self.persistent,
            idle_timeout,
            absolute_timeout,
            remember_idle_timeout,
            remember_absolute_timeout,
            touch_after: self.touch_after,
            max_sessions_per_user: self.max_sessions_per_user,
            clock: self.clock,
            record_user_agent: self.record_user_agent,
            client_ip,
            login_url,
            reauthentication_window: self.reauthentication_window,
            #[cfg(feature = "axum")]
            responses: self.responses,
            csrf_not_needed: self.csrf_not_needed,
        };
        Ok((config, self.store_timeout))
    }
}

/// A login URL must be a path on this site: `/` and not `//` (which a
/// browser reads as another host), with no characters that would break a
/// `Location` header.
fn login_url(url: String) -> Result<String, ConfigError> {
    let local = url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\");
    let clean = url.bytes().all(|b| b.is_ascii_graphic());
    if local && clean {
        Ok(url)
    } else {
        Err(ConfigError::InvalidLoginUrl(url))
    }
}

fn timeout(setting: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    whole_seconds_in_range(value).ok_or(ConfigError::TimeoutOutOfRange { setting, value })
}

/// `d` in whole seconds, if it lies between one second and ten years: the
/// range every timeout and session lifetime must keep.
pub(crate) fn whole_seconds_in_range(d: Duration) -> Option<Duration> {
    // Whole seconds, like every timestamp the stores keep; the range check
    // keeps the value far inside i64.
    (Duration::from_secs(1)..=MAX_TIMEOUT)
        .contains(&d)
        .then(|| Duration::from_secs(d.as_secs()))
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = usize::from(self.key.is_some())
            + self.previous_keys.len()
            + self.key_ring.as_ref().map_or(0, KeyRing::len);
        let mut f = f.debug_struct("Settings");
        f.field("keys", &keys)
            .field("cookie", &self.cookie)
            .field("persistent", &self.persistent)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("remember_idle_timeout", &self.remember_idle_timeout)
            .field("remember_absolute_timeout", &self.remember_absolute_timeout)
            .field("touch_after", &self.touch_after)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .field("store_timeout", &self.store_timeout)
            .field("clock", &self.clock)
            .field("record_user_agent", &self.record_user_agent)
            .field("client_ip", &self.client_ip)
            .field("login_url", &self.login_url)
            .field("reauthentication_window", &self.reauthentication_window)
            .field("csrf_not_needed", &self.csrf_not_needed);
        #[cfg(feature = "axum")]
        f.field("responses", &self.responses);
        f.finish_non_exhaustive()
    }
}
