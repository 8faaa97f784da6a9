//! Sessions that follow an identity provider (OWASP ASVS 5.0 7.6.1): a
//! login's own absolute deadline, and the link to the provider's session
//! that a back-channel logout ends by
//! ([`SessionAdmin::end_external_session`](crate::SessionAdmin::end_external_session)).

use serde_json::Value;
use time::OffsetDateTime;

use super::Session;
use crate::clock::truncate_to_seconds;
use crate::error::SessionError;
use crate::store::SessionRecord;

/// The data key the provider's session ID is kept under.
const EXTERNAL_SESSION_KEY: &str = "_external_session";

impl Session {
    /// Ends the logged-in session at `deadline` at the latest, however
    /// active it is: its absolute deadline becomes the earlier of the one
    /// it has and `deadline`, never a later one. For a login through an
    /// identity provider whose session ends sooner than the layer's
    /// [`absolute_timeout`](crate::SessionLayerBuilder::absolute_timeout)
    /// (the ID token's `exp`, or the provider's session lifetime): call it
    /// in the request that logs in, after [`Session::login`].
    ///
    /// The deadline holds for the rest of the request and beyond:
    /// [`Session::remember_me`] (before or after it) and a further login in
    /// the same request do not lengthen it, [`Session::regenerate`] keeps
    /// it, and a persistent cookie's `Max-Age` ends with it. A later login
    /// in another request starts a new lifetime, with the layer's
    /// deadline: call this again there. In a request that did not log in,
    /// it shortens the stored session's deadline in the same way (an
    /// update-only save when the response goes out). Stores keep whole
    /// seconds: the deadline is rounded down to one.
    ///
    /// A deadline that has already passed ends the session now, as
    /// [`Session::invalidate`] does: the response expires the cookie.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoggedIn`] for an anonymous session (an
    /// anonymous session's lifetime is never a login's), and
    /// [`SessionError::Store`] when the session cannot be loaded or ended.
    ///
    /// # Example
    ///
    /// ```
    /// use cloakroom::{Session, SessionError};
    /// use time::OffsetDateTime;
    ///
    /// // After the app verified the provider's ID token with its OIDC library:
    /// async fn provider_callback(
    ///     session: Session,
    ///     subject: String,
    ///     provider_session: String,
    ///     token_expires: OffsetDateTime,
    /// ) -> Result<(), SessionError> {
    ///     session.login_keeping(subject, &[]).await?;
    ///     session.expire_login_at(token_expires).await?;
    ///     session.link_external_session(&provider_session).await
    /// }
    /// ```
    pub async fn expire_login_at(&self, deadline: OffsetDateTime) -> Result<(), SessionError> {
        let deadline = truncate_to_seconds(deadline);
        let mut active = self.active().await?;
        if active.record.user_id.is_none() {
            return Err(SessionError::NotLoggedIn);
        }
        if deadline <= self.core().now() {
            drop(active);
            return self.invalidate().await;
        }
        active.deadline_cap = Some(
            active
                .deadline_cap
                .map_or(deadline, |cap| cap.min(deadline)),
        );
        active.apply_deadline_cap();
        Ok(())
    }

    /// Links the logged-in session to the identity provider's session
    /// `external_id` (OpenID Connect's `sid`), so that
    /// [`SessionAdmin::end_external_session`](crate::SessionAdmin::end_external_session)
    /// ends it when the provider announces that session's logout
    /// (back-channel logout). Call it in the request that logs in, after
    /// [`Session::login`]; linking again replaces the link.
    ///
    /// The link is kept in the session's data, under the reserved key
    /// `_external_session` (listed by [`Session::keys`], as the other
    /// reserved keys are). It moves with the session through
    /// [`Session::regenerate`] and a later login of the same user that
    /// carries the data over ([`Session::login`]); a login as another user
    /// or one that keeps nothing ([`Session::login_keeping`] without the
    /// key) drops it.
    ///
    /// # Security
    ///
    /// [`Session::clear`] removes the link with the rest of the data: the
    /// session then no longer ends with the provider's session (its
    /// deadline from [`Session::expire_login_at`] still holds). Link it
    /// again after clearing, or remove single keys instead.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoggedIn`] for an anonymous session,
    /// [`SessionError::Unstorable`] for an ID with a NUL character, and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn link_external_session(&self, external_id: &str) -> Result<(), SessionError> {
        if self.user_id().await?.is_none() {
            return Err(SessionError::NotLoggedIn);
        }
        self.insert(EXTERNAL_SESSION_KEY, external_id).await
    }
}

/// Whether `record` is linked to the provider's session `external_id`
/// ([`Session::link_external_session`]).
pub(crate) fn is_linked_to(record: &SessionRecord, external_id: &str) -> bool {
    matches!(
        record.data.get(EXTERNAL_SESSION_KEY),
        Some(Value::String(linked)) if linked == external_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_record_is_linked_only_to_the_exact_external_id_it_holds() {
        let mut record = SessionRecord::new(
            OffsetDateTime::UNIX_EPOCH,
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        assert!(!is_linked_to(&record, "sid-1"), "nothing linked");
        record
            .data
            .insert(EXTERNAL_SESSION_KEY.into(), Value::from("sid-1"));
        assert!(is_linked_to(&record, "sid-1"));
        assert!(!is_linked_to(&record, "sid-10"));
        assert!(!is_linked_to(&record, "SID-1"));
        assert!(!is_linked_to(&record, ""));
        record
            .data
            .insert(EXTERNAL_SESSION_KEY.into(), Value::from(1));
        assert!(!is_linked_to(&record, "1"), "only a string links");
    }
}
