//! Where a request's outcome enters the statistics (and the `request` event): one place for the HTTP client, the
//! deferred `catch_response` verdicts and custom clients alike. It depends on the environment only, so the client
//! and the user both use it without depending on each other (data flows one way: user -> client -> recorder ->
//! stats).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::environment::Environment;
use crate::events::RequestEvent;

/// Records the samples of one user type.
pub(crate) struct Recorder {
    /// The user type's name (for the `request` event).
    pub(crate) name: Arc<str>,
    pub(crate) env: Arc<Environment>,
}

impl Recorder {
    /// Record one sample and fire the `request` event (only when someone listens).
    pub(crate) fn sample(
        &self,
        method: &str,
        name: &str,
        response_time: Duration,
        content_length: u64,
        error: Option<&str>,
        finished_at: Instant,
    ) {
        self.env.stats.record(&cicada_stats::Sample {
            method,
            name,
            response_time,
            content_length,
            error,
            finished_at,
        });
        if self.env.events.has_request_listeners() {
            self.env.events.fire_request(&RequestEvent {
                method,
                name,
                response_time,
                content_length,
                error,
                user_type: &self.name,
            });
        }
    }

    /// Count a request whose response never came because the future sending it was dropped (its user was
    /// stopped, or its task gave up on it): see [`cicada_stats::Stats::record_cut_off`]. Not a failure, and no
    /// `request` event: the server did not fail it, the generator stopped waiting.
    pub(crate) fn cut_off(&self) {
        self.env.stats.record_cut_off();
    }
}
