//! [`Core`]: what a layer, its services, its sessions and its admin handle
//! share — the store (with the layer's time limit) and the validated
//! settings.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use time::OffsetDateTime;

use crate::clock::truncate_to_seconds;
use crate::config::SessionConfig;
#[cfg(feature = "axum")]
use crate::events::RateLimit;
use crate::store::DynStore;
use crate::watch::Hub;

/// The most sessions one listing returns: the most recently created ones.
pub(crate) const LIST_LIMIT: usize = 1000;

/// What a layer, its services, its sessions and its admin handle share.
pub(crate) struct Core {
    pub(crate) store: Arc<dyn DynStore>,
    pub(crate) config: SessionConfig,
    /// Requests need no more checking for plain http: the warning about a
    /// `Secure` cookie sent over it was given (once per layer is enough to
    /// be seen, and not so often as to flood), or a request came over https
    /// (the app is deployed behind TLS, where the warning is moot). Saves
    /// every later request the header lookups.
    pub(crate) plain_http_settled: AtomicBool,
    /// Pages served as anonymous during a store outage: logged at most
    /// once per interval, not once per page, while the outage lasts.
    #[cfg(feature = "axum")]
    pub(crate) outage_log: RateLimit,
    /// The warning about unsafe requests from browsers that no CSRF check
    /// saw was given (once per layer is enough to be seen).
    pub(crate) csrf_missing_warned: AtomicBool,
    /// The register of open session watches, made with the first one.
    watches: OnceLock<Arc<Hub>>,
}

impl Core {
    pub(crate) fn new(store: Arc<dyn DynStore>, config: SessionConfig) -> Self {
        Self {
            store,
            config,
            plain_http_settled: AtomicBool::new(false),
            #[cfg(feature = "axum")]
            outage_log: RateLimit::new(),
            csrf_missing_warned: AtomicBool::new(false),
            watches: OnceLock::new(),
        }
    }

    /// How many watches are open (none before the first).
    pub(crate) fn open_watches(&self) -> usize {
        self.watches.get().map_or(0, |hub| hub.open_watches())
    }

    /// The layer's register of session watches.
    pub(crate) fn watches(&self) -> &Arc<Hub> {
        self.watches.get_or_init(|| {
            Arc::new(Hub::new(
                Arc::clone(&self.store),
                Arc::clone(&self.config.clock),
                self.config.touch_after,
            ))
        })
    }

    /// The layer clock's time in whole seconds, the precision every store
    /// keeps.
    pub(crate) fn now(&self) -> OffsetDateTime {
        truncate_to_seconds(self.config.clock.now())
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
