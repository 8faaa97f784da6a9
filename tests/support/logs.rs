//! Captures everything the crate logs during a test.
//!
//! One subscriber is installed for the whole test binary, the first time a
//! test captures, and stays: it hands each event to the capture of the
//! thread that emitted it, if that thread is capturing, and drops it
//! otherwise. A subscriber set per test instead (`set_default`) would make
//! tracing rebuild its per-callsite interest cache whenever another test
//! starts or stops capturing, which loses events while tests run side by
//! side; with one subscriber that never goes away, capturing is reliable
//! however many tests run at once.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex, Once};

use tracing::subscriber::Interest;
use tracing::Metadata;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::Layer as _;

thread_local! {
    /// Where this thread's events go while it captures.
    static CAPTURE: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Log output collected since [`capture`] was called.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// Writes to the capture of the thread that writes, if any.
struct ThisThread;

impl io::Write for ThisThread {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(captured) = capture.borrow().as_ref() {
                captured
                    .0
                    .lock()
                    .expect("log buffer")
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ends the capture of the thread that started it when dropped.
pub(crate) struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Lets an event through when the thread that emits it is capturing.
/// Asked for every event: its answer is never cached per callsite.
struct WhileCapturing;

impl<S> Filter<S> for WhileCapturing {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        CAPTURE.with(|capture| capture.borrow().is_some())
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// Captures every event at every level on this thread until the guard
/// drops. Use with a current-thread runtime (`#[tokio::test]`'s default),
/// so that the tasks of the test run on this thread too.
pub(crate) fn capture() -> (Captured, CaptureGuard) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(|| ThisThread)
            .with_filter(WhileCapturing);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the tests");
    });
    let captured = Captured::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(captured.clone()));
    (captured, CaptureGuard(()))
}
