//! Deciding a response's outcome after the fact, as Locust's `catch_response=True` does.
//!
//! [`RequestBuilder::catch_response`](super::RequestBuilder::catch_response) makes `send` return a
//! [`CaughtResponse`] instead of recording the request at once. The task reads the response, may do other async
//! work, and then calls [`CaughtResponse::success`] or [`CaughtResponse::failure`]; that records the request, with
//! the response time measured when the response arrived. A caught response dropped without a verdict (the task
//! returned early, with `?` or a panic, or its user was stopped) is recorded at the drop by the usual rule. Either
//! way it is recorded exactly once.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use http::Method;

use super::{Recording, RequestBuilder, RequestError, Response};
use crate::recording::Recorder;

/// A request whose outcome the task decides after reading the response. Finish it with [`send`](Self::send).
#[must_use = "a request does nothing until it is sent with .send().await"]
pub struct CatchResponse<'a> {
    request: RequestBuilder<'a>,
}

impl<'a> CatchResponse<'a> {
    pub(super) fn new(request: RequestBuilder<'a>) -> Self {
        CatchResponse { request }
    }

    /// Send the request and read the response, without recording it yet.
    ///
    /// When no response arrives, the failure is recorded at once and a [`RequestError`] comes back, as with
    /// [`RequestBuilder::send`].
    pub async fn send(self) -> Result<CaughtResponse, RequestError> {
        let (response, pending) = self.request.send_recording(Recording::Later).await?;
        Ok(CaughtResponse { response, pending })
    }
}

/// What recording a caught response later takes (owned: the response outlives the request builder's borrows).
pub(super) struct Pending {
    pub(super) recorder: Arc<Recorder>,
    pub(super) method: Method,
    pub(super) name: String,
}

/// A response not recorded yet: call [`success`](Self::success) or [`failure`](Self::failure), or drop it to have
/// it recorded by its status. It reads like a [`Response`] (it dereferences to one).
///
/// ```
/// use cicada::prelude::*;
///
/// async fn checkout(user: &mut User) -> TaskResult {
///     let response = user.post("/cart").json(&serde_json::json!({ "item": 1 })).catch_response().send().await?;
///     let cart: serde_json::Value = response.json()?;
///     // Other async work may come in between: the time recorded is the response time.
///     cicada::tokio::task::yield_now().await;
///     if cart["items"].as_u64() == Some(0) {
///         response.failure("the cart stayed empty");
///     } else if response.status() == 409 {
///         response.success(); // a conflict is expected here
///     }
///     // Dropped without a verdict: recorded by its status.
///     Ok(())
/// }
/// # let _ = UserType::<()>::new("Shopper").task(checkout);
/// ```
pub struct CaughtResponse {
    response: Response,
    /// `None` once recorded.
    pending: Option<Pending>,
}

impl CaughtResponse {
    /// Record the request as a success, whatever its status, and return the response.
    pub fn success(mut self) -> Response {
        self.response.failure = None;
        self.record();
        std::mem::replace(&mut self.response, Response::empty())
    }

    /// Record the request as a failure with `reason`, whatever its status, and return the response.
    pub fn failure(mut self, reason: impl fmt::Display) -> Response {
        self.response.failure = Some(reason.to_string());
        self.record();
        std::mem::replace(&mut self.response, Response::empty())
    }

    fn record(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.recorder.sample(
                pending.method.as_str(),
                &pending.name,
                self.response.elapsed,
                self.response.content_length,
                self.response.failure.as_deref(),
                Instant::now(),
            );
        }
    }
}

impl Deref for CaughtResponse {
    type Target = Response;

    fn deref(&self) -> &Response {
        &self.response
    }
}

impl fmt::Debug for CaughtResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaughtResponse")
            .field("response", &self.response)
            .field("recorded", &self.pending.is_none())
            .finish()
    }
}

impl Drop for CaughtResponse {
    fn drop(&mut self) {
        self.record();
    }
}
