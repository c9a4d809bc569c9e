//! Request routing and the route handlers, with the small parsing helpers
//! they need (path parameters, query strings, form bodies, cookies). Every
//! branch answers with a response; bad input becomes a 4xx, never a panic.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{
    ALLOW, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HeaderValue, LOCATION, SET_COOKIE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::DemoBody;
use crate::counters::{DemoCounters, Route};
use crate::sessions::{MAX_SESSIONS, SessionStore};

const MAX_REQUEST_BODY: usize = 64 * 1024;
const MAX_USERNAME: usize = 256;
const MAX_SLOW_MS: i64 = 10_000;
const DEFAULT_SLOW_MS: i64 = 100;
const MAX_REDIRECTS: i64 = 20;
const MAX_BYTES: i64 = 16 * 1024 * 1024;
const ITEM_IDS: std::ops::RangeInclusive<u64> = 1..=10_000;
const ITEMS_LISTED: u64 = 20;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
const OCTETS: &str = "application/octet-stream";

/// Patterns `/bytes` repeats; static so large bodies cost no allocation.
static TEXT_PATTERN: [u8; 32 * 1024] = [b'x'; 32 * 1024];
/// 0xFF can never appear in UTF-8.
static NON_UTF8_PATTERN: [u8; 32 * 1024] = [0xFF; 32 * 1024];

/// The item list never changes, so it is serialized once.
static ITEMS_JSON: LazyLock<Bytes> = LazyLock::new(|| {
    let items: Vec<Value> = (1..=ITEMS_LISTED).map(item_json).collect();
    Bytes::from(Value::Array(items).to_string())
});

const INDEX_HTML: &str = "<!doctype html>\n<html><head><title>cicada demo</title></head><body>\n\
<h1>cicada demo app</h1>\n<ul>\n\
<li><a href=\"/fast\">/fast</a></li>\n<li><a href=\"/slow?ms=100\">/slow?ms=100</a></li>\n\
<li><a href=\"/fail\">/fail</a></li>\n<li><a href=\"/status/418\">/status/418</a></li>\n\
<li><a href=\"/account\">/account</a></li>\n<li><a href=\"/items\">/items</a></li>\n\
<li><a href=\"/items/1\">/items/1</a></li>\n<li><a href=\"/redirect/3\">/redirect/3</a></li>\n\
<li><a href=\"/bytes/1024\">/bytes/1024</a></li>\n<li><a href=\"/echo\">/echo</a></li>\n\
</ul>\n</body></html>\n";

/// State shared by all connections of one server.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) counters: DemoCounters,
    /// Locked only by the three session routes, never on the hot paths.
    sessions: Mutex<SessionStore>,
}

impl Default for AppState {
    fn default() -> Self {
        Self {
            counters: DemoCounters::default(),
            sessions: Mutex::new(SessionStore::new(MAX_SESSIONS)),
        }
    }
}

impl AppState {
    fn sessions(&self) -> std::sync::MutexGuard<'_, SessionStore> {
        // The store stays consistent even if a holder panicked, so carry on.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which methods a route accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Allowed {
    Get,
    Post,
    Any,
}

/// Maps a path to its route and the path parameter after the route's prefix.
fn classify(path: &str) -> (Route, Option<&str>) {
    let fixed = match path {
        "/" => Some(Route::Index),
        "/fast" => Some(Route::Fast),
        "/slow" => Some(Route::Slow),
        "/fail" => Some(Route::Fail),
        "/login" => Some(Route::Login),
        "/account" => Some(Route::Account),
        "/logout" => Some(Route::Logout),
        "/items" => Some(Route::Items),
        "/cart" => Some(Route::Cart),
        "/redirect" => Some(Route::Redirect),
        "/echo" => Some(Route::Echo),
        _ => None,
    };
    if let Some(route) = fixed {
        return (route, None);
    }
    let with_param = [
        ("/status/", Route::Status),
        ("/items/", Route::Item),
        ("/redirect/", Route::Redirect),
        ("/bytes/", Route::Bytes),
    ];
    for (prefix, route) in with_param {
        if let Some(param) = path.strip_prefix(prefix)
            && !param.is_empty()
            && !param.contains('/')
        {
            return (route, Some(param));
        }
    }
    (Route::NotFound, None)
}

fn allowed(route: Route) -> Allowed {
    match route {
        Route::Login | Route::Logout | Route::Cart => Allowed::Post,
        // Redirects answer any method so clients can be tested on how they rewrite POST after a 302/303.
        Route::Echo | Route::NotFound | Route::Redirect => Allowed::Any,
        _ => Allowed::Get,
    }
}

