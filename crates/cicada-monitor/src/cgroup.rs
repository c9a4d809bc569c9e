//! Cgroup discovery, done once when the monitor starts: which hierarchy (v1 controllers or the v2 unified
//! tree) holds the process's memory and CPU controllers, where the process's cgroup directories are, and the
//! tightest memory limit and CPU quota along the path from the process's cgroup up to the hierarchy's mount
//! point. The process's cgroup comes from `/proc/self/cgroup`; mount points and mount roots come from
//! `/proc/self/mountinfo`, so a container whose cgroup filesystem is mounted with a root other than `/` (no
//! cgroup namespace, e.g. Docker on v1 with root `/docker/<id>`) still finds its own directory. When the v1
//! memory controller is mounted (v1 or "hybrid" machines), v1 files are preferred; otherwise the unified
//! hierarchy is used.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::parse::{self, CgroupLine, LimitValue, Mount};

/// Which cgroup interface a controller's files were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Cgroup v1: one hierarchy per controller (`memory.limit_in_bytes`, `cpu.cfs_quota_us`, `cpuacct.usage`).
    V1,
    /// Cgroup v2, the unified hierarchy (`memory.max`, `cpu.max`, `cpu.stat`).
    V2,
}

/// Where one controller's files were found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerDir {
    /// The interface of the hierarchy.
    pub version: CgroupVersion,
    /// The process's own cgroup directory in that hierarchy.
    pub dir: PathBuf,
    /// The hierarchy's mount point: the walk up for limits stops there (parents above it are not visible).
    pub mount_point: PathBuf,
}

/// The cgroups the monitor reads, for reports and debugging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupInfo {
    /// The interface of the memory controller (or, without one, of the CPU controller): `V1` on v1 and
    /// hybrid machines, `V2` on unified ones.
    pub version: CgroupVersion,
    /// The memory controller: limits, `memory.usage_in_bytes` / `memory.current`, `memory.stat`.
    pub memory: Option<ControllerDir>,
    /// The CPU controller: the quota (`cpu.cfs_quota_us` / `cpu.max`).
    pub cpu: Option<ControllerDir>,
    /// The CPU accounting: `cpuacct.usage` (v1) or `cpu.stat` (v2).
    pub cpu_usage: Option<ControllerDir>,
    /// The directory holding the tightest memory limit, when there is one.
    pub memory_limit_dir: Option<PathBuf>,
    /// The directory holding the tightest CPU quota, when there is one.
    pub cpu_quota_dir: Option<PathBuf>,
}

impl CgroupInfo {
    /// True when the CPU accounting is the hierarchy's root cgroup: its usage is then the whole machine's
    /// (or the whole container's, inside a cgroup namespace), not just this process's group.
    pub fn cpu_usage_is_hierarchy_root(&self) -> bool {
        self.cpu_usage
            .as_ref()
            .is_some_and(|c| c.dir == c.mount_point)
    }
}

/// One cgroup along the path that carries a memory limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryLevel {
    pub(crate) dir: PathBuf,
    pub(crate) limit: u64,
}

/// What discovery found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Discovered {
    pub(crate) info: Option<CgroupInfo>,
    /// Every cgroup from the process's up to the mount point with a memory limit, innermost first.
    pub(crate) memory_levels: Vec<MemoryLevel>,
    /// The tightest quota along the path, in cores.
    pub(crate) cpu_quota_cores: Option<f64>,
    /// The process's unified (v2) cgroup directory, when the unified hierarchy is the one in use (for
    /// per-cgroup pressure files).
    pub(crate) unified_dir: Option<PathBuf>,
}

/// Reads a small file, `None` when it is absent or unreadable (normal during discovery: the root cgroup has no
/// `memory.max`, a v1 hierarchy may be missing).
fn read(path: &Path) -> Option<String> {
    match crate::text::read_text(path) {
        Ok(text) => Some(text),
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), %error, "cicada-monitor: cannot read");
            }
            None
        }
    }
}

