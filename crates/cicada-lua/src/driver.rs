//! Running a Lua task for a user: each call is a fresh coroutine in the user's Lua state, resumed until it returns.
//! Whenever the task needs its user (a request, a sleep, a cookie, a control-flow request) it yields an operation
//! to this driver, which does it with the engine's `&mut User` and resumes the coroutine with the result, so task
//! code reads like blocking code while the state is free for other users. Errors become user errors with the Lua
//! message (`FILE:LINE: ...`) and traceback; the user goes on with its next task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cicada::user::task::TaskFuture;
use cicada::user::{Flow, TaskFn};
use cicada::{TaskError, TaskResult, User};
use mlua::{Function, RegistryKey, Thread, Value};

use crate::http::{self, Caught, LuaRng, RequestSpec};

/// What a resume hands back: the token, the operation and up to two arguments (a tuple, so no allocation).
type Resumed = (Value, Value, Value, Value);
use crate::script::Script;
use crate::vm::{Op, Vm};

/// A Lua user's state in the engine: which Lua state it lives in, and its `self` table there once created.
pub struct LuaUser {
    vm: usize,
    this: Option<RegistryKey>,
}

impl LuaUser {
    pub(crate) fn new(vm: usize) -> Self {
        LuaUser { vm, this: None }
    }
}

/// A task (or an `on_start` / `on_stop` hook) written in Lua: the same function in every Lua state of the test.
pub(crate) struct LuaTask {
    pub(crate) script: Arc<Script>,
    pub(crate) type_index: usize,
    /// The function in each state, by state index.
    pub(crate) functions: Vec<Function>,
}

impl TaskFn<LuaUser> for LuaTask {
    fn call<'a>(&'a self, user: &'a mut User<LuaUser>) -> TaskFuture<'a> {
        Box::pin(drive(self, user))
    }
}

/// What a task's coroutine handed back when it stopped running.
enum Yielded {
    Finished,
    Failed {
        message: String,
        traceback: String,
    },
    Request(RequestSpec),
    Sleep(Duration),
    Record {
        kind: String,
        name: String,
        response_time: Duration,
        size: u64,
        error: Option<String>,
    },
    Cookie(String),
    ClearCookies,
    BasicAuth(Option<(String, String)>),
    Flow(Flow),
    NextItem {
        source: String,
        csv: bool,
    },
}

async fn drive(task: &LuaTask, user: &mut User<LuaUser>) -> TaskResult {
    let index = user.state.vm;
    let vm = &task.script.vms[index];
    let this =
        user_self(task, vm, user).map_err(|e| internal("cannot create the user's self", &e))?;
    let thread = vm
        .task_thread()
        .map_err(|e| internal("cannot start a coroutine", &e))?;
    let mut pending: Vec<Arc<Mutex<Caught>>> = Vec::new();
    let outcome = run(
        vm,
        &thread,
        (task.functions[index].clone(), this),
        user,
        &mut pending,
    )
    .await;
    // Caught responses the task left without a verdict count by the usual rule, now rather than whenever the
    // garbage collector frees them.
    for caught in pending {
        caught.lock().unwrap_or_else(|p| p.into_inner()).settle();
    }
    vm.recycle(thread);
    outcome
}

