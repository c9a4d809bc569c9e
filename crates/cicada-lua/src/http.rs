//! The HTTP client as Lua sees it: a request's options read from a Lua table into a [`RequestSpec`] (checked where
//! the task calls, so a typo fails with the task's `FILE:LINE`), the request sent through the user's own cicada
//! client, and the response handed back as a userdata with Locust's fields. Also the per-user random generator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cicada::User;
use cicada::client::CaughtResponse;
use cicada::{RequestError, Response};
use http::Method;
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt, Table, UserData, UserDataFields, UserDataMethods, Value};

/// A request body as given in the options.
#[derive(Debug)]
pub(crate) enum Body {
    None,
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
    Raw(Vec<u8>),
}

/// One request, read from `client:get(path, { .. })` before the task yields for it.
#[derive(Debug)]
pub(crate) struct RequestSpec {
    method: Method,
    path: String,
    name: Option<String>,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: Body,
    timeout: Option<Duration>,
    basic_auth: Option<(String, String)>,
    catch_response: bool,
}

/// Requests between `client:get(..)` building them and the driver taking them, by slot number: the task yields the
/// number instead of a userdata, which would cost an allocation and a finalizer per request. A slot is taken back as
/// soon as the driver sees the yield, so few are ever in use; the bound only stops a test that yields requests into
/// coroutines of its own, where no driver takes them.
#[derive(Default)]
pub(crate) struct PendingRequests {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    specs: Vec<Option<RequestSpec>>,
    free: Vec<usize>,
}

/// Requests built but not yet taken, at most.
const MAX_PENDING_REQUESTS: usize = 65_536;

impl PendingRequests {
    fn put(&self, spec: RequestSpec) -> mlua::Result<usize> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.free.pop() {
            slots.specs[slot] = Some(spec);
            return Ok(slot);
        }
        if slots.specs.len() >= MAX_PENDING_REQUESTS {
            return Err(mlua::Error::runtime(
                "too many requests built and never sent: call the client only from a task's own flow, not from \
                 a coroutine the task created",
            ));
        }
        slots.specs.push(Some(spec));
        Ok(slots.specs.len() - 1)
    }

    /// The request in `slot`, freeing it.
    pub(crate) fn take(&self, slot: usize) -> Option<RequestSpec> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let spec = slots.specs.get_mut(slot)?.take()?;
        slots.free.push(slot);
        Some(spec)
    }
}

/// A scalar of a query, form or header table as text.
fn scalar(value: &Value, what: &str) -> mlua::Result<String> {
    match value {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(mlua::Error::runtime(format!(
            "{what} values must be strings, numbers or booleans, got {}",
            other.type_name()
        ))),
    }
}

/// A table of names to scalars, sorted by name so the same table always gives the same URL or body.
fn pairs(table: &Table, what: &str) -> mlua::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair?;
        let key = scalar(&key, what)?;
        out.push((key, scalar(&value, what)?));
    }
    out.sort();
    Ok(out)
}

fn table_of<'a>(value: &'a Value, what: &str) -> mlua::Result<&'a Table> {
    value.as_table().ok_or_else(|| {
        mlua::Error::runtime(format!(
            "request option `{what}` must be a table, got {}",
            value.type_name()
        ))
    })
}

