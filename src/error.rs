//! The crate's error types: [`SessionError`] for what handlers see,
//! [`ConfigError`] for settings of the layer that cannot work (stores and
//! the CSRF layer have their own, in their modules). Every module reaches them
//! here, so no module depends on another just for its errors.

use std::fmt;
use std::time::Duration;

use crate::id::{ParseSessionHandleError, RandomnessError};
use crate::store::StoreError;

/// Settings of the session layer that cannot work, reported by
/// [`SessionLayerBuilder::build`](crate::SessionLayerBuilder::build), by key
/// constructors and by [`ClientIp`](crate::device::ClientIp). Stores and
/// the CSRF layer have errors of their own: `store::ConfigError` and
/// `csrf::ConfigError`.
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
    TimeoutOutOfRange {
        /// The builder setting, e.g. `"idle_timeout"`.
        setting: &'static str,
        /// The value given.
        value: Duration,
    },
    /// An absolute timeout is shorter than the idle timeout it goes with
    /// (a session would end before it could go idle).
    AbsoluteShorterThanIdle {
        /// The absolute timeout's builder setting, e.g.
        /// `"absolute_timeout"`.
        setting: &'static str,
        /// The absolute timeout in effect.
        absolute: Duration,
        /// Whether that absolute timeout is the default (it was not set).
        absolute_is_default: bool,
        /// The idle timeout in effect.
        idle: Duration,
    },
    /// `touch_after` is not a fraction from 0.0 up to 0.5.
    TouchAfterOutOfRange,
    /// A limit of zero sessions per user, which would log nobody in.
    ZeroSessionsPerUser,
    /// The store timeout is under a millisecond or over ten minutes.
    StoreTimeoutOutOfRange,
    /// A trusted proxy given to [`ClientIp`](crate::device::ClientIp) is neither an
    /// IP address nor a CIDR network.
    InvalidTrustedProxy(String),
    /// The login URL is not a path on this site (it must start with a
    /// single `/`).
    InvalidLoginUrl(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingKey => f.write_str("no signing key: call `.key(...)` or `.key_ring(...)`"),
            Self::EmptyKeyRing => f.write_str("a key ring needs at least one key"),
            // 32 is `Key::MIN_LEN` (a unit test in `key.rs` keeps them equal).
            Self::KeyTooShort { len } => {
                write!(f, "signing keys need at least 32 bytes, this one has {len}")
            }
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
            Self::TimeoutOutOfRange { setting, value } => write!(
                f,
                "{setting} is {}: timeouts must be between one second and ten years",
                Human(*value)
            ),
            Self::AbsoluteShorterThanIdle {
                setting,
                absolute,
                absolute_is_default,
                idle,
            } => {
                let idle_setting = setting.replace("absolute", "idle");
                let default = if *absolute_is_default {
                    ", the default"
                } else {
                    ""
                };
                write!(
                    f,
                    "{setting} ({}{default}) is shorter than {idle_setting} ({}): \
                     set {setting} to at least {}",
                    Human(*absolute),
                    Human(*idle),
                    Human(*idle)
                )
            }
            Self::TouchAfterOutOfRange => f.write_str(
                "touch_after must be from 0.0 to 0.5: a request extends the idle deadline \
                     only once that fraction of the idle window has passed, so a larger one \
                     logs out users who are active at steady intervals (at 0.99 with a \
                     30-minute idle timeout, someone active every minute is logged out after \
                     29 minutes)",
            ),
            Self::ZeroSessionsPerUser => {
                f.write_str("max_sessions_per_user must be at least 1 (or None for no limit)")
            }
            Self::StoreTimeoutOutOfRange => {
                f.write_str("the store timeout must be between 1 ms and 10 minutes")
            }
            Self::InvalidTrustedProxy(text) => write!(
                f,
                "trusted proxy {text:?} is neither an IP address nor a network such as \
                 10.0.0.0/8"
            ),
            Self::InvalidLoginUrl(url) => write!(
                f,
                "login URL {url:?} must be a path on this site, starting with a single '/'"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A duration the way a person would write it: `90s`, `30min`, `12h`,
/// `7d`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() != 0 || secs == 0 {
            return write!(f, "{:?}", self.0);
        }
        match secs {
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}min", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// A session operation failed.
///
/// [`SessionError::status`] gives the HTTP status it stands for; the axum
/// integration answers with it and a body that names no session, key or
/// backend detail. No variant carries a session ID.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed. The request's session changes are not written.
    Store(StoreError),
    /// A value could not be serialized to JSON.
    Serialize {
        /// The data key being written.
        key: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A stored value is not of the requested type.
    Deserialize {
        /// The data key being read.
        key: String,
        /// The deserializer's error.
        source: serde_json::Error,
    },
    /// Data no store can hold, refused before anything was written: the
    /// client's fault (`400`), not an outage. The same on every store.
    Unstorable {
        /// What was refused: `"data key"`, `"value"` or `"user id"`.
        what: &'static str,
        /// Why: e.g. `"contains a NUL character"`.
        reason: &'static str,
    },
    /// The operating system's random number generator failed.
    Randomness(RandomnessError),
    /// Several freshly drawn IDs were all taken: the store or the RNG is
    /// broken.
    IdCollision,
    /// The response was already produced; later changes cannot be saved.
    Finished,
    /// The operation needs a logged-in user and the session has none
    /// (`401`).
    NotLoggedIn,
    /// A session handle from the client names none of the current user's
    /// live sessions (`404`): another user's, an ended one, one never
    /// issued, or text that is no handle at all
    /// ([`ParseSessionHandleError`](crate::device::ParseSessionHandleError)
    /// converts into it), which are not told apart.
    UnknownSession,
}

impl SessionError {
    /// The HTTP status this error stands for: `400` for data a store cannot
    /// hold, `401` without a logged-in user where one is needed, `404` for
    /// a session handle that is not the user's, `503` when the store (or
    /// the randomness source) failed, `500` for the rest, which are bugs in
    /// the app.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Store(e) if e.is_rejected() => http::StatusCode::BAD_REQUEST,
            Self::Unstorable { .. } => http::StatusCode::BAD_REQUEST,
            Self::Store(_) | Self::Randomness(_) | Self::IdCollision => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Serialize { .. } | Self::Deserialize { .. } | Self::Finished => {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::NotLoggedIn => http::StatusCode::UNAUTHORIZED,
            Self::UnknownSession => http::StatusCode::NOT_FOUND,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::Serialize { key, .. } => write!(f, "cannot serialize session value {key:?}"),
            Self::Deserialize { key, .. } => {
                write!(f, "session value {key:?} is not of the requested type")
            }
            Self::Unstorable { what, reason } => write!(f, "the session {what} {reason}"),
            Self::Randomness(e) => write!(f, "{e}"),
            Self::IdCollision => f.write_str("could not find a free session ID"),
            Self::Finished => f.write_str("the session was already committed with the response"),
            Self::NotLoggedIn => f.write_str("no user is logged in"),
            Self::UnknownSession => f.write_str("no such session among the user's sessions"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Serialize { source, .. } | Self::Deserialize { source, .. } => Some(source),
            Self::Randomness(e) => Some(e),
            Self::Unstorable { .. }
            | Self::IdCollision
            | Self::Finished
            | Self::NotLoggedIn
            | Self::UnknownSession => None,
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// A malformed handle names none of the user's sessions, as an unknown
/// one does: both answer `404`, told apart by nothing.
impl From<ParseSessionHandleError> for SessionError {
    fn from(_: ParseSessionHandleError) -> Self {
        Self::UnknownSession
    }
}

impl From<RandomnessError> for SessionError {
    fn from(e: RandomnessError) -> Self {
        Self::Randomness(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_errors_name_the_values_and_defaults_involved() {
        let error = ConfigError::AbsoluteShorterThanIdle {
            setting: "absolute_timeout",
            absolute: Duration::from_secs(12 * 3600),
            absolute_is_default: true,
            idle: Duration::from_secs(24 * 3600),
        };
        assert_eq!(
            error.to_string(),
            "absolute_timeout (12h, the default) is shorter than idle_timeout (1d): \
             set absolute_timeout to at least 1d"
        );
        let error = ConfigError::AbsoluteShorterThanIdle {
            setting: "remember_me_absolute_timeout",
            absolute: Duration::from_secs(90),
            absolute_is_default: false,
            idle: Duration::from_secs(30 * 60),
        };
        assert_eq!(
            error.to_string(),
            "remember_me_absolute_timeout (90s) is shorter than remember_me_idle_timeout \
             (30min): set remember_me_absolute_timeout to at least 30min"
        );
        let error = ConfigError::TimeoutOutOfRange {
            setting: "idle_timeout",
            value: Duration::from_millis(500),
        };
        assert_eq!(
            error.to_string(),
            "idle_timeout is 500ms: timeouts must be between one second and ten years"
        );
    }

    #[test]
    fn errors_stand_for_their_status() {
        let unavailable = SessionError::Store(StoreError::unavailable("down"));
        assert_eq!(unavailable.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let rejected = SessionError::Store(StoreError::rejected("NUL"));
        assert_eq!(rejected.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            SessionError::Finished.status(),
            http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
