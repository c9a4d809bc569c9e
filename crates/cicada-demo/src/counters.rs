//! Lock-free request and connection counters that tests and benchmarks read
//! while the server runs, plus the [`Route`] names they are keyed by.

use std::sync::atomic::{AtomicU64, Ordering};

/// A route of the demo app, as counted by [`DemoCounters::route`].
///
/// ```
/// use cicada_demo::Route;
///
/// assert_eq!(Route::ALL.len(), 15);
/// assert_eq!(format!("{:?}", Route::Fast), "Fast");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /`: the HTML home page.
    Index,
    /// `GET /fast`: an immediate `ok`.
    Fast,
    /// `GET /slow?ms=N`: a fixed delay before answering.
    Slow,
    /// `GET /fail`: always 500.
    Fail,
    /// `GET /status/{code}`: answers with the requested status.
    Status,
    /// `POST /login`: issues a session cookie.
    Login,
    /// `GET /account`: requires a session cookie.
    Account,
    /// `POST /logout`: forgets the session.
    Logout,
    /// `GET /items/{id}`: one item as JSON.
    Item,
    /// `GET /items`: the item list as JSON.
    Items,
    /// `POST /cart`: echoes a JSON body back with 201.
    Cart,
    /// `GET /redirect` and `GET /redirect/{n}`: redirect chains.
    Redirect,
    /// `GET /bytes/{n}`: a body of n bytes.
    Bytes,
    /// Any method on `/echo`: describes the request as JSON.
    Echo,
    /// Any path the app does not know.
    NotFound,
}

impl Route {
    /// Every route, in declaration order.
    ///
    /// ```
    /// use cicada_demo::Route;
    ///
    /// assert_eq!(Route::ALL[0], Route::Index);
    /// ```
    pub const ALL: [Route; 15] = [
        Route::Index,
        Route::Fast,
        Route::Slow,
        Route::Fail,
        Route::Status,
        Route::Login,
        Route::Account,
        Route::Logout,
        Route::Item,
        Route::Items,
        Route::Cart,
        Route::Redirect,
        Route::Bytes,
        Route::Echo,
        Route::NotFound,
    ];
}

/// Counts of what a [`DemoServer`](crate::DemoServer) saw, shared with the
/// running server and readable at any time.
///
/// A request is counted once its head has been parsed, before the response is
/// produced, so a client that received a response has always been counted.
///
/// ```
/// use cicada_demo::{DemoCounters, Route};
///
/// let counters = DemoCounters::default();
/// assert_eq!(counters.total(), 0);
/// assert_eq!(counters.route(Route::Echo), 0);
/// assert_eq!(counters.connections(), 0);
/// ```
#[derive(Debug, Default)]
pub struct DemoCounters {
    total: AtomicU64,
    connections: AtomicU64,
    per_route: [AtomicU64; Route::ALL.len()],
}

impl DemoCounters {
    /// Requests handled so far, on any route and with any status.
    ///
    /// ```
    /// assert_eq!(cicada_demo::DemoCounters::default().total(), 0);
    /// ```
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests handled so far on one route.
    ///
    /// ```
    /// use cicada_demo::{DemoCounters, Route};
    /// assert_eq!(DemoCounters::default().route(Route::Slow), 0);
    /// ```
    pub fn route(&self, route: Route) -> u64 {
        self.per_route[route as usize].load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far.
    ///
    /// ```
    /// assert_eq!(cicada_demo::DemoCounters::default().connections(), 0);
    /// ```
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Sets every counter back to zero, e.g. between test phases.
    ///
    /// ```
    /// let counters = cicada_demo::DemoCounters::default();
    /// counters.reset();
    /// assert_eq!(counters.total(), 0);
    /// ```
    pub fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        for count in &self.per_route {
            count.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_request(&self, route: Route) {
        // Relaxed suffices: the counts are independent tallies, and the
        // response travelling back to the client orders them before any read
        // the client makes afterwards.
        self.total.fetch_add(1, Ordering::Relaxed);
        self.per_route[route as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_indices_match_all_order() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, index);
        }
    }

    #[test]
    fn records_and_resets() {
        let counters = DemoCounters::default();
        counters.record_request(Route::Fast);
        counters.record_request(Route::Fast);
        counters.record_request(Route::NotFound);
        counters.record_connection();
        assert_eq!(counters.total(), 3);
        assert_eq!(counters.route(Route::Fast), 2);
        assert_eq!(counters.route(Route::NotFound), 1);
        assert_eq!(counters.connections(), 1);
        counters.reset();
        assert_eq!(counters.total(), 0);
        assert_eq!(counters.route(Route::Fast), 0);
        assert_eq!(counters.connections(), 0);
    }
}