/// `native.build_request(method, path, opts)`: the options checked and copied out of Lua.
pub(crate) fn build_request(
    lua: &Lua,
    pending: &PendingRequests,
    (method, path, opts): (mlua::LuaString, Value, Option<Table>),
) -> mlua::Result<usize> {
    let method = method.to_str()?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("`{method}` is not an HTTP method")))?;
    let path = match path {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(mlua::Error::runtime(format!(
                "the request path must be a string, got {}",
                other.type_name()
            )));
        }
    };
    let mut spec = RequestSpec {
        method,
        path,
        name: None,
        headers: Vec::new(),
        query: Vec::new(),
        body: Body::None,
        timeout: None,
        basic_auth: None,
        catch_response: false,
    };
    if let Some(opts) = opts {
        for pair in opts.pairs::<String, Value>() {
            let (key, value) = pair?;
            match key.as_str() {
                "name" => spec.name = Some(scalar(&value, "name")?),
                "headers" => spec.headers = pairs(table_of(&value, "headers")?, "header")?,
                "query" => spec.query = pairs(table_of(&value, "query")?, "query")?,
                "json" => spec.body = Body::Json(lua.from_value(value)?),
                "form" => spec.body = Body::Form(pairs(table_of(&value, "form")?, "form")?),
                "body" => match value {
                    Value::String(s) => spec.body = Body::Raw(s.as_bytes().to_vec()),
                    other => {
                        return Err(mlua::Error::runtime(format!(
                            "request option `body` must be a string, got {}",
                            other.type_name()
                        )));
                    }
                },
                "timeout" => match value {
                    Value::Integer(_) | Value::Number(_) => {
                        let seconds: f64 = lua.unpack(value)?;
                        if !(seconds.is_finite() && seconds > 0.0) {
                            return Err(mlua::Error::runtime(
                                "request option `timeout` must be a number of seconds above 0",
                            ));
                        }
                        spec.timeout = Some(Duration::from_secs_f64(seconds));
                    }
                    other => {
                        return Err(mlua::Error::runtime(format!(
                            "request option `timeout` must be a number of seconds, got {}",
                            other.type_name()
                        )));
                    }
                },
                "auth" => {
                    let auth = table_of(&value, "auth")?;
                    let user: Option<String> = auth.get(1)?;
                    let password: Option<String> = auth.get(2)?;
                    match (user, password) {
                        (Some(user), Some(password)) => spec.basic_auth = Some((user, password)),
                        _ => {
                            return Err(mlua::Error::runtime(
                                "request option `auth` must be { user, password }",
                            ));
                        }
                    }
                }
                "catch_response" => spec.catch_response = value.as_boolean().unwrap_or(false),
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "unknown request option `{other}` (known: name, headers, query, json, form, body, timeout, \
                         auth, catch_response)"
                    )));
                }
            }
        }
    }
    pending.put(spec)
}

/// A response handed to Lua. A caught one (`catch_response = true`) is shared with the driver, which settles it by
/// the usual rule when the task ends without a verdict.
// The large variant is the common one; boxing it would add an allocation per request to the userdata's own.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LuaResponse {
    Done(Response),
    Caught(Arc<Mutex<Caught>>),
    /// No response arrived (refused, timeout, TLS ...): status 0, like Locust's.
    Failed(RequestError),
}

/// A caught response before and after its verdict (`None` only while a verdict is being recorded).
pub(crate) struct Caught(Option<CaughtState>);

enum CaughtState {
    Waiting(CaughtResponse),
    Settled(Response),
}

impl Caught {
    fn response(&self) -> Option<&Response> {
        match &self.0 {
            Some(CaughtState::Waiting(caught)) => Some(caught),
            Some(CaughtState::Settled(response)) => Some(response),
            None => None,
        }
    }

    /// Record the verdict; `false` when it already had one.
    fn decide(&mut self, failure: Option<String>) -> bool {
        match self.0.take() {
            Some(CaughtState::Waiting(caught)) => {
                self.0 = Some(CaughtState::Settled(match failure {
                    Some(reason) => caught.failure(reason),
                    None => caught.success(),
                }));
                true
            }
            other => {
                self.0 = other;
                false
            }
        }
    }

    /// Record it by the usual rule (status >= 400 or a check fails) if the task gave no verdict.
    pub(crate) fn settle(&mut self) {
        let failure = match &self.0 {
            Some(CaughtState::Waiting(caught)) => {
                let response: &Response = caught;
                response.failure().map(str::to_string)
            }
            _ => return,
        };
        self.decide(failure);
    }
}

impl LuaResponse {
    fn with<R>(&self, f: impl FnOnce(Option<&Response>) -> R) -> R {
        match self {
            LuaResponse::Done(response) => f(Some(response)),
            LuaResponse::Caught(caught) => {
                let caught = caught.lock().unwrap_or_else(|p| p.into_inner());
                f(caught.response())
            }
            LuaResponse::Failed(_) => f(None),
        }
    }

    fn verdict(&self, failure: Option<String>) -> mlua::Result<()> {
        let LuaResponse::Caught(caught) = self else {
            return Err(mlua::Error::runtime(
                "success() / failure() need the request to be sent with { catch_response = true }",
            ));
        };
        let mut caught = caught.lock().unwrap_or_else(|p| p.into_inner());
        if caught.decide(failure) {
            Ok(())
        } else {
            Err(mlua::Error::runtime(
                "this response already has its verdict (success() or failure() was called)",
            ))
        }
    }
}

