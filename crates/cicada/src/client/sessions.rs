//! Each user's own TLS sessions, behind one TLS configuration per user type.
//!
//! A user resumes only the TLS sessions it made itself, as a browser does, so a new user pays a full handshake. rustls
//! keeps sessions in its configuration's store; a configuration per user (a clone of the type's with its own store)
//! cost each user about 550 bytes of configuration besides its sessions. Instead, users of a type share one
//! configuration whose store is a [`SessionRouter`]: while rustls works on a connection (its creation, and every
//! pass over received records, where TLS 1.3 tickets arrive after the handshake), the connection's
//! [`crate::client::tls::TlsStream`] makes its user's [`UserSessionStore`] the current one on the thread, and the
//! router hands rustls' calls to it. rustls calls the store only from inside those synchronous calls, on the thread
//! that makes them, so no other user's connection can be in between.

use std::cell::RefCell;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::{ClientSessionStore, Resumption};
use rustls::pki_types::ServerName;

thread_local! {
    /// The session store of the user whose connection rustls is working on, on this thread.
    static CURRENT: RefCell<Option<Arc<UserSessionStore>>> = const { RefCell::new(None) };
}

/// The type's configuration with the [`SessionRouter`] as its session store.
pub(crate) fn routed_config(config: &ClientConfig) -> ClientConfig {
    let mut routed = config.clone();
    routed.resumption = Resumption::store(Arc::new(SessionRouter));
    routed
}

/// Makes `sessions` the current store on this thread; returns the one it replaces, for [`leave`].
pub(crate) fn enter(sessions: Option<Arc<UserSessionStore>>) -> Option<Arc<UserSessionStore>> {
    CURRENT.with(|current| current.replace(sessions))
}

/// Puts back the store [`enter`] replaced; returns the one that was current, to be kept for the next time.
pub(crate) fn leave(previous: Option<Arc<UserSessionStore>>) -> Option<Arc<UserSessionStore>> {
    CURRENT.with(|current| current.replace(previous))
}

/// Hands rustls' session calls to the current user's store; without one (never the case for a routed connection),
/// it remembers nothing and finds nothing, which means full handshakes.
#[derive(Debug)]
struct SessionRouter;

fn with_current<R: Default>(action: impl FnOnce(&UserSessionStore) -> R) -> R {
    CURRENT.with(|current| current.borrow().as_deref().map(action).unwrap_or_default())
}

impl ClientSessionStore for SessionRouter {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        with_current(|store| store.set_kx_hint(server_name, group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        with_current(|store| store.kx_hint(server_name))
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        with_current(|store| store.set_tls12_session(server_name, value));
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        with_current(|store| store.tls12_session(server_name))
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        with_current(|store| store.remove_tls12_session(server_name));
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        with_current(|store| store.insert_tls13_ticket(server_name, value));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        with_current(|store| store.take_tls13_ticket(server_name))
    }
}

/// Origins whose TLS sessions one user keeps (as many as the origins it keeps connections to).
const USER_TLS_SESSION_ORIGINS: usize = 4;

/// TLS 1.3 tickets a user keeps per origin. A ticket is used once, and each connection brings new ones (servers send
/// one or two after the handshake); a user holds one connection per origin, so the newest ticket is the only one it
/// will use. Each ticket carries its own copy of the server's certificate chain (measured with heaptrack: about 700
/// bytes per ticket with a one-certificate chain, a real chain adds its size), so a second one is memory for
/// nothing (rustls' own cache reserves room for eight per origin).
const USER_TLS13_TICKETS: usize = 1;

/// One user's TLS sessions: at most [`USER_TLS_SESSION_ORIGINS`] origins (the oldest is forgotten), each with its
/// key-exchange hint, one TLS 1.2 session and at most [`USER_TLS13_TICKETS`] TLS 1.3 tickets. A user is one task,
/// so the mutex is never contended; a slice of small entries is cheaper per user than rustls' hash-map cache.
#[derive(Debug, Default)]
pub(crate) struct UserSessionStore {
    origins: std::sync::Mutex<Vec<OriginSessions>>,
}

#[derive(Debug)]
struct OriginSessions {
    server: rustls::pki_types::ServerName<'static>,
    kx_hint: Option<rustls::NamedGroup>,
    tls12: Option<rustls::client::Tls12ClientSessionValue>,
    tls13: std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>,
}

impl UserSessionStore {
    fn with_origin<R>(
        &self,
        server: &rustls::pki_types::ServerName<'_>,
        action: impl FnOnce(&mut OriginSessions) -> R,
    ) -> Option<R> {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .iter_mut()
            .find(|origin| origin.server == *server)
            .map(action)
    }

    fn with_origin_or_new<R>(
        &self,
        server: rustls::pki_types::ServerName<'static>,
        action: impl FnOnce(&mut OriginSessions) -> R,
    ) -> R {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let index = match origins.iter().position(|origin| origin.server == server) {
            Some(index) => index,
            None => {
                if origins.len() >= USER_TLS_SESSION_ORIGINS {
                    origins.remove(0);
                }
                // Room for this origin only: most users talk to one, and a plain push would reserve four entries
                // (about 500 bytes more per user, measured with heaptrack on idle TLS users).
                origins.reserve_exact(1);
                origins.push(OriginSessions {
                    server,
                    kx_hint: None,
                    tls12: None,
                    tls13: std::collections::VecDeque::with_capacity(USER_TLS13_TICKETS),
                });
                origins.len() - 1
            }
        };
        action(&mut origins[index])
    }
}

impl rustls::client::ClientSessionStore for UserSessionStore {
    fn set_kx_hint(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        group: rustls::NamedGroup,
    ) {
        self.with_origin_or_new(server_name, |origin| origin.kx_hint = Some(group));
    }

    fn kx_hint(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::NamedGroup> {
        self.with_origin(server_name, |origin| origin.kx_hint)
            .flatten()
    }

    fn set_tls12_session(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.with_origin_or_new(server_name, |origin| origin.tls12 = Some(value));
    }

    fn tls12_session(
        &self,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.with_origin(server_name, |origin| origin.tls12.clone())
            .flatten()
    }

    fn remove_tls12_session(&self, server_name: &rustls::pki_types::ServerName<'static>) {
        self.with_origin(server_name, |origin| origin.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.with_origin_or_new(server_name, |origin| {
            if origin.tls13.len() >= USER_TLS13_TICKETS {
                origin.tls13.pop_front();
            }
            origin.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.with_origin(server_name, |origin| origin.tls13.pop_back())
            .flatten()
    }
}
