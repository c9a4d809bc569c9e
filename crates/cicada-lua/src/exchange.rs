//! Custom messages and test data in Lua: `cicada.on_message` / `cicada.send_message` / `cicada.send_message_to` /
//! `cicada.workers`, and `cicada.data_source` / `self:next_item` / `cicada.push_item` / `cicada.csv_cycle`, on top of
//! the engine's [`cicada::messages`] and [`cicada::data`].
//!
//! Values cross between Lua and the engine as JSON (`serde_json::Value`, converted by mlua's serde support): a
//! message's data and a test data item may be anything JSON can hold (nil, booleans, numbers, strings, tables),
//! never a function or a userdata. A message handler runs in the first Lua state, like the test's event listeners:
//! the engine runs each received message on a task of its own, and that task calls the handler there, under the
//! state's lock. Users in other states do not see the globals a handler sets; a handler hands data to every user
//! of the cluster with `cicada.push_item` (a `pushed` source), which is what crosses states and processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cicada::Cicada;
use cicada::data::{CsvCycle, DataSource, TestData, WhenExhausted};
use cicada::messages::{Message, MessageSource, Messages};
use mlua::{Function, Lua, LuaSerdeExt, Table, UserData, UserDataMethods, Value};

use crate::ScriptError;
use crate::script::Script;

/// Distinct CSV files one test may open with `cicada.csv_cycle` (each is read once per process and kept in memory,
/// decoded; the engine bounds each file's size).
pub(crate) const MAX_CSV_CYCLES: usize = 64;

/// What every Lua state of a test reaches: the run's messages and test data once the run is set up, and the CSV
/// files opened with `cicada.csv_cycle`, shared so that the users of all states take the rows in turn.
#[derive(Default)]
pub(crate) struct Shared {
    run: OnceLock<(Messages, TestData)>,
    csv_cycles: Mutex<HashMap<PathBuf, CsvCycle<CsvRow>>>,
}

impl Shared {
    fn messages(&self, what: &str) -> mlua::Result<&Messages> {
        self.run.get().map(|(messages, _)| messages).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "{what}: the test has not started yet (send messages from tasks, events or handlers)"
            ))
        })
    }

    fn data(&self, what: &str) -> mlua::Result<&TestData> {
        self.run.get().map(|(_, data)| data).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "{what}: the test has not started yet (push items from tasks, events or handlers)"
            ))
        })
    }
}

/// A CSV row as Lua gets it: a table of its fields (strings) by column name, as Locust's `csv.DictReader` gives.
pub(crate) type CsvRow = std::collections::BTreeMap<String, String>;

/// How a value from the engine becomes a Lua value: JSON null is nil.
fn to_lua_options() -> mlua::serde::SerializeOptions {
    mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
}

/// A JSON value as a Lua value.
pub(crate) fn to_lua<T: serde::Serialize + ?Sized>(lua: &Lua, value: &T) -> mlua::Result<Value> {
    lua.to_value_with(value, to_lua_options())
}

/// A Lua value as JSON, or an error saying what cannot be sent.
fn from_lua(lua: &Lua, value: Value, what: &str) -> mlua::Result<serde_json::Value> {
    lua.from_value(value).map_err(|error| {
        mlua::Error::runtime(format!(
            "{what}: the value cannot be sent as JSON ({}): send nil, booleans, numbers, strings and tables of them",
            crate::lua_message(&error)
        ))
    })
}

/// Where a message came from, as a handler sees it: "local", "master" or the worker's id.
fn source_name(source: &MessageSource) -> &str {
    match source {
        MessageSource::Local => "local",
        MessageSource::Master => "master",
        MessageSource::Worker(id) => id.as_str(),
    }
}

/// The source a handler names, back as the engine's (for a reply).
fn source_from_name(name: &str) -> MessageSource {
    match name {
        "local" => MessageSource::Local,
        "master" => MessageSource::Master,
        worker => MessageSource::Worker(worker.to_string()),
    }
}

/// A file a test names, relative to its folder (or, for a test without one, to the working directory).
fn resolve(folder: Option<&Path>, file: &str) -> PathBuf {
    let path = Path::new(file);
    match folder {
        Some(folder) if path.is_relative() => folder.join(path),
        _ => path.to_path_buf(),
    }
}

