//! [`Session`]: the handle handlers use to read and change their session.
//!
//! # Example
//!
//! ```
//! use cloakroom::{Session, SessionError};
//!
//! async fn visit(session: Session) -> Result<String, SessionError> {
//!     let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
//!     session.insert("visits", visits).await?;
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! async fn login(session: Session, user_id: String) -> Result<(), SessionError> {
//!     // A fresh ID when the response goes out; the old one stops working.
//!     session.login(user_id).await
//! }
//! ```

mod commit;
mod flash;
mod lifecycle;
mod provider;
mod state;
mod watch;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

pub(crate) use self::commit::{Abort, CookieAction, Finish, Outcome, Plan};
pub use self::flash::{Flash, FlashLevel};
#[cfg(feature = "csrf")]
pub(crate) use self::lifecycle::TokenPurpose;
pub(crate) use self::lifecycle::{end_following_forwards, most_recent_first};
pub(crate) use self::provider::is_linked_to;
use self::state::check_storable;
pub use self::state::Session;
use crate::error::SessionError;

impl Session {
    /// The value under `key`, deserialized as `T`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded, and
    /// [`SessionError::Deserialize`] when the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let active = self.active().await?;
        match active.record.data.get(key) {
            None => Ok(None),
            Some(value) => deserialize(key, value).map(Some),
        }
    }

    /// The raw JSON value under `key`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, SessionError> {
        Ok(self.active().await?.record.data.get(key).cloned())
    }

    /// Stores `value` under `key`.
    ///
    /// The first insert into a new session creates it (and sets the cookie)
    /// when the response goes out. On a session the request has not read
    /// yet, the insert is a *blind write*: nothing is loaded, and the
    /// response sends it as one update-only save (which also rolls the idle
    /// deadline); if the session turns out to be gone, a new one is created
    /// with the write. On a session already read, inserting the value that
    /// is already there writes nothing.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be turned into JSON,
    /// [`SessionError::Unstorable`] when the key or value holds what no
    /// store can keep (a NUL character, nesting deeper than 64 levels), and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| SessionError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        check_storable(key, &value)?;
        let value = match self
            .write_blind(|patch, value| patch.insert(key, value), value)
            .await
        {
            None => return Ok(()),
            Some(value) => value,
        };
        let mut active = self.active().await?;
        if active.record.data.get(key) != Some(&value) {
            active.set(key, value);
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn remove(&self, key: &str) -> Result<bool, SessionError> {
        Ok(self.active().await?.unset(key).is_some())
    }

    /// Removes `key` and returns its value as a `T`. If the value is not a
    /// `T`, nothing is removed.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the value is not a `T`, and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut active = self.active().await?;
        let value = match active.record.data.get(key) {
            None => return Ok(None),
            Some(value) => deserialize(key, value)?,
        };
        active.unset(key);
        Ok(Some(value))
    }

    /// Removes every data key. The user stays logged in; to log out, use
    /// [`Session::invalidate`]. Like [`Session::insert`], a blind write on a
    /// session not read yet.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn clear(&self) -> Result<(), SessionError> {
        if self
            .write_blind(|patch, ()| patch.clear_data(), ())
            .await
            .is_none()
        {
            return Ok(());
        }
        let mut active = self.active().await?;
        if active.record.data.is_empty() && active.patch.set.is_empty() {
            return Ok(());
        }
        active.record.data.clear();
        if active.stored.is_some() {
            active.patch.clear_data();
        }
        Ok(())
    }

    /// The data keys, in sorted order.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        Ok(self.active().await?.record.data.keys().cloned().collect())
    }

    /// The logged-in user, if any.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        Ok(self.active().await?.record.user_id.clone())
    }

    /// When the session expires unless used again; `None` for a session
    /// that is not stored and will not be.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn expires_at(&self) -> Result<Option<OffsetDateTime>, SessionError> {
        let active = self.active().await?;
        Ok((active.stored.is_some() || active.has_content()).then(|| active.record.expires_at()))
    }
}

fn deserialize<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, SessionError> {
    T::deserialize(value).map_err(|source| SessionError::Deserialize {
        key: key.to_owned(),
        source,
    })
}
