//! The binding in-process against the demo target on 127.0.0.1:0: a test shipped as a bundle (without its folder,
//! as a cluster worker gets it), and the memory limit of a Lua state.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cicada_demo::{DemoServer, Route};
use cicada_lua::{LuaTest, ScriptBundle};
use serde_json::Value;

struct Target {
    runtime: tokio::runtime::Runtime,
    server: Option<DemoServer>,
}

impl Target {
    fn start() -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(DemoServer::start("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        Target {
            runtime,
            server: Some(server),
        }
    }

    fn server(&self) -> &DemoServer {
        self.server.as_ref().unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// Run `test` headless against `target` for `seconds`; returns the exit code and the JSON report.
fn run(test: LuaTest, target: &Target, users: u32, seconds: u32) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let users = users.to_string();
    let time = format!("{seconds}s");
    let args = [
        "cicada",
        "--headless",
        "--only-summary",
        "-H",
        &target.server().url(),
        "-u",
        &users,
        "-r",
        "100",
        "-t",
        &time,
        "--report-json",
        report.to_str().unwrap(),
    ];
    let code = test.cicada().run_with_args(args);
    let report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (code, report)
}

#[test]
fn a_bundle_runs_without_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("common")).unwrap();
    std::fs::write(
        dir.path().join("common/paths.lua"),
        "return { fast = '/fast' }\n",
    )
    .unwrap();
    let main = dir.path().join("shop.lua");
    std::fs::write(
        &main,
        r#"
local paths = require("common.paths")
local U = cicada.user { name = "U" }
U:task(function(self)
  self.done = (self.done or 0) + 1
  self.client:get(paths.fast)
  if self.done == 3 then self:stop_user() end
end)
"#,
    )
    .unwrap();
    let loaded = LuaTest::load(&main).unwrap();
    let bundle = loaded.bundle().clone();
    assert_eq!(bundle.modules.keys().collect::<Vec<_>>(), ["common.paths"]);
    // Over the wire and back, then without the folder.
    let shipped: ScriptBundle =
        serde_json::from_str(&serde_json::to_string(&bundle).unwrap()).unwrap();
    assert_eq!(shipped, bundle);
    drop(dir);
    let test = LuaTest::load_bundle(shipped, None, 2).unwrap();
    let target = Target::start();
    let (code, report) = run(test, &target, 2, 2);
    assert_eq!(code, 0);
    assert_eq!(target.server().counters().route(Route::Fast), 6);
    assert_eq!(report["stats"]["total"]["num_requests"], 6);
}

#[test]
fn a_bundle_without_the_module_it_requires_fails_to_load_with_its_name() {
    let main = cicada_lua::ScriptSource {
        name: "shop.lua".to_string(),
        source: "local x = require('common.missing')\n".to_string(),
    };
    let error = LuaTest::load_bundle(ScriptBundle::from_parts(main, BTreeMap::new()), None, 1)
        .err()
        .expect("no module");
    let text = error.to_string();
    assert!(text.contains("shop.lua:1:"), "{text}");
    assert!(text.contains("common.missing"), "{text}");
}

#[test]
fn a_state_out_of_memory_fails_the_task_not_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let main: PathBuf = dir.path().join("hog.lua");
    std::fs::write(
        &main,
        r#"
cicada.settings { memory_limit_mib = 16 }
local U = cicada.user { name = "U", wait_time = cicada.constant(0.05) }
U:task(function(self)
  local hoard = {}
  for i = 1, 1000000 do hoard[i] = string.rep("x", 100) .. i end
end)
U:task(function(self) self.client:get("/fast") end)
"#,
    )
    .unwrap();
    let test = LuaTest::load(&main).unwrap();
    let target = Target::start();
    let (code, report) = run(test, &target, 2, 3);
    assert_eq!(code, 1);
    let errors = report["stats"]["user_errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("not enough memory")),
        "{errors:?}"
    );
    // The users went on with their other task after running out.
    assert!(target.server().counters().route(Route::Fast) > 0);
}
