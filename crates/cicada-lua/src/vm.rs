//! One Lua state of a test: the interpreter with the safe standard libraries, the `cicada` module, `require` of the
//! test's modules, a memory limit, and the watchdog that stops a script that runs too long without yielding.
//!
//! A test runs in a few states (one per runtime thread, see `crate::Script`), each loading the same bundle; every
//! user lives in one of them. A state is behind mlua's lock: a task holds it only while its Lua code runs between two
//! yields (a request, a sleep), which is microseconds, so users on one state rarely wait for each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};

use crate::ScriptError;
use crate::bundle::{ScriptSource, SourceTree};
use crate::http;

/// Instructions between two looks of the watchdog at the clock (a few microseconds of Lua).
const WATCHDOG_EVERY: u32 = 4_096;
/// Finished coroutines a state keeps for reuse: a new task takes one instead of allocating a thread (and leaving
/// the old one to the garbage collector). Bounded: past this many, finished coroutines are dropped.
const SPARE_THREADS: usize = 256;
/// How long a task may run Lua code without yielding, unless `cicada.settings { max_busy_seconds = .. }` says.
pub(crate) const DEFAULT_MAX_BUSY: Duration = Duration::from_secs(2);
/// Memory one Lua state may use, unless `cicada.settings { memory_limit_mib = .. }` says.
pub(crate) const DEFAULT_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// Operation codes a task yields with (the Lua side gets them as the table `OP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Request = 1,
    Sleep = 2,
    Record = 3,
    Cookie = 4,
    ClearCookies = 5,
    BasicAuth = 6,
    Flow = 7,
    Error = 8,
    NextItem = 9,
}

impl Op {
    const ALL: [(Op, &'static str); 9] = [
        (Op::Request, "request"),
        (Op::Sleep, "sleep"),
        (Op::Record, "record"),
        (Op::Cookie, "cookie"),
        (Op::ClearCookies, "clear_cookies"),
        (Op::BasicAuth, "basic_auth"),
        (Op::Flow, "flow"),
        (Op::Error, "error"),
        (Op::NextItem, "next_item"),
    ];

    pub(crate) fn from_code(code: i64) -> Option<Op> {
        Op::ALL
            .iter()
            .find(|(op, _)| *op as i64 == code)
            .map(|(op, _)| *op)
    }
}

/// What only this driver's yields carry first: the address of a private static, as a light userdata (comparing it
/// costs nothing, unlike a table, which the driver would have to take a reference to at each yield).
static TOKEN_ANCHOR: u8 = 0;

pub(crate) fn token() -> mlua::LightUserData {
    mlua::LightUserData(std::ptr::addr_of!(TOKEN_ANCHOR) as *mut std::ffi::c_void)
}

/// When the Lua code now running was resumed, and how long it may run; read by the instruction hook.
#[derive(Debug)]
pub(crate) struct Watchdog {
    origin: Instant,
    resumed_at_nanos: AtomicU64,
    max_busy_nanos: AtomicU64,
}

impl Watchdog {
    fn new() -> Self {
        Watchdog {
            origin: Instant::now(),
            resumed_at_nanos: AtomicU64::new(0),
            max_busy_nanos: AtomicU64::new(DEFAULT_MAX_BUSY.as_nanos() as u64),
        }
    }

    fn now_nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Lua code starts (or resumes) running now.
    pub(crate) fn arm(&self) {
        self.resumed_at_nanos
            .store(self.now_nanos(), Ordering::Relaxed);
    }

    pub(crate) fn set_max_busy(&self, max: Duration) {
        self.max_busy_nanos
            .store(max.as_nanos() as u64, Ordering::Relaxed);
    }

    fn max_busy(&self) -> Duration {
        Duration::from_nanos(self.max_busy_nanos.load(Ordering::Relaxed))
    }

