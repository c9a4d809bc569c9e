//! A test's Lua sources as one value: the test file and every local module it requires, so that a test can be
//! loaded again somewhere without its folder (a cluster worker given the test by its master, as Locust's `-f -`).
//!
//! Loading a test from disk starts a bundle with the test file alone; each `require` of a module next to it reads
//! the module once and adds it, so after the test has been loaded the bundle holds everything its top level
//! required. A bundle without a folder (made with [`ScriptBundle::from_parts`]) resolves `require` from its modules
//! only. Bound: modules are added only by `require`, at most [`MAX_MODULES`] of them, each at most
//! [`MAX_SOURCE_BYTES`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::ScriptError;

/// Modules one test may require (a bound on the bundle's size, far above any real test folder).
pub const MAX_MODULES: usize = 1_024;
/// Largest source file (test file or module) a bundle takes.
pub const MAX_SOURCE_BYTES: u64 = 16 * 1024 * 1024;

/// One Lua source file: the name its errors show (`shop/cart.lua`) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptSource {
    /// The name error messages and tracebacks show for this file.
    pub name: String,
    /// The Lua source.
    pub source: String,
}

/// A test file and the local modules it requires, serializable as one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptBundle {
    /// The test file.
    pub main: ScriptSource,
    /// Required modules by module name (`common.auth`).
    pub modules: BTreeMap<String, ScriptSource>,
}

impl ScriptBundle {
    /// A bundle from sources already in memory (no folder: `require` finds only these modules).
    pub fn from_parts(main: ScriptSource, modules: BTreeMap<String, ScriptSource>) -> Self {
        ScriptBundle { main, modules }
    }
}

/// Where `require` and `cicada.read_file` look: the bundle's modules, then the test's folder when there is one.
/// Shared by every Lua state of a test, so a module is read from disk once.
#[derive(Debug)]
pub(crate) struct SourceTree {
    pub(crate) folder: Option<PathBuf>,
    modules: Mutex<BTreeMap<String, ScriptSource>>,
}

impl SourceTree {
    pub(crate) fn new(
        folder: Option<PathBuf>,
        modules: BTreeMap<String, ScriptSource>,
    ) -> Arc<Self> {
        Arc::new(SourceTree {
            folder,
            modules: Mutex::new(modules),
        })
    }

    /// The source of module `name` (`common.auth`): from the bundle, or read from `common/auth.lua` (or
    /// `common/auth/init.lua`) in the test's folder and added to the bundle.
    pub(crate) fn module(&self, name: &str) -> Result<Option<ScriptSource>, String> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = modules.get(name) {
            return Ok(Some(found.clone()));
        }
        let Some(folder) = &self.folder else {
            return Ok(None);
        };
        let relative = module_path(name)?;
        for candidate in [relative.with_extension("lua"), relative.join("init.lua")] {
            let path = folder.join(&candidate);
            if !path.is_file() {
                continue;
            }
            if modules.len() >= MAX_MODULES {
                return Err(format!(
                    "module `{name}`: a test may require at most {MAX_MODULES} local modules"
                ));
            }
            let source = read_source(&path).map_err(|e| e.to_string())?;
            let source = ScriptSource {
                name: display_name(&path),
                source,
            };
            modules.insert(name.to_string(), source.clone());
            return Ok(Some(source));
        }
        Ok(None)
    }

    /// The modules found so far.
    pub(crate) fn modules(&self) -> BTreeMap<String, ScriptSource> {
        self.modules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A data file next to the test (`cicada.read_file("data/users.csv")`).
    pub(crate) fn read_file(&self, relative: &str) -> Result<Vec<u8>, String> {
        let Some(folder) = &self.folder else {
            return Err(format!(
                "cicada.read_file(\"{relative}\"): this test came without its folder, so it has no files to read"
            ));
        };
        let path = Path::new(relative);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            folder.join(path)
        };
        std::fs::read(&path)
            .map_err(|e| format!("cicada.read_file: cannot read {}: {e}", path.display()))
    }
}

/// `common.auth` -> `common/auth`; names that would leave the test folder are refused.
fn module_path(name: &str) -> Result<PathBuf, String> {
    let relative = PathBuf::from(name.replace('.', "/"));
    let plain = !name.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(format!(
            "module name `{name}` is not a plain dotted name inside the test's folder"
        ));
    }
    Ok(relative)
}

/// Read one source file, bounded by [`MAX_SOURCE_BYTES`].
pub(crate) fn read_source(path: &Path) -> Result<String, ScriptError> {
    let unreadable = |reason: String| ScriptError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !metadata.is_file() {
        return Err(unreadable("not a file".to_string()));
    }
    if metadata.len() > MAX_SOURCE_BYTES {
        return Err(unreadable(format!(
            "{} bytes, more than the {MAX_SOURCE_BYTES} a Lua source may have",
            metadata.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))
}

/// The name a file's errors show: the path as given, without a leading `./`.
pub(crate) fn display_name(path: &Path) -> String {
    let text = path.display().to_string();
    text.strip_prefix("./").map(str::to_string).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_stay_inside_the_folder() {
        assert_eq!(
            module_path("common.auth").unwrap(),
            PathBuf::from("common/auth")
        );
        assert!(module_path("..secret").is_err());
        assert!(module_path("").is_err());
        assert!(module_path("/etc/passwd").is_err());
    }

    #[test]
    fn modules_are_read_once_and_kept_in_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("common")).unwrap();
        std::fs::write(dir.path().join("common/auth.lua"), "return 1").unwrap();
        std::fs::write(dir.path().join("common/init.lua"), "return 2").unwrap();
        let tree = SourceTree::new(Some(dir.path().to_path_buf()), BTreeMap::new());
        assert_eq!(
            tree.module("common.auth").unwrap().unwrap().source,
            "return 1"
        );
        assert_eq!(tree.module("common").unwrap().unwrap().source, "return 2");
        assert!(tree.module("missing").unwrap().is_none());
        std::fs::remove_file(dir.path().join("common/auth.lua")).unwrap();
        // Kept: a second state of the same test reads the same source.
        assert_eq!(
            tree.module("common.auth").unwrap().unwrap().source,
            "return 1"
        );
        assert_eq!(tree.modules().len(), 2);

        let shipped = SourceTree::new(None, tree.modules());
        assert_eq!(
            shipped.module("common").unwrap().unwrap().source,
            "return 2"
        );
        assert!(shipped.module("missing").unwrap().is_none());
        assert!(shipped.read_file("data.csv").is_err());
    }
}
