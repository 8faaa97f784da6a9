//! Flash messages: one-shot notices carried in the session to the next
//! page ("Signed in.", "Your password was changed.").

use serde::{Deserialize, Serialize};

use super::Session;
use crate::error::SessionError;

/// The data key flash messages wait under: [`Flash::SESSION_KEY`].
const FLASH_KEY: &str = "_flash";

/// How much a [`Flash`] matters, for styling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FlashLevel {
    /// Something the user may like to know.
    Info,
    /// An action worked.
    Success,
    /// Something needs attention.
    Warning,
    /// An action failed.
    Error,
}

impl FlashLevel {
    /// The level's name in lower case (`"success"`), e.g. for a CSS class.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Success => "success",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// A one-shot message for the next page the session's browser sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// How much it matters.
    pub level: FlashLevel,
    /// The text, as given (escape it when rendering HTML).
    pub message: String,
}

impl Flash {
    /// The data key messages wait under in the session. It shows in
    /// [`Session::keys`]; [`Session::clear`] drops waiting messages with
    /// the rest of the data.
    pub const SESSION_KEY: &'static str = FLASH_KEY;
}

/// At most this many messages wait at once; adding more drops the oldest,
/// so a loop that flashes cannot grow the session without bound.
const MAX_WAITING: usize = 16;

impl Session {
    /// Leaves a message for the next page that calls
    /// [`Session::take_flashes`] (typically the page a form redirects to).
    /// Messages wait in the session (under [`Flash::SESSION_KEY`]), so this writes
    /// to the store when the response goes out, and for a visitor without
    /// one it starts a session. Set it after [`Session::login`] or
    /// [`Session::invalidate`] in the same request, so that it lands in the
    /// session the browser keeps.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded, and
    /// [`SessionError::Unstorable`] for text no store can hold (a NUL
    /// character).
    pub async fn flash(
        &self,
        level: FlashLevel,
        message: impl Into<String>,
    ) -> Result<(), SessionError> {
        let mut waiting = self.waiting_flashes().await?;
        if waiting.len() == MAX_WAITING {
            waiting.remove(0);
        }
        waiting.push(Flash {
            level,
            message: message.into(),
        });
        self.insert(FLASH_KEY, waiting).await
    }

    /// The messages left for this page, oldest first, which are then gone:
    /// the next page does not see them again. With none waiting, nothing
    /// is written (and a visitor without a session costs no store call).
    /// In axum, the [`Flashes`](crate::flash::Flashes) extractor does the
    /// same in a handler's arguments.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the session cannot be loaded.
    pub async fn take_flashes(&self) -> Result<Vec<Flash>, SessionError> {
        let Some(value) = self.get_value(FLASH_KEY).await? else {
            return Ok(Vec::new());
        };
        self.remove(FLASH_KEY).await?;
        // Something else under the key (written by hand, say) is dropped
        // as if it were no messages.
        Ok(serde_json::from_value(value).unwrap_or_default())
    }

    /// The waiting messages, left where they are. Something else under the
    /// key (written by hand, or by an older version) counts as none.
    async fn waiting_flashes(&self) -> Result<Vec<Flash>, SessionError> {
        Ok(self
            .get_value(FLASH_KEY)
            .await?
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_have_stable_lower_case_names_matching_their_json() {
        for (level, name) in [
            (FlashLevel::Info, "info"),
            (FlashLevel::Success, "success"),
            (FlashLevel::Warning, "warning"),
            (FlashLevel::Error, "error"),
        ] {
            assert_eq!(level.as_str(), name);
            assert_eq!(serde_json::to_value(level).unwrap(), name);
        }
    }
}
