//! A loaded Lua test: its Lua states, and what it defined in them turned into the engine's user types, task sets,
//! wait times, event listeners and load shape.
//!
//! The test file runs once in each state; every state must define the same user types and tasks (they do, unless
//! a definition depends on randomness or time), and a task is the same function in each. Users are spread over
//! the states round-robin. Event listeners, load shapes and wait-time functions run in the first state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cicada::user::{ArrivalRate, Stage};
use cicada::user::{WaitContext, custom_wait};
use cicada::user::{WaitTime, between, constant, constant_pacing, constant_throughput};
use cicada::{Cicada, ClientOptions, HttpVersion, LoadShape, Target, Task, TaskSet, UserType};
use mlua::{Function, Table, Value};

use crate::ScriptError;
use crate::driver::{LuaTask, LuaUser};
use crate::vm::Vm;

/// The Lua states of one test and each user type's table in each of them.
pub(crate) struct Script {
    pub(crate) vms: Vec<Vm>,
    /// `owners[type][state]`: the table `cicada.user { .. }` returned, which users' `self` inherit from.
    pub(crate) owners: Vec<Vec<Table>>,
    next_vm: AtomicUsize,
}

/// A wait time as defined.
enum WaitDef {
    Between(f64, f64),
    Constant(f64),
    Pacing(f64),
    Throughput(f64),
    Function(Function),
}

/// A task or task set as defined, with its functions in every state.
enum EntryDef {
    Task {
        name: String,
        weight: u32,
        tags: Vec<String>,
        functions: Vec<Function>,
    },
    Set(SetDef),
}

struct SetDef {
    name: String,
    sequential: bool,
    weight: u32,
    tags: Vec<String>,
    wait: Option<WaitDef>,
    entries: Vec<EntryDef>,
    on_start: Option<Vec<Function>>,
    on_stop: Option<Vec<Function>>,
    place: String,
}

struct TypeDef {
    weight: u32,
    fixed_count: Option<u64>,
    host: Option<String>,
    client: Option<ClientOptions>,
    /// `arrival_rate = { .. }`: an arrival-rate type (the open model).
    arrival: Option<ArrivalRate>,
    body: SetDef,
}

impl Script {
    /// Read the definitions of every state, check they agree, and build the engine's user types.
    pub(crate) fn build(
        vms: Vec<Vm>,
        main_name: &str,
        runner: Arc<std::sync::OnceLock<cicada::RunnerHandle>>,
        exchange: Arc<crate::exchange::Shared>,
        folder: Option<&std::path::Path>,
    ) -> Result<Cicada, ScriptError> {
        let mut defs: Option<Vec<TypeDef>> = None;
        let mut owners: Vec<Vec<Table>> = Vec::new();
        for vm in &vms {
            let types: Table = vm.registry.get("types").map_err(internal)?;
            let mut read_types = Vec::new();
            for (index, def) in types.sequence_values::<Table>().enumerate() {
                let def = def.map_err(internal)?;
                let owner: Table = def.get("owner").map_err(internal)?;
                if owners.len() <= index {
                    owners.push(Vec::new());
                }
                owners[index].push(owner);
                read_types.push(read_type(&def)?);
            }
            defs = Some(match defs {
                None => read_types,
                Some(mut first) => {
                    merge_types(&mut first, read_types)?;
                    first
                }
            });
        }
        let defs = defs.unwrap_or_default();
        if defs.is_empty() {
            return Err(ScriptError::Definition(format!(
                "{main_name}: no user types: define one with cicada.user {{ name = \"Visitor\" }} and give it a task"
            )));
        }
        let listeners = read_listeners(&vms[0])?;
        let exchange_defs = crate::exchange::read(&vms[0].lua, &vms[0].registry, folder)?;
        let shape: Option<Function> = vms[0].registry.get("shape").map_err(internal)?;
        let script = Arc::new(Script {
            vms,
            owners,
            next_vm: AtomicUsize::new(0),
        });
        let mut cicada = Cicada::new();
        for (index, def) in defs.into_iter().enumerate() {
            cicada = cicada.user(user_type(&script, index, def)?);
        }
        cicada = crate::events::register(cicada, &script, listeners, runner);
        cicada = crate::exchange::register(cicada, &script, exchange_defs, exchange);
        if let Some(tick) = shape {
            cicada = cicada.shape(LuaShape {
                script: script.clone(),
                tick,
            });
        }
        Ok(cicada)
    }

    /// The state the next new user lives in.
    fn next_vm(&self) -> usize {
        self.next_vm.fetch_add(1, Ordering::Relaxed) % self.vms.len()
    }
}