/// The native functions behind `cicada.send_message` and the others (the prelude wraps them, so that an error
/// names the caller's FILE:LINE).
pub(crate) fn install(
    lua: &Lua,
    native: &Table,
    shared: &Arc<Shared>,
    folder: Option<PathBuf>,
) -> mlua::Result<()> {
    let run = shared.clone();
    native.set(
        "send_message",
        lua.create_function(move |lua, (kind, data): (String, Value)| {
            let data = from_lua(lua, data, "cicada.send_message")?;
            run.messages("cicada.send_message")?
                .send(&kind, &data)
                .map_err(|e| mlua::Error::runtime(format!("cicada.send_message: {e}")))
        })?,
    )?;
    let run = shared.clone();
    native.set(
        "send_message_to",
        lua.create_function(move |lua, (worker, kind, data): (String, String, Value)| {
            let data = from_lua(lua, data, "cicada.send_message_to")?;
            let messages = run.messages("cicada.send_message_to")?;
            // "master" and "local" are what a handler's `source` says: answering it must work as a reply does.
            messages
                .reply(&source_from_name(&worker), &kind, &data)
                .map_err(|e| mlua::Error::runtime(format!("cicada.send_message_to: {e}")))
        })?,
    )?;
    let run = shared.clone();
    native.set(
        "workers",
        lua.create_function(move |_, ()| Ok(run.messages("cicada.workers")?.workers()))?,
    )?;
    let run = shared.clone();
    native.set(
        "push_item",
        lua.create_function(move |lua, (name, item): (String, Value)| {
            let item = from_lua(lua, item, "cicada.push_item")?;
            run.data("cicada.push_item")?
                .push(&name, &item)
                .map_err(|e| mlua::Error::runtime(format!("cicada.push_item: {e}")))
        })?,
    )?;
    let cycles = shared.clone();
    native.set(
        "csv_cycle",
        lua.create_function(move |_, file: String| {
            let path = resolve(folder.as_deref(), &file);
            let mut open = cycles.csv_cycles.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cycle) = open.get(&path) {
                return Ok(LuaCsvCycle(cycle.clone()));
            }
            if open.len() >= MAX_CSV_CYCLES {
                return Err(mlua::Error::runtime(format!(
                    "cicada.csv_cycle: a test may open at most {MAX_CSV_CYCLES} CSV files"
                )));
            }
            let cycle = CsvCycle::<CsvRow>::open(&path)
                .map_err(|e| mlua::Error::runtime(format!("cicada.csv_cycle: {e}")))?;
            open.insert(path, cycle.clone());
            Ok(LuaCsvCycle(cycle))
        })?,
    )?;
    Ok(())
}

/// `cicada.csv_cycle(file)`: the rows of a CSV file, each a table by column name, in turn and from the first again
/// after the last. One per file and process: every Lua state gets the same, so the users share the position.
struct LuaCsvCycle(CsvCycle<CsvRow>);

impl UserData for LuaCsvCycle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("next", |lua, this, ()| to_lua(lua, this.0.next()));
        methods.add_method("len", |_, this, ()| Ok(this.0.len()));
        methods.add_meta_method("__len", |_, this, ()| Ok(this.0.len()));
    }
}

/// A `cicada.data_source(name, { .. })` as the prelude checked it.
struct SourceDef {
    name: String,
    place: String,
    source: DataSource,
}

/// A `cicada.on_message(kind, handler)`.
pub(crate) struct HandlerDef {
    kind: String,
    handler: Function,
}

/// What the test file registered in the first state: its message handlers and its data sources.
pub(crate) struct ExchangeDefs {
    handlers: Vec<HandlerDef>,
    sources: Vec<SourceDef>,
    /// `cicada.check` expressions, already parsed once (a bad one is a definition error with its FILE:LINE).
    checks: Vec<String>,
}

fn internal(error: mlua::Error) -> ScriptError {
    ScriptError::Internal(error.to_string())
}

