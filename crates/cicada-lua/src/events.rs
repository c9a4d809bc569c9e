//! The test's `cicada.on(event, listener)` listeners, attached to the engine's events. Listeners run in the first
//! Lua state, synchronously where the engine fires the event; an error in one is logged (at most once a second per
//! event) and the run goes on. A `request` listener runs for every request, under that state's lock: keep it short.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cicada::{Cicada, RunnerHandle};
use mlua::{Function, IntoLuaMulti, Lua, Table};

use crate::script::{Listeners, Script};

/// Listeners of one event, with the place to run them.
struct EventListeners {
    script: Arc<Script>,
    event: String,
    functions: Vec<Function>,
    /// Milliseconds since `origin` of the last logged failure, so a failing `request` listener logs once a second.
    last_logged_ms: AtomicU64,
    origin: Instant,
}

impl EventListeners {
    fn lua(&self) -> &Lua {
        &self.script.vms[0].lua
    }

    fn fire(&self, args: impl Fn(&Lua) -> mlua::Result<mlua::MultiValue>) {
        for function in &self.functions {
            let vm = &self.script.vms[0];
            let outcome = args(self.lua()).and_then(|args| vm.call::<()>(function, args));
            if let Err(error) = outcome {
                let now = self.origin.elapsed().as_millis() as u64 + 1_000;
                let last = self.last_logged_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 1_000
                    && self
                        .last_logged_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::error!(
                        "the Lua listener of `{}` failed: {}",
                        self.event,
                        crate::lua_message(&error)
                    );
                }
            }
        }
    }
}

fn no_args(lua: &Lua) -> mlua::Result<mlua::MultiValue> {
    ().into_lua_multi(lua)
}

fn table(
    lua: &Lua,
    fill: impl FnOnce(&Table) -> mlua::Result<()>,
) -> mlua::Result<mlua::MultiValue> {
    let table = lua.create_table()?;
    fill(&table)?;
    table.into_lua_multi(lua)
}

/// Attach every listener, and keep the runner's handle for `cicada.runner` once the test is set up.
pub(crate) fn register(
    mut cicada: Cicada,
    script: &Arc<Script>,
    listeners: Listeners,
    runner: Arc<OnceLock<RunnerHandle>>,
) -> Cicada {
    cicada = cicada.on_init(move |env| {
        let _ = runner.set(env.runner().clone());
    });
    for (event, functions) in listeners {
        let set = Arc::new(EventListeners {
            script: script.clone(),
            event: event.clone(),
            functions,
            last_logged_ms: AtomicU64::new(0),
            origin: Instant::now(),
        });
        cicada = match event.as_str() {
            "init" => cicada.on_init(move |_| set.fire(no_args)),
            "test_start" => cicada.on_test_start(move |_| set.fire(no_args)),
            "test_stopping" => cicada.on_test_stopping(move |_| set.fire(no_args)),
            "test_stop" => cicada.on_test_stop(move |_| set.fire(no_args)),
            "reset_stats" => cicada.on_reset_stats(move |_| set.fire(no_args)),
            "quitting" => cicada.on_quitting(move |_| set.fire(no_args)),
            "quit" => cicada.on_quit(move |code| set.fire(|lua| code.into_lua_multi(lua))),
            "spawning_complete" => cicada
                .on_spawning_complete(move |_, users| set.fire(|lua| users.into_lua_multi(lua))),
            "cpu_warning" => {
                cicada.on_cpu_warning(move |_, percent| set.fire(|lua| percent.into_lua_multi(lua)))
            }
            "request" => cicada.on_request(move |request| {
                set.fire(|lua| {
                    table(lua, |t| {
                        t.set("request_type", request.method)?;
                        t.set("name", request.name)?;
                        t.set(
                            "response_time",
                            request.response_time.as_secs_f64() * 1000.0,
                        )?;
                        t.set("response_length", request.content_length)?;
                        t.set("error", request.error)?;
                        t.set("user_type", request.user_type)
                    })
                })
            }),
            "user_error" => cicada.on_user_error(move |error| {
                set.fire(|lua| {
                    table(lua, |t| {
                        t.set("user_type", error.user_type)?;
                        t.set("message", error.message)?;
                        t.set("location", error.location)
                    })
                })
            }),
            "usage_monitor" => cicada.on_usage_monitor(move |_, usage| {
                set.fire(|lua| {
                    table(lua, |t| {
                        t.set("cpu_percent", usage.cpu_percent_of_available)?;
                        t.set("cpu_percent_of_core", usage.cpu_percent_of_core)?;
                        t.set("rss_bytes", usage.rss_bytes)?;
                        t.set("memory_percent", usage.memory_percent_of_limit)
                    })
                })
            }),
            // The prelude accepts only the names above.
            _ => cicada,
        };
    }
    cicada
}