/// The service function: count, check the method, dispatch.
pub(crate) async fn handle(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<DemoBody>, Infallible> {
    let (route, param) = classify(request.uri().path());
    state.counters.record_request(route);
    let method = request.method();
    let method_ok = match allowed(route) {
        Allowed::Get => method == Method::GET || method == Method::HEAD,
        Allowed::Post => method == Method::POST,
        Allowed::Any => true,
    };
    if !method_ok {
        let allow = if allowed(route) == Allowed::Post {
            "POST"
        } else {
            "GET, HEAD"
        };
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return Ok(response);
    }
    let is_head = method == Method::HEAD;
    let query = request.uri().query().unwrap_or("");
    let mut response = match route {
        Route::Index => respond(StatusCode::OK, HTML, INDEX_HTML),
        Route::Fast => text(StatusCode::OK, "ok\n"),
        Route::Slow => slow(query).await,
        Route::Fail => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error (on purpose)\n",
        ),
        Route::Status => status(param.unwrap_or("")),
        Route::Login => login(&state, request).await,
        Route::Account => account(&state, &request),
        Route::Logout => logout(&state, &request),
        Route::Items => respond(StatusCode::OK, JSON, ITEMS_JSON.clone()),
        Route::Item => item(param.unwrap_or("")),
        Route::Cart => cart(request).await,
        Route::Redirect => redirect(param),
        Route::Bytes => bytes(param.unwrap_or(""), query),
        Route::Echo => echo(request).await,
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if is_head {
        strip_body_for_head(&mut response);
    }
    Ok(response)
}

/// HEAD answers carry GET's headers but no body. hyper drops the body itself
/// on HTTP/1.1 but would send it on HTTP/2, which clients reject, so drop it
/// here and keep the length GET would have had.
fn strip_body_for_head(response: &mut Response<DemoBody>) {
    let len = response.body().size_hint().exact().unwrap_or(0);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    *response.body_mut() = DemoBody::full(Bytes::new());
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<DemoBody> {
    let mut response = Response::new(DemoBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<DemoBody> {
    respond(status, TEXT, body)
}

fn json_error(status: StatusCode, message: &str) -> Response<DemoBody> {
    respond(status, JSON, json!({ "error": message }).to_string())
}

/// Parses an integer parameter, clamping it into `min..=max`; `None` when it
/// is not an integer at all (including one too large for `i64`).
fn parse_clamped(raw: &str, min: i64, max: i64) -> Option<i64> {
    raw.parse::<i64>().ok().map(|n| n.clamp(min, max))
}

/// The raw value of the first `name=value` pair in a query string.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

async fn slow(query: &str) -> Response<DemoBody> {
    let ms = match query_param(query, "ms") {
        None => DEFAULT_SLOW_MS,
        Some(raw) => match parse_clamped(raw, 0, MAX_SLOW_MS) {
            Some(ms) => ms,
            None => return text(StatusCode::BAD_REQUEST, "ms must be an integer\n"),
        },
    };
    // The handler runs as soon as the request head is parsed, so the delay
    // the client sees is this sleep plus network and scheduling time only.
    tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
    text(StatusCode::OK, "slow\n")
}

fn status(raw: &str) -> Response<DemoBody> {
    let code = match raw.parse::<u16>() {
        Ok(code @ 200..=599) => code,
        _ => return text(StatusCode::BAD_REQUEST, "status must be in 200..=599\n"),
    };
    let Ok(status) = StatusCode::from_u16(code) else {
        return text(StatusCode::BAD_REQUEST, "status must be in 200..=599\n");
    };
    // These statuses must not carry a body.
    let body = match code {
        204 | 205 | 304 => Bytes::new(),
        _ => Bytes::from(format!("status {code}\n")),
    };
    respond(status, TEXT, body)
}

fn item_json(id: u64) -> Value {
    // Deterministic but varied prices, in whole cents.
    let cents = (id * 7919) % 10_000 + 99;
    json!({ "id": id, "name": format!("Item {id}"), "price": cents as f64 / 100.0 })
}

fn item(raw: &str) -> Response<DemoBody> {
    match raw.parse::<u64>() {
        Ok(id) if ITEM_IDS.contains(&id) => {
            respond(StatusCode::OK, JSON, item_json(id).to_string())
        }
        _ => json_error(StatusCode::NOT_FOUND, "no such item"),
    }
}

fn redirect(param: Option<&str>) -> Response<DemoBody> {
    let remaining = match param {
        None => 1,
        Some(raw) => match parse_clamped(raw, 0, MAX_REDIRECTS) {
            Some(n) => n,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "redirect count must be an integer\n",
                );
            }
        },
    };
    // Zero redirects left means we are the end of the chain.
    if remaining == 0 {
        return text(StatusCode::OK, "ok\n");
    }
    let location = if remaining == 1 {
        HeaderValue::from_static("/fast")
    } else {
        match HeaderValue::try_from(format!("/redirect/{}", remaining - 1)) {
            Ok(value) => value,
            Err(_) => HeaderValue::from_static("/fast"),
        }
    };
    let mut response = text(StatusCode::FOUND, "redirecting\n");
    response.headers_mut().insert(LOCATION, location);
    response
}

fn bytes(raw: &str, query: &str) -> Response<DemoBody> {
    let Some(len) = parse_clamped(raw, 0, MAX_BYTES) else {
        return text(StatusCode::BAD_REQUEST, "byte count must be an integer\n");
    };
    let pattern: &'static [u8] = match query_param(query, "invalid_utf8") {
        Some("1" | "true") => &NON_UTF8_PATTERN,
        _ => &TEXT_PATTERN,
    };
    let mut response = Response::new(DemoBody::repeat(pattern, len.unsigned_abs() as usize));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCTETS));
    response
}