fn internal(error: mlua::Error) -> ScriptError {
    ScriptError::Internal(error.to_string())
}

fn read_tags(def: &Table) -> Result<Vec<String>, ScriptError> {
    let tags: Table = def.get("tags").map_err(internal)?;
    tags.sequence_values::<String>()
        .collect::<mlua::Result<Vec<_>>>()
        .map_err(internal)
}

fn read_wait(def: &Table) -> Result<Option<WaitDef>, ScriptError> {
    let Some(wait): Option<Table> = def.get("wait_time").map_err(internal)? else {
        return Ok(None);
    };
    let kind: String = wait.get("kind").map_err(internal)?;
    let number = |key: &str| -> Result<f64, ScriptError> { wait.get(key).map_err(internal) };
    Ok(Some(match kind.as_str() {
        "between" => WaitDef::Between(number("a")?, number("b")?),
        "constant" => WaitDef::Constant(number("a")?),
        "constant_pacing" => WaitDef::Pacing(number("a")?),
        "constant_throughput" => WaitDef::Throughput(number("a")?),
        _ => WaitDef::Function(wait.get("a").map_err(internal)?),
    }))
}

fn read_hook(owner: &Table, name: &str, place: &str) -> Result<Option<Vec<Function>>, ScriptError> {
    match owner.raw_get::<Value>(name).map_err(internal)? {
        Value::Nil => Ok(None),
        Value::Function(f) => Ok(Some(vec![f])),
        other => Err(ScriptError::Definition(format!(
            "{place}: {name} must be a function, got {}",
            other.type_name()
        ))),
    }
}

fn read_set(def: &Table, sequential: bool) -> Result<SetDef, ScriptError> {
    let name: String = def.get("name").map_err(internal)?;
    let place: String = def.get("where").map_err(internal)?;
    let owner: Table = def.get("owner").map_err(internal)?;
    let mut entries = Vec::new();
    let list: Table = def.get("entries").map_err(internal)?;
    for entry in list.sequence_values::<Table>() {
        let entry = entry.map_err(internal)?;
        if let Some(set) = entry.get::<Option<Table>>("set").map_err(internal)? {
            let order: String = set.get("order").map_err(internal)?;
            entries.push(EntryDef::Set(read_set(&set, order == "sequential")?));
        } else {
            entries.push(EntryDef::Task {
                name: entry.get("name").map_err(internal)?,
                weight: entry.get("weight").map_err(internal)?,
                tags: read_tags(&entry)?,
                functions: vec![entry.get("fn").map_err(internal)?],
            });
        }
    }
    if entries.is_empty() {
        return Err(ScriptError::Definition(format!(
            "{place}: `{name}` has no tasks: add one with :task(function(self) .. end)"
        )));
    }
    Ok(SetDef {
        weight: def.get("weight").map_err(internal)?,
        tags: read_tags(def)?,
        wait: read_wait(def)?,
        entries,
        on_start: read_hook(&owner, "on_start", &place)?,
        on_stop: read_hook(&owner, "on_stop", &place)?,
        name,
        sequential,
        place,
    })
}

fn read_type(def: &Table) -> Result<TypeDef, ScriptError> {
    let place: String = def.get("where").map_err(internal)?;
    let client = match def.get::<Option<Table>>("client").map_err(internal)? {
        Some(table) => Some(read_client(&table).map_err(|message| {
            ScriptError::Definition(format!("{place}: cicada.user: client: {message}"))
        })?),
        None => None,
    };
    Ok(TypeDef {
        weight: def.get("weight").map_err(internal)?,
        fixed_count: def.get("fixed_count").map_err(internal)?,
        host: def.get("host").map_err(internal)?,
        client,
        arrival: read_arrival(def).map_err(|message| {
            ScriptError::Definition(format!("{place}: cicada.user: arrival_rate: {message}"))
        })?,
        body: read_set(def, false)?,
    })
}