impl UserData for LuaResponse {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("status", |_, this| {
            Ok(this.with(|r| r.map_or(0, |r| r.status().as_u16())))
        });
        fields.add_field_method_get("ok", |_, this| {
            Ok(this.with(|r| r.is_some_and(|r| !r.is_failure())))
        });
        fields.add_field_method_get("error", |_, this| {
            Ok(match this {
                LuaResponse::Failed(error) => Some(error.to_string()),
                _ => this.with(|r| r.and_then(|r| r.failure()).map(str::to_string)),
            })
        });
        fields.add_field_method_get("text", |lua, this| {
            this.with(|r| lua.create_string(r.map_or(&[][..], |r| r.body())))
        });
        fields.add_field_method_get("url", |_, this| {
            Ok(this.with(|r| r.map(|r| r.url().to_string())))
        });
        fields.add_field_method_get("content_size", |_, this| {
            Ok(this.with(|r| r.map_or(0, |r| r.content_length())))
        });
        fields.add_field_method_get("body_truncated", |_, this| {
            Ok(this.with(|r| r.is_some_and(|r| r.body_truncated())))
        });
        fields.add_field_method_get("elapsed", |_, this| {
            Ok(this.with(|r| r.map_or(0.0, |r| r.elapsed().as_secs_f64() * 1000.0)))
        });
        fields.add_field_method_get("headers", |lua, this| {
            let table = lua.create_table()?;
            this.with(|r| -> mlua::Result<()> {
                if let Some(r) = r {
                    for (name, value) in r.headers() {
                        table.set(name.as_str(), lua.create_string(value.as_bytes())?)?;
                    }
                }
                Ok(())
            })?;
            Ok(table)
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("json", |lua, this, ()| {
            let parsed: Result<serde_json::Value, String> = this.with(|r| match r {
                Some(r) => r
                    .json()
                    .map_err(|e| format!("the response is not JSON: {e}")),
                None => Err("no response arrived, so there is no JSON".to_string()),
            });
            let value = parsed.map_err(mlua::Error::runtime)?;
            lua.to_value_with(
                &value,
                SerializeOptions::new()
                    .serialize_none_to_null(false)
                    .serialize_unit_to_null(false),
            )
        });
        methods.add_method("header", |lua, this, name: String| {
            this.with(|r| match r.and_then(|r| r.headers().get(name.as_str())) {
                Some(value) => Ok(Value::String(lua.create_string(value.as_bytes())?)),
                None => Ok(Value::Nil),
            })
        });
        methods.add_method("success", |_, this, ()| this.verdict(None));
        methods.add_method("failure", |_, this, reason: Value| {
            let reason = match reason {
                Value::Nil => "marked as a failure".to_string(),
                other => other.to_string()?,
            };
            this.verdict(Some(reason))
        });
    }
}

/// Send `spec` as `user` and hand back the response (or the caught response, kept in `pending` for the driver).
pub(crate) async fn perform<S>(
    user: &mut User<S>,
    spec: RequestSpec,
    pending: &mut Vec<Arc<Mutex<Caught>>>,
) -> LuaResponse {
    let mut request = user.request(spec.method, &spec.path);
    if let Some(name) = spec.name {
        request = request.name(name);
    }
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    if !spec.query.is_empty() {
        request = request.query(&spec.query);
    }
    request = match spec.body {
        Body::None => request,
        Body::Json(value) => request.json(&value),
        Body::Form(fields) => request.form(&fields),
        Body::Raw(bytes) => request.body(bytes),
    };
    if let Some(timeout) = spec.timeout {
        request = request.timeout(timeout);
    }
    if let Some((name, password)) = &spec.basic_auth {
        request = request.basic_auth(name, password);
    }
    if spec.catch_response {
        match request.catch_response().send().await {
            Ok(caught) => {
                let shared = Arc::new(Mutex::new(Caught(Some(CaughtState::Waiting(caught)))));
                pending.push(shared.clone());
                LuaResponse::Caught(shared)
            }
            Err(error) => LuaResponse::Failed(error),
        }
    } else {
        match request.send().await {
            Ok(response) => LuaResponse::Done(response),
            Err(error) => LuaResponse::Failed(error),
        }
    }
}

/// A user's own random generator (`self.rng:int(1, 10)`, `self.rng:float()`), seeded from the engine's.
pub(crate) struct LuaRng(pub(crate) fastrand::Rng);

impl UserData for LuaRng {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("int", |_, this, (low, high): (i64, i64)| {
            if high < low {
                return Err(mlua::Error::runtime(format!(
                    "rng:int(low, high): high ({high}) is below low ({low})"
                )));
            }
            Ok(this.0.i64(low..=high))
        });
        methods.add_method_mut("float", |_, this, ()| Ok(this.0.f64()));
        methods.add_method_mut("bool", |_, this, ()| Ok(this.0.bool()));
    }
}