/// Reads the whole request body, or answers 413 past the cap (400 if the
/// client broke off mid-body).
async fn read_body(body: Incoming) -> Result<Bytes, Response<DemoBody>> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "request body over 64 KiB\n");
    // Refuse a declared oversize body without reading any of it.
    if body.size_hint().lower() > MAX_REQUEST_BODY as u64 {
        return Err(too_large());
    }
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(_) => Err(text(
            StatusCode::BAD_REQUEST,
            "could not read request body\n",
        )),
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn form_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                if let (Some(high), Some(low)) = (hex(index + 1), hex(index + 2)) {
                    decoded.push((high * 16 + low) as u8);
                    index += 2;
                } else {
                    // A stray '%' is kept literally, as browsers do.
                    decoded.push(b'%');
                }
            }
            other => decoded.push(other),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The decoded value of the first `name` field of a form body.
fn form_field(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key) == name).then(|| form_decode(value))
    })
}

/// The value of the `session` cookie; HTTP/2 may split cookies over headers.
fn session_cookie<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("session="))
}

async fn login(state: &AppState, request: Request<Incoming>) -> Response<DemoBody> {
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let form = String::from_utf8_lossy(&body);
    let username = form_field(&form, "username").unwrap_or_default();
    let password = form_field(&form, "password").unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "username and password are required",
        );
    }
    if username.len() > MAX_USERNAME {
        return json_error(StatusCode::BAD_REQUEST, "username is too long");
    }
    let token = state.sessions().issue(&username);
    let mut response = respond(
        StatusCode::OK,
        JSON,
        json!({ "user": username }).to_string(),
    );
    // Tokens are built from URL-safe characters only, so this cannot fail.
    if let Ok(cookie) = HeaderValue::try_from(format!("session={token}; Path=/; HttpOnly")) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

fn account<B>(state: &AppState, request: &Request<B>) -> Response<DemoBody> {
    let user =
        session_cookie(request).and_then(|token| state.sessions().user(token).map(str::to_owned));
    match user {
        Some(user) => respond(StatusCode::OK, JSON, json!({ "user": user }).to_string()),
        None => json_error(StatusCode::UNAUTHORIZED, "not logged in"),
    }
}

fn logout<B>(state: &AppState, request: &Request<B>) -> Response<DemoBody> {
    if let Some(token) = session_cookie(request) {
        state.sessions().revoke(token);
    }
    let mut response = text(StatusCode::OK, "logged out\n");
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("session=; Path=/; HttpOnly; Max-Age=0"),
    );
    response
}

async fn cart(request: Request<Incoming>) -> Response<DemoBody> {
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(added) => respond(
            StatusCode::CREATED,
            JSON,
            json!({ "added": added }).to_string(),
        ),
        Err(_) => json_error(StatusCode::BAD_REQUEST, "body must be JSON"),
    }
}

