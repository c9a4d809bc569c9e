//! Panics inside tasks: caught, turned into user errors with their location, and kept off stderr.
//!
//! A task that panics must not take the run down, and the default hook's "thread panicked at" line per panic would
//! flood the console while a bug repeats thousands of times. A process-wide hook (installed once) remembers the
//! panic's location (and, with `RUST_BACKTRACE=1`, a backtrace) when the panic happens inside a task poll and stays
//! silent; any other panic goes to the previous hook unchanged.

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    static POLLING_TASK: Cell<bool> = const { Cell::new(false) };
    static LAST_LOCATION: RefCell<String> = const { RefCell::new(String::new()) };
    static LAST_BACKTRACE: RefCell<Option<Backtrace>> = const { RefCell::new(None) };
}

fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if POLLING_TASK.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                LAST_LOCATION.with(|last| *last.borrow_mut() = location);
                // Disabled (and nearly free) unless RUST_BACKTRACE / RUST_LIB_BACKTRACE asks for it.
                let backtrace = Backtrace::capture();
                LAST_BACKTRACE.with(|last| *last.borrow_mut() = Some(backtrace));
            } else {
                previous(info);
            }
        }));
    });
}

/// A caught panic: its message and where it happened.
pub(crate) struct CaughtPanic {
    pub(crate) message: String,
    pub(crate) location: String,
    /// Where the panic came from, when backtraces are on.
    pub(crate) backtrace: Option<Backtrace>,
}

/// Polls a task future, catching panics.
pub(crate) struct CatchPanic<F> {
    inner: F,
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F) -> Self {
        install_hook();
        CatchPanic { inner }
    }
}

struct PollingGuard;

impl Drop for PollingGuard {
    fn drop(&mut self) {
        POLLING_TASK.with(|flag| flag.set(false));
    }
}

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, CaughtPanic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        POLLING_TASK.with(|flag| flag.set(true));
        let guard = PollingGuard;
        let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.inner).poll(cx)));
        drop(guard);
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => {
                let message = if let Some(text) = payload.downcast_ref::<&str>() {
                    (*text).to_string()
                } else if let Some(text) = payload.downcast_ref::<String>() {
                    text.clone()
                } else {
                    "panic with a non-string payload".to_string()
                };
                let location = LAST_LOCATION.with(|last| std::mem::take(&mut *last.borrow_mut()));
                let backtrace = LAST_BACKTRACE.with(|last| last.borrow_mut().take());
                Poll::Ready(Err(CaughtPanic {
                    message,
                    location,
                    backtrace,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_value_with_location() {
        let caught = CatchPanic::new(Box::pin(async {
            panic!("boom {}", 7);
        }))
        .await;
        let panic = caught.expect_err("the panic is caught");
        assert_eq!(panic.message, "boom 7");
        assert!(panic.location.contains("panic.rs"), "{}", panic.location);
        let fine = CatchPanic::new(Box::pin(async { 5 })).await;
        assert_eq!(fine.ok(), Some(5));
    }
}
