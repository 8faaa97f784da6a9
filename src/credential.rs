//! Sessions bound to the credential their login saw, and the record of the
//! user's last password confirmation (for re-authentication).
//!
//! A login records a keyed digest of the user's credential fingerprint (a
//! password hash, a security stamp) in the session; whoever loads the
//! user later ([`CurrentUser`](crate::login::CurrentUser)) compares it with
//! the user's current fingerprint, and a session whose credential changed
//! since is ended in the store. The digest is an HMAC-SHA256 under the
//! layer's signing keys (every key in the ring is tried, so keys rotate
//! without logging anyone out), so a store dump shows nothing of the
//! credential. This is the one part of the login feature that needs the
//! keys, which is why it lives outside `session/`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::SessionError;
use crate::session::Session;

/// The data key the credential digest is kept under.
const CREDENTIAL_KEY: &str = "_credential";
/// The data key of the last password confirmation (Unix seconds).
const CONFIRMED_KEY: &str = "_password_confirmed";
/// Domain separation: a digest made for a credential means nothing
/// anywhere else the same key is used (cookies, CSRF tokens).
const CREDENTIAL_CONTEXT: &[u8] = b"cloakroom/credential/v1\0";

impl Session {
    /// Binds this session to the logged-in user's credential: call it in
    /// the request that logs the user in with a password (after
    /// [`Session::login`]), with a fingerprint that changes whenever the
    /// credential does (the password hash itself, or a security stamp).
    ///
    /// From then on, [`CurrentUser`](crate::login::CurrentUser) compares
    /// it with what [`LoadUser::credential`](crate::login::LoadUser::credential)
    /// gives for the user on every request that loads the user, and ends
    /// the session (in the store, not only for this request) when they
    /// differ: a password changed elsewhere, an operator's reset. Only a
    /// keyed digest is kept; nothing of `credential` can be read back from
    /// the store.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoggedIn`] for an anonymous session, and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn bind_credential(&self, credential: impl AsRef<[u8]>) -> Result<(), SessionError> {
        if self.user_id().await?.is_none() {
            return Err(SessionError::NotLoggedIn);
        }
        let keys = &self.context().settings().keys;
        let digest = keys.tag(CREDENTIAL_CONTEXT, credential.as_ref());
        self.insert(CREDENTIAL_KEY, URL_SAFE_NO_PAD.encode(digest))
            .await
    }

    /// The logged-in user changed their credential in this request (a
    /// password change): binds this session to the new one and ends every
    /// other session of the user, at once and on every store. Returns how
    /// many ended. (Sessions bound to the old credential would also end at
    /// their next request that loads the user; this ends them now, also
    /// for routes that only ask [`LoggedIn`](crate::login::LoggedIn).)
    ///
    /// # Errors
    ///
    /// As [`Session::bind_credential`] and
    /// [`Session::logout_other_devices`].
    pub async fn credential_changed(
        &self,
        credential: impl AsRef<[u8]>,
    ) -> Result<u64, SessionError> {
        self.bind_credential(credential).await?;
        self.logout_other_devices().await
    }

    /// Records that the logged-in user proved their password in this
    /// request (at login, or on a "confirm your password" page), for the
    /// routes that take [`Reauthenticated`](crate::login::Reauthenticated).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoggedIn`] for an anonymous session, and
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn password_confirmed(&self) -> Result<(), SessionError> {
        if self.user_id().await?.is_none() {
            return Err(SessionError::NotLoggedIn);
        }
        let now = self.context().now().unix_timestamp();
        self.insert(CONFIRMED_KEY, now).await
    }
}

/// Whether the session may go on as a user whose credential fingerprint is
/// `credential`: an empty one binds nothing (the app does not use binding
/// for this user); otherwise the session must carry the digest of exactly
/// this credential, under any key of the ring. A session without one (its
/// login did not bind it) does not.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) async fn bound_to(session: &Session, credential: &[u8]) -> Result<bool, SessionError> {
    if credential.is_empty() {
        return Ok(true);
    }
    let Some(recorded) = session.get::<String>(CREDENTIAL_KEY).await? else {
        return Ok(false);
    };
    let Ok(digest) = URL_SAFE_NO_PAD.decode(recorded) else {
        return Ok(false);
    };
    let keys = &session.context().settings().keys;
    Ok(keys.verifies(CREDENTIAL_CONTEXT, credential, &digest))
}

/// Whether the session's user confirmed their password within the layer's
/// re-authentication window.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) async fn confirmed_recently(session: &Session) -> Result<bool, SessionError> {
    let Some(confirmed) = session.get::<i64>(CONFIRMED_KEY).await? else {
        return Ok(false);
    };
    let context = session.context();
    let window =
        i64::try_from(context.settings().reauthentication_window.as_secs()).unwrap_or(i64::MAX);
    let age = context.now().unix_timestamp().saturating_sub(confirmed);
    // A confirmation from the future (a clock set back) counts as now.
    Ok(age < window)
}
