//! [`SessionLayer`]: the `tower::Layer` that gives every request a
//! [`Session`](crate::Session).
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use cloakroom::{Key, MemoryStore, Session, SessionLayer};
//!
//! async fn handler(session: Session) -> String {
//!     let n: u32 = session.get("n").await.ok().flatten().unwrap_or(0);
//!     format!("{n}")
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sessions = SessionLayer::builder(MemoryStore::new())
//!     .key(Key::generate()?)
//!     .build()?;
//! let app: Router = Router::new().route("/", get(handler)).layer(sessions);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tower_layer::Layer;

use crate::admin::SessionAdmin;
use crate::config::SessionLayerBuilder;
use crate::core::Core;
use crate::service::SessionService;
use crate::store::SessionStore;

/// Adds server-side sessions to a tower service.
///
/// Build one at startup with [`SessionLayer::builder`], then wrap an axum
/// `Router` (`.layer(...)`) or any tower service with it. Cloning is cheap;
/// clones share the store and settings.
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    core: Arc<Core>,
}

impl SessionLayer {
    /// Starts configuring a layer that keeps sessions in `store`.
    pub fn builder<S: SessionStore>(store: S) -> SessionLayerBuilder {
        SessionLayerBuilder::new(store)
    }

    pub(crate) fn from_core(core: Core) -> Self {
        let core = Arc::new(core);
        start_background_sweep(&core);
        Self { core }
    }

    #[cfg(test)]
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The session cookie's name, prefix included (`__Host-id` by
    /// default).
    pub fn cookie_name(&self) -> &str {
        &self.core.config.cookie.name
    }

    /// A handle for session management outside requests: logging a user
    /// out everywhere, listing their sessions, sweeping expired ones.
    pub fn admin(&self) -> SessionAdmin {
        SessionAdmin::new(self.core.clone())
    }
}

/// Sweeps the store every period it asks for, with the layer's clock, until
/// the layer and everything made from it are gone.
///
/// An in-process store's sweep completes without waiting, so it runs on a
/// plain thread: no tokio timer is needed. Other stores are swept from a
/// task on the tokio runtime the layer is built in, if any.
fn start_background_sweep(core: &Arc<Core>) {
    let Some(period) = core.store.sweeps_in_background() else {
        return;
    };
    let period = period.max(std::time::Duration::from_secs(1));
    let weak = Arc::downgrade(core);
    if core.store.in_process() {
        let spawned = std::thread::Builder::new()
            .name("cloakroom-sweep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(period);
                let Some(core) = weak.upgrade() else { return };
                let mut sweep = core.store.sweep_expired(core.now());
                let mut context = Context::from_waker(Waker::noop());
                if let Poll::Ready(result) = sweep.as_mut().poll(&mut context) {
                    crate::events::sweep(result);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(target: "cloakroom", %error, "could not start the background sweep");
        }
    } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(core) = weak.upgrade() else { return };
                crate::events::sweep(core.store.sweep_expired(core.now()).await);
            }
        });
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.core.clone())
    }
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.core.config)
            .finish()
    }
}