/// `/sys/fs/cgroup/memory` under `fs_root` (the real root is `/`; tests use a temporary directory).
pub(crate) fn rebase(fs_root: &Path, absolute: &Path) -> PathBuf {
    fs_root.join(absolute.strip_prefix("/").unwrap_or(absolute))
}

/// Finds the process's directory in the hierarchy mounted with `fs_type` (and, for v1, `controller` among
/// its super options), given the process's path in that hierarchy.
fn resolve(
    mounts: &[Mount],
    fs_root: &Path,
    fs_type: &str,
    controller: Option<&str>,
    cgroup_path: &str,
) -> Option<(PathBuf, PathBuf)> {
    let candidates: Vec<&Mount> = mounts
        .iter()
        .filter(|m| m.fs_type == fs_type)
        .filter(|m| controller.is_none_or(|c| m.super_options.iter().any(|o| o == c)))
        .collect();
    let path = Path::new(cgroup_path);
    // The mount whose root is the longest prefix of the process's path (a bind mount of a sub-tree wins
    // over the whole hierarchy only if it actually contains the process's cgroup).
    let best = candidates
        .iter()
        .filter_map(|m| {
            path.strip_prefix(&m.root)
                .ok()
                .map(|relative| (*m, relative))
        })
        .max_by_key(|(m, _)| m.root.components().count());
    match best {
        Some((mount, relative)) => {
            let mount_point = rebase(fs_root, &mount.mount_point);
            let dir = if relative.as_os_str().is_empty() {
                mount_point.clone()
            } else {
                mount_point.join(relative)
            };
            if dir.is_dir() {
                Some((dir, mount_point))
            } else {
                tracing::debug!(
                    dir = %dir.display(),
                    "cicada-monitor: cgroup directory missing, using the mount point"
                );
                mount_point
                    .is_dir()
                    .then(|| (mount_point.clone(), mount_point))
            }
        }
        None => {
            // The process's path is outside every mount's root: typical of a container that mounts its own
            // cgroup at the mount point while /proc/self/cgroup shows a host path. The mount point is then
            // the closest view of the process's cgroup.
            let mount = candidates.first()?;
            let mount_point = rebase(fs_root, &mount.mount_point);
            tracing::debug!(
                path = cgroup_path,
                root = %mount.root.display(),
                mount_point = %mount_point.display(),
                "cicada-monitor: cgroup path outside the mount root, using the mount point"
            );
            mount_point
                .is_dir()
                .then(|| (mount_point.clone(), mount_point))
        }
    }
}

/// The directories from `dir` up to and including `mount_point`.
fn levels<'a>(dir: &'a Path, mount_point: &'a Path) -> impl Iterator<Item = &'a Path> {
    dir.ancestors()
        .take_while(move |p| p.starts_with(mount_point))
}

fn v1_controller(
    lines: &[CgroupLine],
    mounts: &[Mount],
    fs_root: &Path,
    controller: &str,
) -> Option<ControllerDir> {
    let line = lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == controller))?;
    let (dir, mount_point) = resolve(mounts, fs_root, "cgroup", Some(controller), &line.path)?;
    Some(ControllerDir {
        version: CgroupVersion::V1,
        dir,
        mount_point,
    })
}

fn unified(lines: &[CgroupLine], mounts: &[Mount], fs_root: &Path) -> Option<ControllerDir> {
    let line = lines.iter().find(|l| l.is_unified())?;
    let (dir, mount_point) = resolve(mounts, fs_root, "cgroup2", None, &line.path)?;
    Some(ControllerDir {
        version: CgroupVersion::V2,
        dir,
        mount_point,
    })
}

/// Whether the unified hierarchy offers `controller` to the process's part of the tree.
fn unified_has(unified: &ControllerDir, controller: &str) -> bool {
    read(&unified.mount_point.join("cgroup.controllers"))
        .is_some_and(|text| text.split_ascii_whitespace().any(|c| c == controller))
}

