//! Builds the web UI (../../web, with npm) and hands its files to the crate through OUT_DIR.
//!
//! The UI's dependencies come from web/package-lock.json (`npm ci`), so nothing third-party is committed. Without
//! Node and npm, or with `CICADA_SKIP_WEB_BUILD=1`, a small page explaining how to get the UI is embedded instead,
//! and the rest of cicada (headless runs, reports) works as usual.

use std::path::{Path, PathBuf};
use std::process::Command;

const ASSETS: [&str; 4] = ["index.html", "app.js", "app.css", "report.html"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    for input in ["src", "build.mjs", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CICADA_SKIP_WEB_BUILD");
    let outcome = if std::env::var_os("CICADA_SKIP_WEB_BUILD").is_some() {
        Err("CICADA_SKIP_WEB_BUILD is set".to_string())
    } else if !web.join("package.json").exists() {
        Err("web/package.json is missing".to_string())
    } else {
        build_ui(&web)
    };
    match outcome {
        Ok(()) => {
            for asset in ASSETS {
                std::fs::copy(web.join("dist").join(asset), out.join(asset))
                    .unwrap_or_else(|e| panic!("copying web/dist/{asset}: {e}"));
            }
            std::fs::write(out.join("ui_built"), "true").expect("write OUT_DIR");
        }
        Err(reason) => {
            println!(
                "cargo:warning=the web UI was not built ({reason}); the UI will show how to build it"
            );
            write_placeholders(&out, &reason);
        }
    }
}

fn npm(web: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .status()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`npm {}` failed with {status}", args.join(" ")))
    }
}

fn build_ui(web: &Path) -> Result<(), String> {
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let stale = match (std::fs::metadata(&lock), std::fs::metadata(&installed)) {
        (Ok(lock), Ok(installed)) => lock.modified().ok() > installed.modified().ok(),
        _ => true,
    };
    if stale {
        npm(web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"])?;
    }
    npm(web, &["run", "--silent", "build"])?;
    for asset in ASSETS {
        if !web.join("dist").join(asset).exists() {
            return Err(format!("the UI build did not produce dist/{asset}"));
        }
    }
    Ok(())
}

fn write_placeholders(out: &Path, reason: &str) {
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>cicada</title><body style=\"font-family:sans-serif\">\
         <h1>cicada</h1><p>The web UI was not built into this binary ({}). Install Node.js 20 and npm, then \
         rebuild (<code>cargo build</code> runs <code>npm ci</code> and <code>npm run build</code> in \
         <code>web/</code>). The JSON API (<code>/stats/requests</code>, <code>/swarm</code>, <code>/stop</code>) \
         works without it.</p>",
        reason.replace('<', "&lt;")
    );
    std::fs::write(out.join("index.html"), &page).expect("write OUT_DIR");
    std::fs::write(out.join("app.js"), "").expect("write OUT_DIR");
    std::fs::write(out.join("app.css"), "").expect("write OUT_DIR");
    let report = "<!doctype html><meta charset=utf-8><title>cicada report</title><body>\
                  <h1>cicada report</h1><p>The report viewer was not built into this binary; the data follows.</p>\
                  <pre id=raw></pre><script id=\"cicada-data\" type=\"application/json\">__CICADA_REPORT_DATA__</script>\
                  <script>document.getElementById('raw').textContent=document.getElementById('cicada-data').textContent</script>";
    std::fs::write(out.join("report.html"), report).expect("write OUT_DIR");
    std::fs::write(out.join("ui_built"), "false").expect("write OUT_DIR");
}
