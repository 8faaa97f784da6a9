//! [`Session::watch`]: a handle that resolves when this session ends.

use super::state::Session;
use crate::error::SessionError;
use crate::watch::{Ended, SessionWatch};

impl Session {
    /// A [`SessionWatch`] that resolves when this session ends, for a
    /// WebSocket or an event stream that must close then (see the
    /// [`watch`](crate::watch) module): a logout or revocation anywhere, a
    /// move to a new ID, its deadline.
    ///
    /// Watch a session that is stored and stays under this request's
    /// cookie. A session that is not stored (a visitor with no session, a
    /// new session this request creates) or that this request moves to a
    /// new ID (a login, [`regenerate`](Session::regenerate)) or ends gives
    /// a watch that has ended already: make the stream in a later request.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn watch(&self) -> Result<SessionWatch, SessionError> {
        let (key, user, deadline) = {
            let active = self.active().await?;
            match (&active.stored, &active.new_id, active.ending) {
                (Some((_, key)), None, false) => (
                    *key,
                    active.record.user_id.clone(),
                    active.record.expires_at(),
                ),
                _ => return Ok(SessionWatch::done(Ended::Revoked)),
            }
        };
        Ok(self.core().watches().watch(key, user, deadline).await)
    }
}
