//! Per-thread scratch buffers for the client's streams: where a poll reads, decrypts or encodes bytes it hands on
//! before it returns, so that a connection keeps on the heap only what outlives the poll.
//!
//! A user's task is polled on one runtime thread at a time and a poll never waits, so one buffer per thread serves
//! every connection on it. [`crate::client::tls`] reads and writes records through two; HTTP/1.1 reads a response
//! it holds no buffer for through a third ([`crate::client::h1`]).

use std::cell::RefCell;
use std::thread::LocalKey;

/// Runs `work` on `len` bytes of this thread's scratch buffer, allocated on first use and kept for the thread's
/// life. Polls are synchronous, so no borrow outlives one poll; should the buffer be in use anyway (a stream
/// polled from inside another's poll) or the thread be exiting, a temporary buffer serves instead.
pub(super) fn with_scratch<R>(
    scratch: &'static LocalKey<RefCell<Box<[u8]>>>,
    len: usize,
    mut work: impl FnMut(&mut [u8]) -> R,
) -> R {
    let shared = scratch.try_with(|cell| {
        let mut buffer = cell.try_borrow_mut().ok()?;
        if buffer.len() < len {
            *buffer = vec![0; len].into_boxed_slice();
        }
        Some(work(&mut buffer[..len]))
    });
    match shared {
        Ok(Some(result)) => result,
        _ => work(&mut vec![0; len]),
    }
}