async fn run(
    vm: &Vm,
    thread: &Thread,
    start: (Function, Value),
    user: &mut User<LuaUser>,
    pending: &mut Vec<Arc<Mutex<Caught>>>,
) -> TaskResult {
    let mut yielded = read(vm, thread.resume::<Resumed>(start))?;
    loop {
        let reply = match yielded {
            Yielded::Finished => return Ok(()),
            Yielded::Failed { message, traceback } => {
                return Err(TaskError::with_traceback(message, traceback));
            }
            Yielded::Flow(flow) => return Err(TaskError::flow(flow)),
            Yielded::Request(spec) => {
                let response = http::perform(user, spec, pending).await;
                let response = vm
                    .lua
                    .create_userdata(response)
                    .map_err(|e| internal("cannot hand the response to Lua", &e))?;
                thread.resume::<Resumed>(response)
            }
            Yielded::NextItem { source, csv } => {
                // Out of items with `stop_user` (or the user stopped while waiting) ends the task here as a
                // flow, as in Rust; the prelude checked the name, so other errors are the engine's own.
                let item = if csv {
                    let row = user.next_item::<crate::exchange::CsvRow>(&source).await?;
                    crate::exchange::to_lua(&vm.lua, &row)
                } else {
                    let item = user.next_item::<serde_json::Value>(&source).await?;
                    crate::exchange::to_lua(&vm.lua, &item)
                }
                .map_err(|e| internal("cannot hand the test data item to Lua", &e))?;
                thread.resume::<Resumed>(item)
            }
            Yielded::Sleep(pause) => {
                cicada::tokio::time::sleep(pause).await;
                thread.resume::<Resumed>(())
            }
            Yielded::Record {
                kind,
                name,
                response_time,
                size,
                error,
            } => {
                user.record(&kind, &name, response_time, size, error.as_deref());
                thread.resume::<Resumed>(())
            }
            Yielded::Cookie(name) => {
                let value = user.client().cookie(&name);
                thread.resume::<Resumed>(value)
            }
            Yielded::ClearCookies => {
                user.client().clear_cookies();
                thread.resume::<Resumed>(())
            }
            Yielded::BasicAuth(credentials) => {
                match credentials {
                    Some((name, password)) => user.client().set_basic_auth(&name, &password),
                    None => user.client().clear_basic_auth(),
                }
                thread.resume::<Resumed>(())
            }
        };
        yielded = read(vm, reply)?;
    }
}

/// The user's `self` table, made on its first task (or `on_start`).
fn user_self(task: &LuaTask, vm: &Vm, user: &mut User<LuaUser>) -> mlua::Result<Value> {
    if let Some(key) = &user.state.this {
        return vm.lua.registry_value(key);
    }
    let owner = &task.script.owners[task.type_index][user.state.vm];
    let rng = LuaRng(fastrand::Rng::with_seed(user.rng().u64(..)));
    let this: Value = vm.new_user.call((owner.clone(), user.id(), rng))?;
    user.state.this = Some(vm.lua.create_registry_value(this.clone())?);
    Ok(this)
}