/// `arrival_rate = { rate = N }` or `{ start = N, stages = { { duration = S, target = N }, .. } }`, with optional
/// `max_concurrent`, `pre_allocated` and `idle_timeout` (seconds): the engine's [`ArrivalRate`]. Rates are checked
/// by the engine before the run (a usage error naming the type).
fn read_arrival(def: &Table) -> Result<Option<ArrivalRate>, String> {
    let Some(table) = def
        .get::<Option<Table>>("arrival_rate")
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    const KEYS: [&str; 6] = [
        "rate",
        "start",
        "stages",
        "max_concurrent",
        "pre_allocated",
        "idle_timeout",
    ];
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let name = key.to_string().unwrap_or_default();
        if !KEYS.contains(&name.as_str()) {
            return Err(format!("unknown key `{name}` (known: {})", KEYS.join(", ")));
        }
    }
    let number = |table: &Table, key: &str| -> Result<Option<f64>, String> {
        match table.get::<Value>(key).map_err(|e| e.to_string())? {
            Value::Nil => Ok(None),
            Value::Integer(i) => Ok(Some(i as f64)),
            Value::Number(n) => Ok(Some(n)),
            _ => Err(format!("{key} must be a number")),
        }
    };
    let count = |key: &str| -> Result<Option<u32>, String> {
        match table.get::<Value>(key).map_err(|e| e.to_string())? {
            Value::Nil => Ok(None),
            Value::Integer(i) => u32::try_from(i)
                .map(Some)
                .map_err(|_| format!("{key} must be an integer from 0 to {}", u32::MAX)),
            _ => Err(format!("{key} must be an integer")),
        }
    };
    let stages: Option<Table> = table
        .get("stages")
        .map_err(|_| "stages must be a list of { duration = S, target = N }".to_string())?;
    let mut rate = match (number(&table, "rate")?, stages) {
        (Some(rate), None) if number(&table, "start")?.is_none() => ArrivalRate::constant(rate),
        (None, Some(stages)) => {
            let mut list = Vec::new();
            for stage in stages.sequence_values::<Table>() {
                let stage = stage.map_err(|_| {
                    "each stage must be a table { duration = S, target = N }".to_string()
                })?;
                let (Some(duration), Some(target)) =
                    (number(&stage, "duration")?, number(&stage, "target")?)
                else {
                    return Err(
                        "each stage needs duration (seconds) and target (iterations per second)"
                            .to_string(),
                    );
                };
                let duration = Duration::try_from_secs_f64(duration).map_err(|_| {
                    format!("a stage's duration of {duration} is not a number of seconds")
                })?;
                list.push(Stage::new(duration, target));
            }
            ArrivalRate::ramping(number(&table, "start")?.unwrap_or(0.0), list)
        }
        _ => {
            return Err(
                "give rate = N (iterations per second), or stages = { .. } with an optional start"
                    .to_string(),
            );
        }
    };
    if let Some(bound) = count("max_concurrent")? {
        rate = rate.max_concurrent(bound);
    }
    if let Some(instances) = count("pre_allocated")? {
        rate = rate.pre_allocated(instances);
    }
    if let Some(seconds) = number(&table, "idle_timeout")? {
        let timeout = Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("idle_timeout of {seconds} is not a number of seconds"))?;
        rate = rate.idle_timeout(timeout);
    }
    Ok(Some(rate))
}

/// `client = { .. }` of a user type: the engine's [`ClientOptions`], each key checked.
fn read_client(table: &Table) -> Result<ClientOptions, String> {
    let mut options = ClientOptions::default();
    let seconds = |key: &str, value: &Value| -> Result<Duration, String> {
        let number = match value {
            Value::Integer(i) => *i as f64,
            Value::Number(n) => *n,
            _ => return Err(format!("{key} must be a number of seconds")),
        };
        if number.is_finite() && number > 0.0 {
            Ok(Duration::from_secs_f64(number))
        } else {
            Err(format!("{key} must be above 0"))
        }
    };
    let flag = |key: &str, value: &Value| -> Result<bool, String> {
        value
            .as_boolean()
            .ok_or_else(|| format!("{key} must be true or false"))
    };
    let count = |key: &str, value: &Value| -> Result<u64, String> {
        match value {
            Value::Integer(i) if *i >= 0 => Ok(*i as u64),
            _ => Err(format!("{key} must be an integer >= 0")),
        }
    };
    for pair in table.pairs::<String, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        match key.as_str() {
            "timeout" => options.timeout = seconds(&key, &value)?,
            "connect_timeout" => options.connect_timeout = seconds(&key, &value)?,
            "http" => {
                options.http = match value.as_string().map(|s| s.to_string_lossy()).as_deref() {
                    Some("auto") => HttpVersion::Auto,
                    Some("http1") => HttpVersion::Http1,
                    Some("http2") => HttpVersion::Http2,
                    _ => return Err("http must be \"auto\", \"http1\" or \"http2\"".to_string()),
                }
            }
            "insecure_tls" => options.insecure_tls = flag(&key, &value)?,
            "tls_session_resumption" => options.tls_session_resumption = flag(&key, &value)?,
            "share_tls_sessions" => options.share_tls_sessions = flag(&key, &value)?,
            "shared_pool" => options.shared_pool = flag(&key, &value)?,
            "decompress" => options.decompress = flag(&key, &value)?,
            "max_redirects" => {
                options.max_redirects = u32::try_from(count(&key, &value)?)
                    .map_err(|_| "max_redirects is too large".to_string())?
            }
            "max_body_bytes" => options.max_body_bytes = count(&key, &value)? as usize,
            "user_agent" => {
                options.user_agent = value
                    .as_string()
                    .map(|s| s.to_string_lossy())
                    .ok_or_else(|| "user_agent must be a string".to_string())?
            }
            "basic_auth" => {
                let pair = value
                    .as_table()
                    .ok_or_else(|| "basic_auth must be { user, password }".to_string())?;
                let user: Option<String> = pair.get(1).map_err(|e| e.to_string())?;
                let password: Option<String> = pair.get(2).map_err(|e| e.to_string())?;
                match (user, password) {
                    (Some(user), Some(password)) => options.basic_auth = Some((user, password)),
                    _ => return Err("basic_auth must be { user, password }".to_string()),
                }
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (known: timeout, connect_timeout, http, insecure_tls, \
                     tls_session_resumption, share_tls_sessions, shared_pool, max_redirects, max_body_bytes, \
                     user_agent, decompress, basic_auth)"
                ));
            }
        }
    }
    Ok(options)
}

