//! The one response body type the server uses: a buffer sent either once or
//! repeated up to a length, so multi-megabyte `/bytes` responses stream from a
//! small static pattern instead of allocating per request.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A response body of exactly `remaining` bytes, sent as slices of `chunk`.
#[derive(Debug)]
pub(crate) struct DemoBody {
    chunk: Bytes,
    remaining: usize,
}

impl DemoBody {
    /// Sends `data` as it is.
    pub(crate) fn full(data: impl Into<Bytes>) -> Self {
        let chunk = data.into();
        let remaining = chunk.len();
        Self { chunk, remaining }
    }

    /// Sends `len` bytes made of `pattern` repeated (last copy truncated).
    pub(crate) fn repeat(pattern: &'static [u8], len: usize) -> Self {
        Self {
            chunk: Bytes::from_static(pattern),
            remaining: len,
        }
    }
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let take = this.remaining.min(this.chunk.len());
        if take == 0 {
            // Also covers an empty pattern, which could otherwise never finish.
            this.remaining = 0;
            return Poll::Ready(None);
        }
        this.remaining -= take;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 || self.chunk.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact, so hyper sends Content-Length rather than chunked encoding.
        let len = if self.chunk.is_empty() {
            0
        } else {
            self.remaining
        };
        SizeHint::with_exact(len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: DemoBody) -> Vec<u8> {
        match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn full_sends_data_once() {
        let body = DemoBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(collect(body).await, b"hello");
        assert!(DemoBody::full("").is_end_stream());
    }

    #[tokio::test]
    async fn repeat_truncates_to_length() {
        static PATTERN: [u8; 4] = *b"abcd";
        let body = DemoBody::repeat(&PATTERN, 10);
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(collect(body).await, b"abcdabcdab");
        assert_eq!(collect(DemoBody::repeat(&[], 10)).await, b"");
    }
}