/// Every cgroup along the path with a memory limit, innermost first.
fn memory_levels(memory: &ControllerDir) -> Vec<MemoryLevel> {
    let file = match memory.version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    };
    levels(&memory.dir, &memory.mount_point)
        .filter_map(|dir| {
            let path = dir.join(file);
            let text = read(&path)?;
            match parse::parse_memory_limit(&text) {
                Some(value) => value.limit().map(|limit| MemoryLevel { dir: dir.to_owned(), limit }),
                None => {
                    tracing::debug!(path = %path.display(), "cicada-monitor: unparsable memory limit");
                    None
                }
            }
        })
        .collect()
}

/// The tightest CPU quota along the path, in cores, and where it was found.
fn cpu_quota(cpu: &ControllerDir) -> Option<(f64, PathBuf)> {
    levels(&cpu.dir, &cpu.mount_point)
        .filter_map(|dir| {
            let value = match cpu.version {
                CgroupVersion::V1 => {
                    let quota = read(&dir.join("cpu.cfs_quota_us"))?;
                    let period = read(&dir.join("cpu.cfs_period_us"))?;
                    parse::parse_cfs_quota(&quota, &period)
                }
                CgroupVersion::V2 => parse::parse_cpu_max(&read(&dir.join("cpu.max"))?),
            };
            if value.is_none() {
                tracing::debug!(dir = %dir.display(), "cicada-monitor: unparsable CPU quota");
            }
            value
                .and_then(LimitValue::limit)
                .map(|cores| (cores, dir.to_owned()))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Discovers the process's cgroups from `proc_self` (`/proc/self`) and the filesystem under `fs_root`.
pub(crate) fn discover(proc_self: &Path, fs_root: &Path) -> Discovered {
    let (Some(cgroup_text), Some(mountinfo_text)) = (
        read(&proc_self.join("cgroup")),
        read(&proc_self.join("mountinfo")),
    ) else {
        tracing::debug!("cicada-monitor: no /proc/self/cgroup or mountinfo, cgroup limits unknown");
        return Discovered::default();
    };
    let lines = parse::parse_proc_cgroup(&cgroup_text);
    let mounts = parse::parse_mountinfo(&mountinfo_text);
    let unified = unified(&lines, &mounts, fs_root);
    let from_unified = |controller: &str| {
        unified
            .as_ref()
            .filter(|u| unified_has(u, controller))
            .cloned()
    };

    let memory =
        v1_controller(&lines, &mounts, fs_root, "memory").or_else(|| from_unified("memory"));
    let cpu = v1_controller(&lines, &mounts, fs_root, "cpu").or_else(|| from_unified("cpu"));
    // cpu.stat's usage_usec exists in every v2 cgroup, with or without the cpu controller.
    let cpu_usage = v1_controller(&lines, &mounts, fs_root, "cpuacct").or_else(|| unified.clone());

    let Some(version) = [&memory, &cpu, &cpu_usage]
        .into_iter()
        .flatten()
        .map(|c| c.version)
        .next()
    else {
        return Discovered::default();
    };
    let memory_levels = memory.as_ref().map(memory_levels).unwrap_or_default();
    let quota = cpu.as_ref().and_then(cpu_quota);
    let memory_limit_dir = memory_levels
        .iter()
        .min_by_key(|l| l.limit)
        .map(|l| l.dir.clone());
    let unified_dir = (version == CgroupVersion::V2)
        .then(|| unified.map(|u| u.dir))
        .flatten();
    Discovered {
        info: Some(CgroupInfo {
            version,
            memory,
            cpu,
            cpu_usage,
            memory_limit_dir,
            cpu_quota_dir: quota.as_ref().map(|(_, dir)| dir.clone()),
        }),
        memory_levels,
        cpu_quota_cores: quota.map(|(cores, _)| cores),
        unified_dir,
    }
}