fn differ(place: &str) -> ScriptError {
    ScriptError::Definition(format!(
        "{place}: the test file defined different tasks when it ran again (cicada runs it once per Lua state): \
         keep definitions free of randomness and time"
    ))
}

fn merge_types(first: &mut [TypeDef], other: Vec<TypeDef>) -> Result<(), ScriptError> {
    if first.len() != other.len() {
        let place = first
            .first()
            .map_or("?", |t| t.body.place.as_str())
            .to_string();
        return Err(differ(&place));
    }
    for (mine, theirs) in first.iter_mut().zip(other) {
        merge_set(&mut mine.body, theirs.body)?;
    }
    Ok(())
}

fn merge_hook(
    mine: &mut Option<Vec<Function>>,
    theirs: Option<Vec<Function>>,
    place: &str,
) -> Result<(), ScriptError> {
    match (mine, theirs) {
        (None, None) => Ok(()),
        (Some(mine), Some(theirs)) => {
            mine.extend(theirs);
            Ok(())
        }
        _ => Err(differ(place)),
    }
}

fn merge_set(mine: &mut SetDef, theirs: SetDef) -> Result<(), ScriptError> {
    if mine.name != theirs.name || mine.entries.len() != theirs.entries.len() {
        return Err(differ(&mine.place));
    }
    merge_hook(&mut mine.on_start, theirs.on_start, &mine.place)?;
    merge_hook(&mut mine.on_stop, theirs.on_stop, &mine.place)?;
    for (a, b) in mine.entries.iter_mut().zip(theirs.entries) {
        match (a, b) {
            (
                EntryDef::Task {
                    name, functions, ..
                },
                EntryDef::Task {
                    name: other_name,
                    functions: other_functions,
                    ..
                },
            ) if *name == other_name => functions.extend(other_functions),
            (EntryDef::Set(a), EntryDef::Set(b)) => merge_set(a, b)?,
            _ => return Err(differ(&mine.place)),
        }
    }
    Ok(())
}

fn wait_time(script: &Arc<Script>, wait: WaitDef) -> WaitTime {
    match wait {
        WaitDef::Between(a, b) => between(a, b),
        WaitDef::Constant(s) => constant(s),
        WaitDef::Pacing(s) => constant_pacing(s),
        WaitDef::Throughput(r) => constant_throughput(r),
        WaitDef::Function(f) => {
            let script = script.clone();
            custom_wait(move |context: &mut WaitContext<'_>| {
                match script.vms[0].call::<f64>(&f, context.task_elapsed.as_secs_f64()) {
                    Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                        Duration::from_secs_f64(seconds)
                    }
                    Ok(seconds) => {
                        tracing::error!(
                            "the wait_time function returned {seconds}; waiting 1s instead"
                        );
                        Duration::from_secs(1)
                    }
                    Err(error) => {
                        tracing::error!(
                            "the wait_time function failed (waiting 1s instead): {}",
                            crate::lua_message(&error)
                        );
                        Duration::from_secs(1)
                    }
                }
            })
        }
    }
}

fn lua_task(script: &Arc<Script>, type_index: usize, functions: Vec<Function>) -> LuaTask {
    LuaTask {
        script: script.clone(),
        type_index,
        functions,
    }
}