    fn overdue(&self) -> bool {
        let busy = self
            .now_nanos()
            .saturating_sub(self.resumed_at_nanos.load(Ordering::Relaxed));
        busy > self.max_busy_nanos.load(Ordering::Relaxed)
    }
}

/// A loaded Lua state: what the test file defined in it and the functions the driver calls.
pub(crate) struct Vm {
    pub(crate) lua: Lua,
    /// The prelude's `run_task(body, user)`: the body of each task's coroutine.
    pub(crate) run_task: Function,
    /// The prelude's `new_user(user_type, id, rng)`.
    pub(crate) new_user: Function,
    /// The prelude's `call_armed(f, ...)`: calls `f` with the watchdog armed.
    call_armed: Function,
    /// What the test file registered: user types, listeners, shape, settings.
    pub(crate) registry: Table,
    pub(crate) watchdog: Arc<Watchdog>,
    /// Bytes this state may allocate.
    pub(crate) memory_limit: usize,
    /// Requests its tasks built, until the driver takes them.
    pub(crate) requests: Arc<http::PendingRequests>,
    /// Finished task coroutines, reset and ready for the next task (at most [`SPARE_THREADS`]).
    spare_threads: std::sync::Mutex<Vec<mlua::Thread>>,
}

/// Shared values every state's native functions reach.
#[derive(Clone)]
pub(crate) struct Natives {
    pub(crate) tree: Arc<SourceTree>,
    pub(crate) runner: Arc<std::sync::OnceLock<cicada::RunnerHandle>>,
    /// The run's messages and test data, and the CSV files of `cicada.csv_cycle`.
    pub(crate) exchange: Arc<crate::exchange::Shared>,
}

impl Vm {
    /// A new state with the test file `main` run in it.
    pub(crate) fn load(main: &ScriptSource, natives: &Natives) -> Result<Vm, ScriptError> {
        let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::new().catch_rust_panics(true))
            .map_err(|e| ScriptError::Internal(e.to_string()))?;
        let mut vm =
            Self::prepare(lua, natives).map_err(|e| ScriptError::Internal(e.to_string()))?;
        vm.watchdog.arm();
        let chunk = vm
            .lua
            .load(main.source.as_str())
            .set_name(format!("@{}", main.name));
        chunk.exec().map_err(|e| ScriptError::from_lua(&e))?;
        // Definitions (user types, handlers, data sources) are read now: one made later would do nothing.
        vm.registry
            .set("sealed", true)
            .map_err(|e| ScriptError::Internal(e.to_string()))?;
        vm.apply_settings()?;
        Ok(vm)
    }

