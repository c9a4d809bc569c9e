//! Which requests the web UI answers: the `Host` check (against DNS rebinding) and the `Origin` check (against
//! cross-site requests), in front of every route.
//!
//! The UI can start a load test against any host, so a page on another site must not be able to drive it. A browser
//! that loads `http://evil.example/` can be made to send requests to the UI in two ways: a cross-site form or
//! `fetch` POST (its `Origin` names the other site), and DNS rebinding, where `evil.example` is re-pointed at the
//! UI's address so the page's requests become same-origin (their `Host` is `evil.example`). So:
//!
//! - `Host` (or HTTP/2's `:authority`) must name the UI: the address the connection came in on, with the UI's port
//!   (when bound to 0.0.0.0 or `::`, that is whichever of the machine's addresses the client reached); `localhost`,
//!   `127.0.0.1` and `[::1]` when that address is a loopback one; or a name given with `--web-allowed-host NAME`
//!   (any port) or `NAME:PORT` (that port). Anything else gets 403.
//! - A state-changing request (any method but GET, HEAD and OPTIONS) whose `Origin`, or without one whose `Referer`,
//!   names another site (by the same rule) gets 403. Requests with neither, such as scripts using curl or Python,
//!   are let through: a browser always sends `Origin` on a cross-site POST.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::schema::Answer;

/// Longest host or origin quoted back in a refusal (the rest is cut).
const MAX_QUOTED: usize = 100;

/// Where a connection arrived: this machine's address and port that the client reached, and whether over TLS. The
/// server puts it into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub(crate) local: SocketAddr,
    pub(crate) tls: bool,
}

impl Arrival {
    /// The port a `Host` without one stands for.
    fn default_port(self) -> u16 {
        if self.tls { 443 } else { 80 }
    }
}

/// A host as a request names it: an IP address or a (lower-case) DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    Ip(IpAddr),
    Name(String),
}

impl HostName {
    fn parse(text: &str) -> Option<HostName> {
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']')?;
            return inner
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|ip| HostName::Ip(IpAddr::V6(ip).to_canonical()));
        }
        if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
            return Some(HostName::Ip(IpAddr::V4(ip)));
        }
        let valid = !text.is_empty()
            && text.len() <= 253
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        valid.then(|| HostName::Name(text.to_ascii_lowercase()))
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (no user info, path or spaces).
fn split_authority(text: &str) -> Option<(HostName, Option<u16>)> {
    let (host, port) = if text.starts_with('[') {
        match text.rfind("]:") {
            Some(at) => (&text[..=at], Some(&text[at + 2..])),
            None => (text, None),
        }
    } else if text.matches(':').count() > 1 {
        // A bare IPv6 address (as in `--web-allowed-host ::1`).
        return text
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| (HostName::Ip(IpAddr::V6(ip).to_canonical()), None));
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((HostName::parse(host)?, port))
}

/// One `--web-allowed-host` value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedName {
    host: HostName,
    /// `None`: any port.
    port: Option<u16>,
}

/// The rule of the module documentation, with the names given by `--web-allowed-host`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostPolicy {
    names: Vec<AllowedName>,
}

impl HostPolicy {
    /// Reads `--web-allowed-host` values: `NAME`, `NAME:PORT`, an IP address, `[IPv6]:PORT`.
    pub(crate) fn new(values: &[String]) -> Result<HostPolicy, String> {
        let mut names = Vec::with_capacity(values.len());
        for value in values {
            let text = value.trim();
            if text.is_empty() {
                continue;
            }
            let Some((host, port)) = split_authority(text) else {
                return Err(format!(
                    "`{text}` is not a host name or address with an optional port (e.g. loadtest.example.com, \
                     loadtest.example.com:8443 or 192.0.2.7): no scheme, path or user"
                ));
            };
            names.push(AllowedName { host, port });
        }
        Ok(HostPolicy { names })
    }

    /// Whether `host:port` names the UI for a connection that arrived at `arrival`.
    fn names_the_ui(&self, host: &HostName, port: u16, arrival: Arrival) -> bool {
        if self
            .names
            .iter()
            .any(|name| name.host == *host && name.port.is_none_or(|p| p == port))
        {
            return true;
        }
        if port != arrival.local.port() {
            return false;
        }
        let local = arrival.local.ip().to_canonical();
        match host {
            HostName::Ip(ip) => *ip == local || (ip.is_loopback() && local.is_loopback()),
            HostName::Name(name) => name == "localhost" && local.is_loopback(),
        }
    }

    /// Whether a `Host` header (or `:authority`) names the UI.
    fn allows_host(&self, authority: &str, arrival: Arrival) -> bool {
        split_authority(authority).is_some_and(|(host, port)| {
            self.names_the_ui(&host, port.unwrap_or(arrival.default_port()), arrival)
        })
    }

    /// Whether an `Origin` or `Referer` URL is a page of the UI itself.
    fn allows_page(&self, page: &str, arrival: Arrival) -> bool {
        let Ok(url) = url::Url::parse(page) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => HostName::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => HostName::Ip(IpAddr::V6(ip).to_canonical()),
            Some(url::Host::Domain(name)) => HostName::Name(name.to_ascii_lowercase()),
            None => return false,
        };
        url.port_or_known_default()
            .is_some_and(|port| self.names_the_ui(&host, port, arrival))
    }
}

fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

fn forbidden(message: String) -> Response {
    (StatusCode::FORBIDDEN, Json(Answer::refused(message))).into_response()
}

/// The middleware: refuses what the module documentation describes, passes the rest on.
pub(crate) async fn check(policy: Arc<HostPolicy>, request: Request<Body>, next: Next) -> Response {
    let Some(arrival) = request.extensions().get::<Arrival>().copied() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Answer::refused("the connection's address is unknown")),
        )
            .into_response();
    };
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        });
    let Some(host) = host else {
        return (
            StatusCode::BAD_REQUEST,
            Json(Answer::refused(
                "the request has no Host header: the web UI answers only requests that name it",
            )),
        )
            .into_response();
    };
    if !policy.allows_host(&host, arrival) {
        let name = quoted(&host);
        return forbidden(format!(
            "this web UI does not answer to the host `{name}`: it answers to the address it was reached at ({}), to \
             localhost when that address is a loopback one, and to the names given with --web-allowed-host. If you \
             reach it through a proxy or a DNS name, start it with --web-allowed-host {name}",
            arrival.local
        ));
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let page = [header::ORIGIN, header::REFERER]
            .into_iter()
            .find_map(|name| {
                request
                    .headers()
                    .get(&name)
                    .map(|value| (name, String::from_utf8_lossy(value.as_bytes()).into_owned()))
            });
        if let Some((header_name, page)) = page
            && !policy.allows_page(&page, arrival)
        {
            return forbidden(format!(
                "cross-site request refused: this {} comes from a page at `{}` ({header_name}), not from the web UI \
                 itself. If that page is the UI behind a proxy or a DNS name, start it with --web-allowed-host \
                 NAME for that page's host",
                request.method(),
                quoted(&page)
            ));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(local: &str) -> Arrival {
        Arrival {
            local: local.parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn loopback_answers_to_its_address_and_localhost_with_its_port() {
        let policy = HostPolicy::default();
        let at = arrival("127.0.0.1:8089");
        for host in [
            "127.0.0.1:8089",
            "localhost:8089",
            "LOCALHOST:8089",
            "[::1]:8089",
        ] {
            assert!(policy.allows_host(host, at), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8089",
            "localhost:8090",
            "localhost",
            "127.0.0.1",
            "10.0.0.1:8089",
            "localhost.:8089",
            "user@localhost:8089",
            "",
        ] {
            assert!(!policy.allows_host(host, at), "{host}");
        }
    }

    #[test]
    fn a_missing_port_stands_for_the_schemes_default() {
        let policy = HostPolicy::default();
        assert!(policy.allows_host("localhost", arrival("127.0.0.1:80")));
        let tls = Arrival {
            local: "127.0.0.1:443".parse().unwrap(),
            tls: true,
        };
        assert!(policy.allows_host("localhost", tls));
        assert!(!policy.allows_host("localhost", arrival("127.0.0.1:443")));
    }

    #[test]
    fn a_wildcard_bind_answers_to_the_address_reached_but_not_to_names() {
        let policy = HostPolicy::default();
        let at = arrival("192.0.2.7:8089");
        assert!(policy.allows_host("192.0.2.7:8089", at));
        assert!(!policy.allows_host("192.0.2.8:8089", at));
        assert!(!policy.allows_host("localhost:8089", at));
        assert!(!policy.allows_host("loadbox:8089", at));
        // IPv4 reached through a dual-stack `::` socket.
        assert!(policy.allows_host("192.0.2.7:8089", arrival("[::ffff:192.0.2.7]:8089")));
    }

    #[test]
    fn allowed_names_match_any_port_or_the_one_given() {
        let policy = HostPolicy::new(&[
            "LoadBox".to_string(),
            "proxy.example:8443".to_string(),
            "2001:db8::1".to_string(),
        ])
        .unwrap();
        let at = arrival("192.0.2.7:8089");
        assert!(policy.allows_host("loadbox", at));
        assert!(policy.allows_host("loadbox:9000", at));
        assert!(policy.allows_host("proxy.example:8443", at));
        assert!(!policy.allows_host("proxy.example", at));
        assert!(policy.allows_host("[2001:db8::1]:8089", at));
        assert!(!policy.allows_host("evil.example", at));
    }

    #[test]
    fn bad_allowed_names_are_refused_with_the_value() {
        for bad in [
            "http://x.example",
            "x.example/ui",
            "user@x.example",
            "x.example:99999",
            "a b",
        ] {
            let error = HostPolicy::new(&[bad.to_string()]).unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn pages_of_the_ui_are_same_site_and_others_are_not() {
        let policy = HostPolicy::new(&["ui.example".to_string()]).unwrap();
        let at = arrival("127.0.0.1:8089");
        assert!(policy.allows_page("http://127.0.0.1:8089", at));
        assert!(policy.allows_page("http://localhost:8089/#stats", at));
        assert!(policy.allows_page("https://ui.example", at));
        assert!(!policy.allows_page("http://evil.example", at));
        assert!(!policy.allows_page("http://localhost:8090", at));
        assert!(!policy.allows_page("null", at));
        assert!(!policy.allows_page("file:///tmp/x.html", at));
    }
}