fn task_set(script: &Arc<Script>, type_index: usize, def: SetDef) -> TaskSet<LuaUser> {
    let mut set = if def.sequential {
        TaskSet::sequential(def.name)
    } else {
        TaskSet::random(def.name)
    };
    set = set.weight(def.weight);
    for tag in def.tags {
        set = set.tag(tag);
    }
    if let Some(wait) = def.wait {
        set = set.wait_time(wait_time(script, wait));
    }
    if let Some(functions) = def.on_start {
        set = set.on_start(lua_task(script, type_index, functions));
    }
    if let Some(functions) = def.on_stop {
        set = set.on_stop(lua_task(script, type_index, functions));
    }
    for entry in def.entries {
        set = match entry {
            EntryDef::Task {
                name,
                weight,
                tags,
                functions,
            } => set.task(task(script, type_index, name, weight, tags, functions)),
            EntryDef::Set(nested) => set.task(task_set(script, type_index, nested)),
        };
    }
    set
}

fn task(
    script: &Arc<Script>,
    type_index: usize,
    name: String,
    weight: u32,
    tags: Vec<String>,
    functions: Vec<Function>,
) -> Task<LuaUser> {
    let mut task = Task::new(lua_task(script, type_index, functions))
        .name(name)
        .weight(weight);
    for tag in tags {
        task = task.tag(tag);
    }
    task
}

fn user_type(
    script: &Arc<Script>,
    type_index: usize,
    def: TypeDef,
) -> Result<UserType<LuaUser>, ScriptError> {
    let body = def.body;
    let for_states = script.clone();
    let mut user_type = UserType::with_state(body.name.clone(), move || {
        LuaUser::new(for_states.next_vm())
    })
    .weight(def.weight);
    if let Some(count) = def.fixed_count {
        user_type = user_type.fixed_count(count);
    }
    if let Some(host) = def.host {
        user_type = user_type.host(host);
    }
    if let Some(client) = def.client {
        user_type = user_type.client_options(client);
    }
    if let Some(rate) = def.arrival {
        user_type = user_type.arrival_rate(rate);
    }
    if let Some(wait) = body.wait {
        user_type = user_type.wait_time(wait_time(script, wait));
    }
    for tag in body.tags {
        user_type = user_type.tag(tag);
    }
    if let Some(functions) = body.on_start {
        user_type = user_type.on_start(lua_task(script, type_index, functions));
    }
    if let Some(functions) = body.on_stop {
        user_type = user_type.on_stop(lua_task(script, type_index, functions));
    }
    for entry in body.entries {
        user_type = match entry {
            EntryDef::Task {
                name,
                weight,
                tags,
                functions,
            } => user_type.task(task(script, type_index, name, weight, tags, functions)),
            EntryDef::Set(nested) => user_type.task(task_set(script, type_index, nested)),
        };
    }
    Ok(user_type)
}

/// Listeners by event name, from the first state.
pub(crate) type Listeners = Vec<(String, Vec<Function>)>;

fn read_listeners(vm: &Vm) -> Result<Listeners, ScriptError> {
    let table: Table = vm.registry.get("listeners").map_err(internal)?;
    let mut out = Vec::new();
    for pair in table.pairs::<String, Table>() {
        let (event, list) = pair.map_err(internal)?;
        let functions = list
            .sequence_values::<Function>()
            .collect::<mlua::Result<Vec<_>>>()
            .map_err(internal)?;
        out.push((event, functions));
    }
    Ok(out)
}

/// `cicada.shape(function(run_time) .. end)`: called once a second in the first state.
struct LuaShape {
    script: Arc<Script>,
    tick: Function,
}

impl LoadShape for LuaShape {
    fn tick(&mut self, run_time: Duration) -> Option<Target> {
        let answer: Option<Table> =
            match self.script.vms[0].call(&self.tick, run_time.as_secs_f64()) {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::error!(
                        "the load shape failed, so the test ends: {}",
                        crate::lua_message(&error)
                    );
                    return None;
                }
            };
        let answer = answer?;
        let read = || -> mlua::Result<Target> {
            let user_types: Option<Vec<String>> = answer.get("user_types")?;
            Ok(Target {
                users: answer.get("users")?,
                spawn_rate: answer.get("spawn_rate")?,
                user_types,
            })
        };
        match read() {
            Ok(target) => Some(target),
            Err(error) => {
                tracing::error!(
                    "the load shape returned something other than {{ users = N, spawn_rate = R }}, so the test \
                     ends: {}",
                    crate::lua_message(&error)
                );
                None
            }
        }
    }
}