    fn prepare(lua: Lua, natives: &Natives) -> mlua::Result<Vm> {
        lua.set_memory_limit(DEFAULT_MEMORY_LIMIT)?;
        // Most of a test's garbage dies young (a request's options, its response): the generational collector
        // frees it in cheap minor collections. Measured with `GET /` by 50 users: 13.3-14.0 us of CPU per request
        // and 32 MiB resident, against 15.2-16.5 us and 240 MiB with the incremental collector, which let the
        // responses' Rust-side bodies pile up between its cycles.
        lua.gc_set_mode(mlua::state::GcMode::Generational(Default::default()));
        let watchdog = Arc::new(Watchdog::new());
        install_watchdog(&lua, &watchdog)?;

        let ops = lua.create_table()?;
        for (op, name) in Op::ALL {
            ops.set(name, op as i64)?;
        }
        let native = lua.create_table()?;
        let requests = Arc::new(http::PendingRequests::default());
        let building = requests.clone();
        native.set(
            "build_request",
            lua.create_function(move |lua, args| http::build_request(lua, &building, args))?,
        )?;
        let tree = natives.tree.clone();
        native.set(
            "read_file",
            lua.create_function(move |lua, path: String| {
                let bytes = tree.read_file(&path).map_err(mlua::Error::runtime)?;
                lua.create_string(bytes)
            })?,
        )?;
        native.set("runner", runner_table(&lua, natives)?)?;
        crate::exchange::install(
            &lua,
            &native,
            &natives.exchange,
            natives.tree.folder.clone(),
        )?;
        let origin = std::time::Instant::now();
        native.set(
            "time",
            lua.create_function(move |_, ()| Ok(origin.elapsed().as_secs_f64()))?,
        )?;
        let arming = watchdog.clone();
        native.set(
            "arm",
            lua.create_function(move |_, ()| {
                arming.arm();
                Ok(())
            })?,
        )?;
        native.set(
            "traceback",
            lua.create_function(|lua, level: usize| lua.traceback(None, level))?,
        )?;
        native.set(
            "where",
            lua.create_function(|lua, level: usize| {
                Ok(lua.inspect_stack(level, |debug| {
                    let source = debug.source();
                    let file = source.short_src.as_deref().unwrap_or("?").to_string();
                    format!("{file}:{}", debug.current_line().unwrap_or(0))
                }))
            })?,
        )?;
        native.set(
            "defined_at",
            lua.create_function(|_, function: Function| {
                let info = function.info();
                Ok(format!(
                    "{}:{}",
                    info.short_src.as_deref().unwrap_or("?"),
                    info.line_defined.unwrap_or(0)
                ))
            })?,
        )?;

        let prelude: MultiValue = lua
            .load(include_str!("prelude.lua"))
            .set_name("=cicada")
            .call((native, Value::LightUserData(token()), ops))?;
        let mut values = prelude.into_iter();
        let (Some(Value::Table(cicada)), Some(Value::Table(registry))) =
            (values.next(), values.next())
        else {
            return Err(mlua::Error::runtime(
                "the prelude returned no cicada module",
            ));
        };
        let (
            Some(Value::Function(run_task)),
            Some(Value::Function(new_user)),
            Some(Value::Function(call_armed)),
        ) = (values.next(), values.next(), values.next())
        else {
            return Err(mlua::Error::runtime("the prelude returned no task runner"));
        };
        lua.globals().set("cicada", cicada.clone())?;
        let package: Table = lua.globals().get("package")?;
        package.get::<Table>("loaded")?.set("cicada", cicada)?;
        install_searcher(&lua, &package, natives.tree.clone())?;
        Ok(Vm {
            lua,
            run_task,
            new_user,
            call_armed,
            registry,
            watchdog,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            requests,
            spare_threads: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A coroutine ready to run a task: a spare one, or a new one.
    pub(crate) fn task_thread(&self) -> mlua::Result<mlua::Thread> {
        let spare = self
            .spare_threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match spare {
            Some(thread) => Ok(thread),
            None => self.lua.create_thread(self.run_task.clone()),
        }
    }

    /// Keep a coroutine whose task returned, for the next task.
    pub(crate) fn recycle(&self, thread: mlua::Thread) {
        if thread.status() != mlua::thread::ThreadStatus::Finished {
            return;
        }
        if thread.reset(self.run_task.clone()).is_err() {
            return;
        }
        let mut spare = self.spare_threads.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_THREADS {
            spare.push(thread);
        }
    }

    /// Call `function` (a listener, a shape, a wait-time function) with the watchdog armed when it starts to run.
    pub(crate) fn call<R: mlua::FromLuaMulti>(
        &self,
        function: &Function,
        args: impl mlua::IntoLuaMulti,
    ) -> mlua::Result<R> {
        let mut values = args.into_lua_multi(&self.lua)?;
        values.push_front(Value::Function(function.clone()));
        self.call_armed.call(values)
    }

    /// `cicada.settings { .. }` from the test file: the watchdog's limit and the memory limit.
    fn apply_settings(&mut self) -> Result<(), ScriptError> {
        let internal = |e: mlua::Error| ScriptError::Internal(e.to_string());
        let settings: Table = self.registry.get("settings").map_err(internal)?;
        if let Some(seconds) = settings
            .get::<Option<f64>>("max_busy_seconds")
            .map_err(internal)?
        {
            self.watchdog.set_max_busy(Duration::from_secs_f64(seconds));
        }
        if let Some(mib) = settings
            .get::<Option<f64>>("memory_limit_mib")
            .map_err(internal)?
        {
            let bytes = (mib * 1024.0 * 1024.0) as usize;
            if bytes < self.lua.used_memory() {
                return Err(ScriptError::Definition(format!(
                    "cicada.settings: memory_limit_mib = {mib} is below what the test already uses ({} KiB)",
                    self.lua.used_memory() / 1024
                )));
            }
            self.lua.set_memory_limit(bytes).map_err(internal)?;
            self.memory_limit = bytes;
        }
        Ok(())
    }
}

/// Check the watchdog every few thousand instructions. It is armed by the Lua code itself, under the state's lock,
/// when a task starts and each time the driver resumes it (the prelude's `arm()`).
fn install_watchdog(lua: &Lua, watchdog: &Arc<Watchdog>) -> mlua::Result<()> {
    let hook = |watchdog: Arc<Watchdog>| {
        move |_: &Lua, debug: &mlua::debug::Debug<'_>| {
            if !watchdog.overdue() {
                return Ok(VmState::Continue);
            }
            let place = match (debug.source().short_src, debug.current_line()) {
                (Some(source), Some(line)) => format!("{source}:{line}: "),
                _ => String::new(),
            };
            Err(mlua::Error::runtime(format!(
                "{place}runaway script: ran {:.1}s without yielding (no request, sleep or return); \
                 an endless loop? (raise cicada.settings {{ max_busy_seconds = .. }} if the work is real)",
                watchdog.max_busy().as_secs_f64()
            )))
        }
    };
    let triggers = HookTriggers::new().every_nth_instruction(WATCHDOG_EVERY);
    lua.set_hook(triggers, hook(watchdog.clone()))?;
    lua.set_global_hook(triggers, hook(watchdog.clone()))
}

/// `require` looks only in the test's bundle and folder (and `package.preload`), never in system paths.
fn install_searcher(lua: &Lua, package: &Table, tree: Arc<SourceTree>) -> mlua::Result<()> {
    let searcher = lua.create_function(move |lua, name: String| -> mlua::Result<Value> {
        match tree.module(&name).map_err(mlua::Error::runtime)? {
            Some(source) => {
                let loader = lua
                    .load(source.source)
                    .set_name(format!("@{}", source.name))
                    .into_function()?;
                Ok(Value::Function(loader))
            }
            None => Ok(Value::String(lua.create_string(format!(
                "no module `{name}` next to the test file"
            ))?)),
        }
    })?;
    let searchers = lua.create_table()?;
    let preload: Table = package.get::<Table>("searchers")?;
    searchers.push(preload.get::<Function>(1)?)?;
    searchers.push(searcher)?;
    package.set("searchers", searchers)?;
    package.set("path", "")?;
    package.set("cpath", "")?;
    Ok(())
}

/// `cicada.runner`: the run's controls, usable once the test has started (from events, shapes and tasks).
fn runner_table(lua: &Lua, natives: &Natives) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    let handle = |natives: &Natives| {
        let runner = natives.runner.clone();
        move || {
            runner
                .get()
                .cloned()
                .ok_or_else(|| mlua::Error::runtime("cicada.runner: the test has not started yet"))
        }
    };
    let get = handle(natives);
    table.set(
        "stop",
        lua.create_function(move |_, ()| {
            get()?.stop();
            Ok(())
        })?,
    )?;
    let get = handle(natives);
    table.set(
        "quit",
        lua.create_function(move |_, ()| {
            get()?.quit();
            Ok(())
        })?,
    )?;
    let get = handle(natives);
    table.set(
        "start",
        lua.create_function(move |_, (users, rate): (u64, f64)| {
            get()?.start(users, rate);
            Ok(())
        })?,
    )?;
    let get = handle(natives);
    table.set(
        "user_count",
        lua.create_function(move |_, ()| Ok(get()?.user_count()))?,
    )?;
    let get = handle(natives);
    table.set(
        "mode",
        lua.create_function(move |_, ()| {
            Ok(match get()?.mode() {
                cicada::runner::RunnerMode::Local => "local",
                cicada::runner::RunnerMode::Master => "master",
                cicada::runner::RunnerMode::Worker => "worker",
            })
        })?,
    )?;
    let get = handle(natives);
    table.set(
        "state",
        lua.create_function(move |_, ()| Ok(get()?.state().as_str()))?,
    )?;
    Ok(table)
}
