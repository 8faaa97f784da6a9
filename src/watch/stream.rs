//! [`UntilEnded`]: a stream that ends with its session.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::{Ended, SessionWatch};

/// A stream that ends when its session does, with one last item; made by
/// [`SessionWatch::until_ended`].
pub struct UntilEnded<S, F> {
    // Boxed, so that any stream (an `async` block's, say) will do.
    stream: Pin<Box<S>>,
    watch: SessionWatch,
    last: Option<F>,
}

impl<S, F> UntilEnded<S, F> {
    pub(super) fn new(watch: SessionWatch, stream: S, last: F) -> Self {
        Self {
            stream: Box::pin(stream),
            watch,
            last: Some(last),
        }
    }
}

// Nothing of it is pinned in place: the stream is boxed (pinned on the
// heap), and `last` is only moved out whole, never pinned.
impl<S, F> Unpin for UntilEnded<S, F> {}

impl<S, F> Stream for UntilEnded<S, F>
where
    S: Stream,
    F: FnOnce(Ended) -> S::Item,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let Some(last) = this.last.take() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(ended) = this.watch.poll_ended(cx) {
            return Poll::Ready(Some(last(ended)));
        }
        this.last = Some(last);
        match this.stream.as_mut().poll_next(cx) {
            Poll::Ready(None) => {
                // The stream ended first: nothing more to say.
                this.last = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl<S, F> fmt::Debug for UntilEnded<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilEnded")
            .field("watch", &self.watch)
            .field("ended", &self.last.is_none())
            .finish_non_exhaustive()
    }
}