/// Read the handlers and the sources from a state's registry (the first one's: every state defines the same).
pub(crate) fn read(
    lua: &Lua,
    registry: &Table,
    folder: Option<&Path>,
) -> Result<ExchangeDefs, ScriptError> {
    let mut handlers = Vec::new();
    let list: Table = registry.get("messages").map_err(internal)?;
    for entry in list.sequence_values::<Table>() {
        let entry = entry.map_err(internal)?;
        handlers.push(HandlerDef {
            kind: entry.get("kind").map_err(internal)?,
            handler: entry.get("handler").map_err(internal)?,
        });
    }
    let mut checks = Vec::new();
    let list: Table = registry.get("checks").map_err(internal)?;
    for entry in list.sequence_values::<Table>() {
        let entry = entry.map_err(internal)?;
        let expr: String = entry.get("expr").map_err(internal)?;
        let place: String = entry.get("where").map_err(internal)?;
        if let Err(error) = cicada::checks::Check::parse(&expr) {
            return Err(ScriptError::Definition(format!(
                "{place}: cicada.check({expr:?}): {error}"
            )));
        }
        checks.push(expr);
    }
    let mut sources = Vec::new();
    let list: Table = registry.get("data_sources").map_err(internal)?;
    for entry in list.sequence_values::<Table>() {
        let entry = entry.map_err(internal)?;
        let name: String = entry.get("name").map_err(internal)?;
        let place: String = entry.get("where").map_err(internal)?;
        let origin: String = entry.get("origin").map_err(internal)?;
        let mut source = match origin.as_str() {
            "iter" => {
                let items: Value = entry.get("value").map_err(internal)?;
                let items: Vec<serde_json::Value> = lua.from_value(items).map_err(|error| {
                    ScriptError::Definition(format!(
                        "{place}: cicada.data_source(\"{name}\"): iter must be a list of values JSON can hold: {}",
                        crate::lua_message(&error)
                    ))
                })?;
                DataSource::iter(items)
            }
            "csv" => DataSource::csv(resolve(
                folder,
                &entry.get::<String>("value").map_err(internal)?,
            )),
            "json_lines" => DataSource::json_lines(resolve(
                folder,
                &entry.get::<String>("value").map_err(internal)?,
            )),
            _ => DataSource::pushed(),
        };
        let when: String = entry.get("when_exhausted").map_err(internal)?;
        source = source.when_exhausted(match when.as_str() {
            "wait" => WhenExhausted::Wait,
            "cycle" => WhenExhausted::Cycle,
            _ => WhenExhausted::StopUser,
        });
        if let Some(batch) = entry.get::<Option<usize>>("batch_size").map_err(internal)? {
            source = source.batch_size(batch);
        }
        sources.push(SourceDef {
            name,
            place,
            source,
        });
    }
    Ok(ExchangeDefs {
        handlers,
        sources,
        checks,
    })
}

/// Register the checks, the handlers and the sources with the engine, and hand the run's messages and data to the Lua side once
/// the run is set up.
pub(crate) fn register(
    mut cicada: Cicada,
    script: &Arc<Script>,
    defs: ExchangeDefs,
    shared: Arc<Shared>,
) -> Cicada {
    cicada = cicada.on_init(move |env| {
        let _ = shared.run.set((env.messages().clone(), env.data().clone()));
    });
    for expr in defs.checks {
        cicada = cicada.check(expr);
    }
    for source in defs.sources {
        tracing::debug!(
            "test data source {:?} defined at {}",
            source.name,
            source.place
        );
        cicada = cicada.data_source(&source.name, source.source);
    }
    for HandlerDef { kind, handler } in defs.handlers {
        let script = script.clone();
        let handler = Arc::new(handler);
        cicada = cicada.on_message(&kind, move |_env, message: Message<serde_json::Value>| {
            let script = script.clone();
            let handler = handler.clone();
            async move { run_handler(&script, &handler, message) }
        });
    }
    cicada
}

/// Call a message's handler in the first state; an error is logged with its FILE:LINE (the engine has no one to
/// return it to).
fn run_handler(script: &Script, handler: &Function, message: Message<serde_json::Value>) {
    let vm = &script.vms[0];
    let outcome = to_lua(&vm.lua, &message.data)
        .and_then(|data| vm.call::<()>(handler, (data, source_name(&message.source))));
    if let Err(error) = outcome {
        tracing::error!(
            "the Lua handler of message {:?} failed: {}",
            message.kind,
            crate::lua_message(&error)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_their_names() {
        for source in [
            MessageSource::Local,
            MessageSource::Master,
            MessageSource::Worker("w-1".to_string()),
        ] {
            assert_eq!(source_from_name(source_name(&source)), source);
        }
    }

    #[test]
    fn files_are_relative_to_the_test_folder() {
        assert_eq!(
            resolve(Some(Path::new("/tests/shop")), "data/ids.csv"),
            PathBuf::from("/tests/shop/data/ids.csv")
        );
        assert_eq!(
            resolve(Some(Path::new("/tests/shop")), "/srv/ids.csv"),
            PathBuf::from("/srv/ids.csv")
        );
        assert_eq!(resolve(None, "ids.csv"), PathBuf::from("ids.csv"));
    }

    #[test]
    fn json_values_become_lua_values_and_back() {
        let lua = Lua::new();
        let value = serde_json::json!({ "id": 7, "tags": ["a", "b"], "ok": true, "none": null });
        let converted = to_lua(&lua, &value).unwrap();
        let table = converted.as_table().unwrap();
        assert_eq!(table.get::<i64>("id").unwrap(), 7);
        assert!(table.get::<Value>("none").unwrap().is_nil());
        let back = from_lua(&lua, converted, "test").unwrap();
        assert_eq!(back["tags"], serde_json::json!(["a", "b"]));
        let function = Value::Function(lua.create_function(|_, ()| Ok(())).unwrap());
        let refused = from_lua(&lua, function, "cicada.send_message").unwrap_err();
        assert!(
            refused.to_string().contains("cannot be sent as JSON"),
            "{refused}"
        );
    }
}
