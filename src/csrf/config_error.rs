//! [`ConfigError`]: CSRF settings that cannot work.

use std::fmt;

/// CSRF settings that cannot work, reported by
/// [`CsrfLayerBuilder::build`](crate::csrf::CsrfLayerBuilder::build). Each variant carries the value given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The header name is not a valid HTTP header name.
    InvalidHeaderName(String),
    /// The form field name is empty.
    EmptyFieldName,
    /// An exempt path does not start with `/`.
    InvalidExemptPath(String),
    /// An exempt prefix does not start with `/`.
    InvalidExemptPrefix(String),
    /// A trusted origin is not `scheme://host[:port]`.
    InvalidTrustedOrigin(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidHeaderName(name) => {
                write!(f, "CSRF header name {name:?} is not a valid header name")
            }
            Self::EmptyFieldName => f.write_str("the CSRF form field name is empty"),
            Self::InvalidExemptPath(path) => {
                write!(f, "CSRF-exempt path {path:?} must start with '/'")
            }
            Self::InvalidExemptPrefix(prefix) => {
                write!(f, "CSRF-exempt prefix {prefix:?} must start with '/'")
            }
            Self::InvalidTrustedOrigin(origin) => write!(
                f,
                "trusted origin {origin:?} must be scheme://host[:port], with no path"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