async fn echo(request: Request<Incoming>) -> Response<DemoBody> {
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        // Repeated headers are joined as one comma-separated value would be.
        let values: Vec<_> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let description = json!({
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    respond(StatusCode::OK, JSON, description.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/"), (Route::Index, None));
        assert_eq!(classify("/fast"), (Route::Fast, None));
        assert_eq!(classify("/items"), (Route::Items, None));
        assert_eq!(classify("/items/42"), (Route::Item, Some("42")));
        assert_eq!(classify("/items/"), (Route::NotFound, None));
        assert_eq!(classify("/items/1/2"), (Route::NotFound, None));
        assert_eq!(classify("/redirect"), (Route::Redirect, None));
        assert_eq!(classify("/redirect/3"), (Route::Redirect, Some("3")));
        assert_eq!(classify("/status/418"), (Route::Status, Some("418")));
        assert_eq!(classify("/bytes/10"), (Route::Bytes, Some("10")));
        assert_eq!(classify("/status"), (Route::NotFound, None));
        assert_eq!(classify("/fast/"), (Route::NotFound, None));
        assert_eq!(classify(""), (Route::NotFound, None));
    }

    #[test]
    fn methods_per_route() {
        assert_eq!(allowed(Route::Fast), Allowed::Get);
        assert_eq!(allowed(Route::Cart), Allowed::Post);
        assert_eq!(allowed(Route::Echo), Allowed::Any);
    }

    #[test]
    fn parses_query_params() {
        assert_eq!(query_param("ms=5&x=1", "ms"), Some("5"));
        assert_eq!(query_param("x=1&ms=7", "ms"), Some("7"));
        assert_eq!(query_param("ms", "ms"), Some(""));
        assert_eq!(query_param("", "ms"), None);
        assert_eq!(query_param("msx=1", "ms"), None);
    }

    #[test]
    fn clamps_integers() {
        assert_eq!(parse_clamped("50", 0, 20), Some(20));
        assert_eq!(parse_clamped("-5", 0, 20), Some(0));
        assert_eq!(parse_clamped("7", 0, 20), Some(7));
        assert_eq!(parse_clamped("abc", 0, 20), None);
        assert_eq!(parse_clamped("", 0, 20), None);
        assert_eq!(parse_clamped("99999999999999999999999", 0, 20), None);
    }

    #[test]
    fn decodes_forms() {
        assert_eq!(form_decode("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
        let form = "username=al%20ice&password=p%26w&username=second";
        assert_eq!(form_field(form, "username").as_deref(), Some("al ice"));
        assert_eq!(form_field(form, "password").as_deref(), Some("p&w"));
        assert_eq!(form_field(form, "missing"), None);
    }

    #[test]
    fn finds_session_cookie_across_headers() {
        let request = Request::builder()
            .header(COOKIE, "a=1; b=2")
            .header(COOKIE, "session=tok; c=3")
            .body(())
            .unwrap();
        assert_eq!(session_cookie(&request), Some("tok"));
        let without = Request::builder()
            .header(COOKIE, "sessionx=1")
            .body(())
            .unwrap();
        assert_eq!(session_cookie(&without), None);
    }

    #[test]
    fn status_and_item_edges() {
        assert_eq!(status("418").status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(status("204").body().size_hint().exact(), Some(0));
        assert_eq!(status("150").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("600").status(), StatusCode::BAD_REQUEST);
        assert_eq!(status("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(item("10000").status(), StatusCode::OK);
        assert_eq!(item("0").status(), StatusCode::NOT_FOUND);
        assert_eq!(item("10001").status(), StatusCode::NOT_FOUND);
        assert_eq!(item("-1").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn redirect_chain_steps_down() {
        let location = |response: &Response<DemoBody>| response.headers().get(LOCATION).cloned();
        assert_eq!(
            location(&redirect(None)),
            Some(HeaderValue::from_static("/fast"))
        );
        assert_eq!(
            location(&redirect(Some("3"))),
            Some(HeaderValue::from_static("/redirect/2"))
        );
        assert_eq!(
            location(&redirect(Some("99"))),
            Some(HeaderValue::from_static("/redirect/19"))
        );
        assert_eq!(redirect(Some("0")).status(), StatusCode::OK);
        assert_eq!(redirect(Some("no")).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bytes_clamps_length() {
        let size = |raw| bytes(raw, "").body().size_hint().exact();
        assert_eq!(size("10"), Some(10));
        assert_eq!(size("999999999999"), Some(MAX_BYTES as u64));
        assert_eq!(size("-3"), Some(0));
        assert_eq!(bytes("x", "").status(), StatusCode::BAD_REQUEST);
    }
}
