//! Lua test files for cicada: a test written in Lua (user types, weighted and tagged tasks, task sets, wait times,
//! the HTTP client, events, load shapes, custom messages and test data) runs on the same engine as a compiled one, with the same options, reports
//! and exit codes. The `cicada` binary runs them: `cicada -f cicadafile.lua --headless -u 10 -t 30s`.
//!
//! ```no_run
//! let test = cicada_lua::LuaTest::load(std::path::Path::new("cicadafile.lua")).expect("a valid test");
//! let code = test.cicada().run_with_args(["cicada", "--headless", "-u", "10", "-t", "30s"]);
//! # let _ = code;
//! ```
//!
//! How it works: the test file runs in a few Lua 5.4 states (one per runtime thread; `vm` builds one), each user
//! lives in one of them, and each task runs as a coroutine there that yields to the Rust driver (`driver`)
//! whenever it needs its user: a request, a sleep, a cookie. `script` turns the definitions into the engine's
//! user types, [`bundle`] keeps the sources as one serializable value, `http` is the client as Lua sees it,
//! `events` attaches listeners and `exchange` binds custom messages and test data. docs/scripting.md has the whole API and the measurements behind the design.

pub mod bundle;
mod driver;
mod events;
mod exchange;
mod http;
mod script;
mod vm;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use bundle::{ScriptBundle, ScriptSource};
pub use driver::LuaUser;

/// Why a Lua test could not be loaded. Every variant's text names the file (and line, where Lua knows it).
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The test file (or a module) cannot be read.
    #[error("cannot read the Lua test {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A syntax error, or an error raised while the file ran (a bad `cicada.user { .. }` among them): `FILE:LINE:
    /// message`.
    #[error("{0}")]
    Lua(String),
    /// A definition that ran but makes no test (no user types, a type without tasks).
    #[error("{0}")]
    Definition(String),
    /// The interpreter itself failed (out of memory while starting, say).
    #[error("the Lua interpreter failed: {0}")]
    Internal(String),
}

impl ScriptError {
    /// A load-time error: its message alone (`FILE:LINE: ...`); the traceback would show cicada's own frames.
    pub(crate) fn from_lua(error: &mlua::Error) -> ScriptError {
        ScriptError::Lua(split_traceback(&lua_message(error)).0)
    }
}

/// The text of a Lua error as a user should read it: the innermost message, with its traceback when it has one.
pub(crate) fn lua_message(error: &mlua::Error) -> String {
    match error {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(message) => message.clone(),
        mlua::Error::ExternalError(cause) => cause.to_string(),
        mlua::Error::MemoryError(message) => format!(
            "the Lua state ran out of memory (raise cicada.settings {{ memory_limit_mib = .. }} if the test needs \
             more): {message}"
        ),
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", lua_message(cause))
        }
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", lua_message(cause)),
        other => other.to_string(),
    }
}

/// Strip what mlua puts before a Rust error's text when Lua code turns it into a string.
pub(crate) fn strip_error_kind(message: &str) -> &str {
    message.strip_prefix("runtime error: ").unwrap_or(message)
}

/// Split `message\nstack traceback:\n...` into its message and its traceback.
pub(crate) fn split_traceback(text: &str) -> (String, String) {
    match text.find("\nstack traceback:") {
        Some(at) => (text[..at].to_string(), text[at + 1..].to_string()),
        None => (text.to_string(), String::new()),
    }
}

/// A loaded Lua test, ready to run.
pub struct LuaTest {
    bundle: ScriptBundle,
    cicada: cicada::Cicada,
}

impl LuaTest {
    /// Load the test file at `path` (and the modules it requires from its folder) into one Lua state per core.
    pub fn load(path: &Path) -> Result<LuaTest, ScriptError> {
        let source = bundle::read_source(path)?;
        let folder = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        });
        let main = ScriptSource {
            name: bundle::display_name(path),
            source,
        };
        Self::load_bundle(
            ScriptBundle::from_parts(main, Default::default()),
            folder,
            default_states(),
        )
    }

    /// Load a test from its bundle (say, one a cluster master sent), into `states` Lua states. With `folder`,
    /// `require` and `cicada.read_file` also look there; without, only the bundle's modules exist.
    pub fn load_bundle(
        bundle: ScriptBundle,
        folder: Option<PathBuf>,
        states: usize,
    ) -> Result<LuaTest, ScriptError> {
        let natives = vm::Natives {
            tree: bundle::SourceTree::new(folder, bundle.modules.clone()),
            runner: Arc::new(OnceLock::new()),
            exchange: Arc::default(),
        };
        let mut vms = Vec::with_capacity(states.max(1));
        for _ in 0..states.max(1) {
            vms.push(vm::Vm::load(&bundle.main, &natives)?);
        }
        let bundle = ScriptBundle::from_parts(bundle.main, natives.tree.modules());
        let cicada = script::Script::build(
            vms,
            &bundle.main.name,
            natives.runner,
            natives.exchange,
            natives.tree.folder.as_deref(),
        )?;
        Ok(LuaTest { bundle, cicada })
    }

    /// The test's sources: the file and every module it required while loading.
    pub fn bundle(&self) -> &ScriptBundle {
        &self.bundle
    }

    /// The test as the engine's [`cicada::Cicada`], to run with [`cicada::Cicada::run_with_args`].
    pub fn cicada(self) -> cicada::Cicada {
        self.cicada
    }
}

/// Lua states a test gets by default: one per core the runtime uses, so users on different threads rarely share
/// one. `CICADA_LUA_STATES=N` overrides it (1 to 1,024), to measure the cost of sharing.
pub fn default_states() -> usize {
    std::env::var("CICADA_LUA_STATES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=1_024).contains(n))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Load the Lua test at `path` and run it with `args` (the first being the program's name, as for
/// [`cicada::Cicada::run_with_args`]); a test that does not load prints why and returns exit code 2.
pub fn run_file<I, T>(path: &Path, args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match LuaTest::load(path) {
        Ok(test) => {
            // A master serves the test to workers started without it (`cicada --worker -f -`).
            let payload = serde_json::to_vec(test.bundle()).unwrap_or_default();
            let name = test.bundle().main.name.clone();
            test.cicada().test_source(name, payload).run_with_args(args)
        }
        Err(error) => {
            eprintln!("error: {error}");
            i32::from(cicada::EXIT_USAGE)
        }
    }
}

/// `cicada --worker -f -`: take the test (the file and the modules it required) from the master named by `args`
/// (`--master-host`, `--master-port`, the token and TLS flags, waiting up to `--master-timeout`), load it without
/// a folder, and run it as a worker with `args`. A master that refuses, runs a compiled test, or sends a test that
/// does not load ends the process with exit code 2; no master at all with 3.
pub fn run_from_master<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let (name, payload) = match cicada::fetch_test_source(args.clone()) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("error: -f -: {error}");
            return error.exit_code();
        }
    };
    let bundle: ScriptBundle = match serde_json::from_slice(&payload) {
        Ok(bundle) => bundle,
        Err(error) => {
            eprintln!(
                "error: -f -: the master's test {name:?} is not a Lua test this cicada can read ({error}): run the same \
                 cicada build on the master and the workers"
            );
            return i32::from(cicada::EXIT_USAGE);
        }
    };
    eprintln!("cicada: running {name}, as sent by the master (-f -)");
    match LuaTest::load_bundle(bundle, None, default_states()) {
        Ok(test) => test.cicada().run_with_args(args),
        Err(error) => {
            eprintln!("error: -f -: the master's test {name}: {error}");
            i32::from(cicada::EXIT_USAGE)
        }
    }
}