/// Turn what a resume returned into the next step.
fn read(vm: &Vm, resumed: mlua::Result<Resumed>) -> Result<Yielded, TaskError> {
    let values = match resumed {
        Ok(values) => values,
        Err(error) => {
            let (message, traceback) = crate::split_traceback(&crate::lua_message(&error));
            return Err(TaskError::with_traceback(message, traceback));
        }
    };
    let (first, op, a, b) = values;
    match first {
        Value::Nil => return Ok(Yielded::Finished),
        Value::LightUserData(token) if token == crate::vm::token() => {}
        _ => {
            return Err(TaskError::msg(
                "a task yielded to cicada with coroutine.yield (yield only inside coroutines the task creates itself)",
            ));
        }
    }
    let op = match op {
        Value::Integer(code) => Op::from_code(code),
        _ => None,
    };
    let mut values = [a, b].into_iter();
    let mut arg = move || values.next().unwrap_or(Value::Nil);
    let text = |value: Value| -> String {
        match value {
            Value::String(s) => s.to_string_lossy(),
            Value::Nil => String::new(),
            other => other.to_string().unwrap_or_default(),
        }
    };
    let number = |value: Value| -> f64 {
        match value {
            Value::Integer(i) => i as f64,
            Value::Number(n) => n,
            _ => 0.0,
        }
    };
    Ok(match op {
        Some(Op::Error) => {
            let mut message = crate::strip_error_kind(&text(arg())).to_string();
            if message == "not enough memory" {
                message = format!(
                    "not enough memory: the task's Lua state reached its limit of {} MiB (raise \
                     cicada.settings {{ memory_limit_mib = .. }} if the test needs more)",
                    vm.memory_limit / (1024 * 1024)
                );
            }
            let traceback = clean_traceback(&text(arg()));
            Yielded::Failed { message, traceback }
        }
        Some(Op::Request) => {
            let spec = match arg() {
                Value::Integer(slot) => vm.requests.take(slot as usize),
                _ => None,
            };
            match spec {
                Some(spec) => Yielded::Request(spec),
                None => return Err(TaskError::msg("cicada: a request without its options")),
            }
        }
        Some(Op::Sleep) => Yielded::Sleep(seconds(number(arg()))),
        Some(Op::Record) => match arg() {
            Value::Table(sample) => read_record(&sample).map_err(|e| {
                TaskError::msg(format!("cicada.record: {}", crate::lua_message(&e)))
            })?,
            _ => return Err(TaskError::msg("cicada.record: a sample table is missing")),
        },
        Some(Op::Cookie) => Yielded::Cookie(text(arg())),
        Some(Op::NextItem) => Yielded::NextItem {
            source: text(arg()),
            csv: arg().as_boolean().unwrap_or(false),
        },
        Some(Op::ClearCookies) => Yielded::ClearCookies,
        Some(Op::BasicAuth) => match (arg(), arg()) {
            (Value::Nil, _) => Yielded::BasicAuth(None),
            (name, password) => Yielded::BasicAuth(Some((text(name), text(password)))),
        },
        Some(Op::Flow) => {
            let kind = text(arg());
            let reschedule = arg().as_boolean().unwrap_or(true);
            Yielded::Flow(match kind.as_str() {
                "stop_user" => Flow::StopUser,
                "stop_test" => Flow::StopTest,
                "interrupt" => Flow::Interrupt { reschedule },
                _ => Flow::Reschedule,
            })
        }
        None => return Err(TaskError::msg("cicada: an unknown operation was yielded")),
    })
}

/// Seconds from Lua as a duration: a negative or not-a-number value is zero, an infinite one the longest there is.
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

/// A `cicada.record { .. }` sample (the prelude checked its fields' types).
fn read_record(sample: &mlua::Table) -> mlua::Result<Yielded> {
    let millis: f64 = sample.get("response_time")?;
    let size: Option<u64> = sample.get("response_length")?;
    Ok(Yielded::Record {
        kind: sample.get("type")?,
        name: sample.get("name")?,
        response_time: seconds(millis / 1000.0),
        size: size.unwrap_or(0),
        error: sample.get("error")?,
    })
}

/// The traceback without the lines of cicada's own machinery (the prelude and the message handler).
fn clean_traceback(traceback: &str) -> String {
    let mut out = String::from("stack traceback:");
    for line in traceback.lines().skip_while(|l| l.trim().is_empty()) {
        let trimmed = line.trim();
        if trimmed == "stack traceback:" || trimmed.starts_with("[C]: in function 'error'") {
            continue;
        }
        if trimmed.starts_with("[C]: in function 'xpcall'") {
            break;
        }
        if trimmed.starts_with("cicada:") {
            continue;
        }
        out.push_str("\n\t");
        out.push_str(trimmed);
    }
    out
}

fn internal(what: &str, error: &mlua::Error) -> TaskError {
    TaskError::msg(format!("{what}: {}", crate::lua_message(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_from_lua_never_panic() {
        assert_eq!(seconds(1.5), Duration::from_millis(1500));
        assert_eq!(seconds(-1.0), Duration::ZERO);
        assert_eq!(seconds(f64::NAN), Duration::ZERO);
        assert_eq!(seconds(f64::INFINITY), Duration::MAX);
    }

    #[test]
    fn tracebacks_lose_the_machinery() {
        let raw = "\nstack traceback:\n\t[C]: in function 'error'\n\tshop.lua:4: in function <shop.lua:2>\n\t\
                   cicada:12: in function 'request'\n\t[C]: in function 'xpcall'\n\tcicada:300: in function <cicada:298>";
        assert_eq!(
            clean_traceback(raw),
            "stack traceback:\n\tshop.lua:4: in function <shop.lua:2>"
        );
    }
}
