//! Flash messages in axum pages: the [`Flashes`] extractor.
//!
//! A handler leaves a message for the next page with
//! [`Session::flash`](crate::Session::flash) (typically before a redirect),
//! as a [`Flash`](crate::Flash) of some [`FlashLevel`](crate::FlashLevel);
//! the page after takes the waiting messages, once. [`Flashes`] takes them
//! in one argument, as
//! [`Session::take_flashes`](crate::Session::take_flashes) does, so that
//! the handler of a page with a layout needs nothing else from the session
//! to show them.
//!
//! ```
//! use axum::response::{Html, Redirect};
//! use axum::{routing::get, routing::post, Router};
//! use cloakroom::flash::Flashes;
//! use cloakroom::{FlashLevel, Session, SessionError};
//!
//! async fn save(session: Session) -> Result<Redirect, SessionError> {
//!     // ... save the settings, then:
//!     session.flash(FlashLevel::Success, "Settings saved.").await?;
//!     Ok(Redirect::to("/settings"))
//! }
//!
//! async fn settings(Flashes(messages): Flashes) -> Html<String> {
//!     // Escape the text before it goes into HTML.
//!     let notices: Vec<String> = messages
//!         .iter()
//!         .map(|flash| format!("<p class=\"{}\">{}</p>", flash.level.as_str(), flash.message))
//!         .collect();
//!     Html(format!("<!doctype html>{}<form method=post>...</form>", notices.join("")))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/settings", get(settings))
//!     .route("/settings/save", post(save));
//! ```

pub use crate::axum::Flashes;
