//! The monitor: discovers the limits ([`Limits`]) at start and again on each [`Monitor::refresh_limits`] (a
//! container resized in place, a quota changed), turns the kernel's counters into one [`Usage`] per call to
//! [`Monitor::sample`], and reads memory alone, cheaply enough for tens of times a second, with
//! [`Monitor::memory_now`]. A sample reads a handful of small files (`/proc/self/stat`,
//! `/proc/self/status`, `/proc/meminfo`, the cgroup's usage and stat files, two pressure files) into a reused
//! buffer and counts `/proc/self/fd`; nothing is spawned and nothing blocks beyond those reads. A file that
//! cannot be read or parsed any more gives `None` in the optional fields and the previous value in the others,
//! and is logged once at debug level.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupInfo, CgroupVersion, MemoryLevel};
use crate::error::MonitorError;
use crate::lag::LagProbe;
use crate::parse;
use crate::text::{self, KeptFile};

/// Clock ticks per second in `/proc/<pid>/stat`. The kernel reports `utime`/`stime` in `USER_HZ`, which is
/// 100 on every Linux architecture regardless of the kernel's internal `HZ` (what `sysconf(_SC_CLK_TCK)`
/// returns; reading it would need libc, which this crate forbids).
pub const USER_HZ: u64 = 100;

/// Samples closer together than this reuse the previous CPU figures: with 10 ms ticks, a shorter interval
/// would make them jump by whole tens of percent.
const MIN_CPU_INTERVAL: Duration = Duration::from_millis(100);

/// The limits that apply to the process, discovered once when the monitor starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// CPUs this process may run on: `Cpus_allowed_list` of `/proc/self/status` (the scheduler affinity,
    /// which includes a cpuset cgroup's restriction), intersected with `/sys/devices/system/cpu/online`.
    pub cores_online: usize,
    /// The container's CPU quota in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), the
    /// tightest along the cgroup path up to the mount point; `None` when unlimited.
    pub cpu_quota_cores: Option<f64>,
    /// The CPU the process can use: `min(cores_online, cpu_quota_cores)`.
    pub cores_available: f64,
    /// `MemTotal` of `/proc/meminfo`.
    pub machine_memory_bytes: u64,
    /// The container's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), the tightest along the
    /// cgroup path; `None` when unlimited (`max`, or ≥ 2^62 on v1).
    pub cgroup_memory_limit_bytes: Option<u64>,
    /// The limit that applies: the cgroup limit if any (but never more than the machine's memory), else the
    /// machine's memory.
    pub memory_limit_bytes: u64,
    /// The soft limit on open files (`Max open files` of `/proc/self/limits`); `None` when unlimited or unknown.
    pub max_open_files: Option<u64>,
    /// The cgroups read, when any were found.
    pub cgroup: Option<CgroupInfo>,
    /// The CPU pressure file read (the cgroup's `cpu.pressure` on v2, else `/proc/pressure/cpu`), if any.
    pub cpu_pressure_file: Option<PathBuf>,
    /// The memory pressure file read, likewise.
    pub memory_pressure_file: Option<PathBuf>,
}

/// One sample of the process's resource use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The interval the CPU figures cover (since the previous sample, or since the monitor started).
    pub interval: Duration,
    /// Process CPU (`utime + stime` of `/proc/self/stat`, all threads, in [`USER_HZ`] ticks) over
    /// [`interval`](Usage::interval); 100.0 is one full core. The resolution is one tick: 1 % over 1 s.
    pub cpu_percent_of_core: f64,
    /// The same as a share of [`Limits::cores_available`], normally 0..=100. Not clamped: tick rounding and
    /// quota bursts can push it briefly over 100.
    pub cpu_percent_of_available: f64,
    /// Resident memory, `VmRSS` of `/proc/self/status`.
    pub rss_bytes: u64,
    /// The memory counted against [`Limits::memory_limit_bytes`]. Without a cgroup limit: the RSS. With one:
    /// the larger of the RSS and the cgroup's working set (usage minus inactive page cache, which the kernel
    /// reclaims before it would kill); when several cgroups along the path carry limits, the one with the
    /// least headroom decides (used = tightest limit − least headroom).
    pub memory_used_bytes: u64,
    /// `memory_used_bytes / memory_limit_bytes × 100`.
    pub memory_percent_of_limit: f64,
    /// `MemAvailable` of `/proc/meminfo`: what the whole machine can still give without swapping.
    pub machine_memory_available_bytes: Option<u64>,
    /// The process's memory cgroup usage, raw (v2 `memory.current`, v1 `memory.usage_in_bytes`), page cache
    /// included, and every process of the cgroup.
    pub cgroup_memory_bytes: Option<u64>,
    /// The same minus inactive file pages (v2 `inactive_file`, v1 `total_inactive_file` of `memory.stat`).
    pub cgroup_memory_working_set_bytes: Option<u64>,
    /// The CPU cgroup's usage over the interval (v2 `usage_usec` of `cpu.stat`, v1 `cpuacct.usage`), 100.0 =
    /// one core. At the hierarchy's root (see [`CgroupInfo::cpu_usage_is_hierarchy_root`]) this is the whole
    /// machine's CPU.
    pub cgroup_cpu_percent_of_core: Option<f64>,
    /// `some avg10` of CPU pressure: % of the last 10 s some runnable task waited for a CPU.
    pub cpu_pressure_some_avg10: Option<f64>,
    /// `some avg10` of memory pressure: % of the last 10 s some task stalled on memory (reclaim, refaults).
    pub memory_pressure_some_avg10: Option<f64>,
    /// `full avg10` of memory pressure: % of the last 10 s all non-idle tasks stalled on memory at once.
    pub memory_pressure_full_avg10: Option<f64>,
    /// The worst scheduler lag the attached [`LagProbe`] saw since the previous sample; zero without a probe.
    pub max_lag: Duration,
    /// `Threads` of `/proc/self/status`.
    pub threads: u64,
    /// Open file descriptors (files, sockets, pipes…): the entries of `/proc/self/fd`, not counting the one
    /// used to list them. Compare with [`Limits::max_open_files`].
    pub open_fds: Option<u64>,
}

/// Reads small files into one reused buffer and logs each failing file once.
#[derive(Debug, Default)]
struct Reader {
    bytes: Vec<u8>,
    logged: HashSet<PathBuf>,
}

impl Reader {
    /// Reads `path` and applies `parse`; `None` (logged once per file) when either fails.
    fn parse<T>(&mut self, path: &Path, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        if let Err(error) = text::read_bytes(path, &mut self.bytes) {
            self.log_once(path, &error.to_string());
            return None;
        }
        let parsed = parse(&String::from_utf8_lossy(&self.bytes));
        if parsed.is_none() {
            self.log_once(path, "cannot parse");
        }
        parsed
    }

    /// As [`parse`](Reader::parse), for a file kept open.
    fn parse_kept<T>(
        &mut self,
        file: &mut KeptFile,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        if let Err(error) = file.read_into(&mut self.bytes) {
            self.log_once(file.path(), &error.to_string());
            return None;
        }
        // The files read this way are ASCII numbers; a lossy decoding would allocate only for odd bytes.
        let parsed = std::str::from_utf8(&self.bytes).ok().and_then(parse);
        if parsed.is_none() {
            self.log_once(file.path(), "cannot parse");
        }
        parsed
    }

    fn log_once(&mut self, path: &Path, what: &str) {
        if self.logged.insert(path.to_owned()) {
            tracing::debug!(path = %path.display(), error = what, "cicada-monitor: file unavailable");
        }
    }
}

/// The files of one memory cgroup.
#[derive(Debug, Clone)]
struct MemoryFiles {
    dir: PathBuf,
    usage: PathBuf,
    stat: PathBuf,
    inactive_file_key: &'static str,
}

impl MemoryFiles {
    fn new(version: CgroupVersion, dir: &Path) -> MemoryFiles {
        let (usage, inactive_file_key) = match version {
            CgroupVersion::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
            CgroupVersion::V2 => ("memory.current", "inactive_file"),
        };
        MemoryFiles {
            dir: dir.to_owned(),
            usage: dir.join(usage),
            stat: dir.join("memory.stat"),
            inactive_file_key,
        }
    }

    /// (usage, working set).
    fn read(&self, reader: &mut Reader) -> Option<(u64, u64)> {
        let usage = reader.parse(&self.usage, parse::parse_u64)?;
        let inactive = reader.parse(&self.stat, |text| {
            parse::keyed_u64(text, self.inactive_file_key)
        });
        Some((usage, usage.saturating_sub(inactive.unwrap_or(0))))
    }
}

/// Where the cgroup's CPU usage is read.
#[derive(Debug, Clone)]
enum CpuUsageFile {
    /// v1 `cpuacct.usage`, nanoseconds.
    V1(PathBuf),
    /// v2 `cpu.stat`, `usage_usec`.
    V2(PathBuf),
}

impl CpuUsageFile {
    fn path(&self) -> &Path {
        match self {
            CpuUsageFile::V1(path) | CpuUsageFile::V2(path) => path,
        }
    }

    fn read_ns(&self, reader: &mut Reader) -> Option<u64> {
        match self {
            CpuUsageFile::V1(path) => reader.parse(path, parse::parse_u64),
            CpuUsageFile::V2(path) => reader
                .parse(path, |text| parse::keyed_u64(text, "usage_usec"))
                .map(|us| us.saturating_mul(1000)),
        }
    }
}

#[derive(Debug, Clone)]
struct Files {
    stat: PathBuf,
    status: PathBuf,
    meminfo: PathBuf,
    fd_dir: PathBuf,
    /// On the real procfs, Linux ≥ 6.2 reports the number of open descriptors as the size of `/proc/<pid>/fd`.
    fd_dir_size_is_count: bool,
    memory: Option<MemoryFiles>,
    /// The cgroups with a memory limit, and the limit.
    memory_levels: Vec<(MemoryFiles, u64)>,
    cpu_usage: Option<CpuUsageFile>,
    cpu_pressure: Option<PathBuf>,
    memory_pressure: Option<PathBuf>,
}

/// The files [`Monitor::memory_now`] reads, kept open: `/proc/self/statm` (its second field, resident pages, is
/// `VmRSS`; the kernel renders it from a few counters, where `status` formats some fifty lines) and the usage file
/// of each memory cgroup with a limit, in the order of [`Files::memory_levels`].
#[derive(Debug)]
struct FastFiles {
    /// `None` where the page size is unknown (no `/proc/self/auxv`, as in fake trees): `status` is read then.
    statm: Option<(KeptFile, u64)>,
    level_usage: Vec<KeptFile>,
}

impl FastFiles {
    fn new(proc_self: &Path, files: &Files) -> FastFiles {
        let statm = text::read_bytes_vec(&proc_self.join("auxv"))
            .ok()
            .and_then(|auxv| parse::auxv_page_size(&auxv))
            .map(|page_size| (KeptFile::new(proc_self.join("statm")), page_size));
        FastFiles {
            statm,
            level_usage: files
                .memory_levels
                .iter()
                .map(|(level, _)| KeptFile::new(level.usage.clone()))
                .collect(),
        }
    }
}

/// The counters at the start of the current CPU interval.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    at: Instant,
    process_ticks: Option<u64>,
    cgroup_cpu_ns: Option<u64>,
}

/// Measures the process: create once with [`Monitor::new`], then call [`Monitor::sample`] about once a second.
#[derive(Debug)]
pub struct Monitor {
    limits: Limits,
    files: Files,
    reader: Reader,
    baseline: Baseline,
    last: Usage,
    lag: Option<LagProbe>,
    roots: Roots,
    /// Inactive file pages of each memory level at the last full sample (memory the kernel reclaims before it
    /// kills), so that [`Monitor::memory_now`] reads one usage file per level and still counts the working set.
    level_inactive: Vec<u64>,
    fast: FastFiles,
}

/// Where the monitor reads `/proc` and `/`, kept to discover the limits again.
#[derive(Debug, Clone)]
struct Roots {
    proc_root: PathBuf,
    fs_root: PathBuf,
    real_procfs: bool,
}

/// Memory alone, as read by [`Monitor::memory_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// Resident memory, `VmRSS`.
    pub rss_bytes: u64,
    /// The memory counted against [`Limits::memory_limit_bytes`], as [`Usage::memory_used_bytes`] (the page
    /// cache's inactive share is taken from the last full sample).
    pub used_bytes: u64,
}

/// What changed between two discoveries of the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsChange {
    /// The limits before.
    pub before: Limits,
    /// The limits now in force.
    pub after: Limits,
}

impl LimitsChange {
    /// One line saying what changed, e.g. `CPU 0.25 -> 2.00 cores` or `memory 300 -> 600 MiB`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if (self.before.cores_available - self.after.cores_available).abs() > 1e-9 {
            parts.push(format!(
                "CPU {:.2} -> {:.2} cores",
                self.before.cores_available, self.after.cores_available
            ));
        }
        if self.before.memory_limit_bytes != self.after.memory_limit_bytes {
            parts.push(format!(
                "memory {} -> {} MiB",
                self.before.memory_limit_bytes >> 20,
                self.after.memory_limit_bytes >> 20
            ));
        }
        if parts.is_empty() {
            parts.push("cgroup layout".to_owned());
        }
        parts.join(", ")
    }
}

/// CPU time used so far by the calling thread (`/proc/thread-self/stat`), to one tick ([`USER_HZ`]); `None` where
/// the file cannot be read. The guard uses it to report its own cost.
pub fn thread_cpu_time() -> Option<Duration> {
    let text = text::read_text(Path::new("/proc/thread-self/stat")).ok()?;
    let ticks = parse::parse_proc_stat(&text)?.total();
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

fn read_required(path: &Path) -> Result<String, MonitorError> {
    text::read_text(path).map_err(|source| MonitorError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_error(path: &Path, reason: &str) -> MonitorError {
    MonitorError::Parse {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A pressure file that exists and parses (PSI can be compiled out, or disabled with `psi=0`, in which case
/// the files exist but reading fails).
fn pressure_file(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|path| {
            text::read_text(path).is_ok_and(|text| parse::parse_pressure(&text).some.is_some())
        })
        .cloned()
}

/// CPU time of `ticks` ([`USER_HZ`] per second) over `elapsed` wall time, in percent of one core.
#[allow(clippy::cast_precision_loss)] // tick counts over seconds
fn ticks_percent(ticks: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        ticks as f64 / USER_HZ as f64 / seconds * 100.0
    }
}

/// CPU time of `nanos` over `elapsed` wall time, in percent of one core.
#[allow(clippy::cast_precision_loss)] // nanoseconds over seconds: far below 2^52
fn nanos_percent(nanos: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        nanos as f64 / 1e9 / seconds * 100.0
    }
}

/// Open descriptors. Listing `/proc/self/fd` costs about 10 ms at 15,000 descriptors, so on the real procfs
/// of Linux ≥ 6.2 the directory's size, which is the count, is read instead (one `stat`); older kernels
/// report 0 there and the directory is listed.
fn count_fds(fd_dir: &Path, size_is_count: bool, reader: &mut Reader) -> Option<u64> {
    let by_size = || {
        fs::metadata(fd_dir)
            .ok()
            .map(|m| m.len())
            .filter(|&n| n > 0)
    };
    if let Some(count) = size_is_count.then(by_size).flatten() {
        return Some(count);
    }
    match fs::read_dir(fd_dir) {
        // Minus the descriptor that lists the directory.
        Ok(entries) => Some((entries.count() as u64).saturating_sub(1)),
        Err(error) => {
            reader.log_once(fd_dir, &error.to_string());
            None
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `part / whole × 100`, 0 when `whole` is 0.
#[allow(clippy::cast_precision_loss)] // byte counts: f64's 52 bits are plenty for a percentage
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

impl Monitor {
    /// A monitor of this process on the real `/proc` and `/sys`.
    ///
    /// # Errors
    ///
    /// When `/proc/self/stat`, `/proc/self/status` or `/proc/meminfo` cannot be read or parsed (not Linux, or
    /// no `/proc`). Missing cgroup files are not errors: the limits are then the machine's.
    pub fn new() -> Result<Monitor, MonitorError> {
        Monitor::build(Path::new("/proc"), Path::new("/"), true)
    }

    /// A monitor that reads a fake tree, for tests: `proc_root` plays `/proc` (it must contain `self/stat`,
    /// `self/status`, `meminfo`, and, optionally, `self/cgroup`, `self/mountinfo`, `self/limits`, `self/fd/`,
    /// `pressure/`), and `fs_root` plays `/`: the absolute mount points of `self/mountinfo` (e.g.
    /// `/sys/fs/cgroup/memory`) and `/sys/devices/system/cpu/online` are looked up under it.
    ///
    /// # Errors
    ///
    /// As [`Monitor::new`].
    pub fn with_roots(proc_root: &Path, fs_root: &Path) -> Result<Monitor, MonitorError> {
        Monitor::build(proc_root, fs_root, false)
    }

    fn build(proc_root: &Path, fs_root: &Path, real_procfs: bool) -> Result<Monitor, MonitorError> {
        let proc_self = proc_root.join("self");

        let status_path = proc_self.join("status");
        let status = parse::parse_status(&read_required(&status_path)?);
        let allowed = status
            .cpus_allowed_list
            .as_deref()
            .ok_or_else(|| parse_error(&status_path, "no Cpus_allowed_list"))?;
        let allowed = parse::parse_cpu_list(allowed)
            .ok_or_else(|| parse_error(&status_path, "malformed Cpus_allowed_list"))?;
        let online_path = cgroup::rebase(fs_root, Path::new("/sys/devices/system/cpu/online"));
        let online = text::read_text(&online_path)
            .ok()
            .and_then(|text| parse::parse_cpu_list(&text));
        let cores_online = match online {
            // The affinity mask may list possible-but-offline CPUs.
            Some(online) if allowed.intersection(&online).next().is_some() => {
                allowed.intersection(&online).count()
            }
            _ => allowed.len(),
        };
        if cores_online == 0 {
            return Err(parse_error(&status_path, "empty Cpus_allowed_list"));
        }

        let meminfo_path = proc_root.join("meminfo");
        let machine_memory_bytes = parse::meminfo_bytes(&read_required(&meminfo_path)?, "MemTotal")
            .filter(|&bytes| bytes > 0)
            .ok_or_else(|| parse_error(&meminfo_path, "no MemTotal"))?;

        let stat_path = proc_self.join("stat");
        let ticks = parse::parse_proc_stat(&read_required(&stat_path)?)
            .ok_or_else(|| parse_error(&stat_path, "no utime/stime after the command name"))?;

        let max_open_files = text::read_text(&proc_self.join("limits"))
            .ok()
            .and_then(|text| parse::parse_max_open_files(&text));

        let discovered = cgroup::discover(&proc_self, fs_root);
        let cgroup_memory_limit_bytes = discovered.memory_levels.iter().map(|l| l.limit).min();
        let memory_limit_bytes = cgroup_memory_limit_bytes.map_or(machine_memory_bytes, |limit| {
            limit.min(machine_memory_bytes)
        });
        #[allow(clippy::cast_precision_loss)] // a CPU count
        let cores_available = discovered
            .cpu_quota_cores
            .map_or(cores_online as f64, |quota| quota.min(cores_online as f64));

        let info = discovered.info.as_ref();
        let memory = info
            .and_then(|i| i.memory.as_ref())
            .map(|m| MemoryFiles::new(m.version, &m.dir));
        let memory_levels = match info.and_then(|i| i.memory.as_ref()) {
            Some(m) => discovered
                .memory_levels
                .iter()
                .map(|MemoryLevel { dir, limit }| (MemoryFiles::new(m.version, dir), *limit))
                .collect(),
            None => Vec::new(),
        };
        let cpu_usage = info
            .and_then(|i| i.cpu_usage.as_ref())
            .map(|c| match c.version {
                CgroupVersion::V1 => CpuUsageFile::V1(c.dir.join("cpuacct.usage")),
                CgroupVersion::V2 => CpuUsageFile::V2(c.dir.join("cpu.stat")),
            });
        let pressure = |name: &str| {
            let mut candidates = Vec::new();
            if let Some(dir) = &discovered.unified_dir {
                candidates.push(dir.join(format!("{name}.pressure")));
            }
            candidates.push(proc_root.join("pressure").join(name));
            pressure_file(&candidates)
        };
        let cpu_pressure = pressure("cpu");
        let memory_pressure = pressure("memory");

        let limits = Limits {
            cores_online,
            cpu_quota_cores: discovered.cpu_quota_cores,
            cores_available,
            machine_memory_bytes,
            cgroup_memory_limit_bytes,
            memory_limit_bytes,
            max_open_files,
            cgroup: discovered.info.clone(),
            cpu_pressure_file: cpu_pressure.clone(),
            memory_pressure_file: memory_pressure.clone(),
        };
        let files = Files {
            stat: stat_path,
            status: status_path,
            meminfo: meminfo_path,
            fd_dir: proc_self.join("fd"),
            fd_dir_size_is_count: real_procfs,
            memory,
            memory_levels,
            cpu_usage,
            cpu_pressure,
            memory_pressure,
        };
        let mut reader = Reader::default();
        let cgroup_cpu_ns = files
            .cpu_usage
            .as_ref()
            .and_then(|f| f.read_ns(&mut reader));
        let rss_bytes = status.rss_bytes.unwrap_or(0);
        let last = Usage {
            unix_ms: unix_ms(),
            interval: Duration::ZERO,
            cpu_percent_of_core: 0.0,
            cpu_percent_of_available: 0.0,
            rss_bytes,
            memory_used_bytes: rss_bytes,
            memory_percent_of_limit: percent(rss_bytes, memory_limit_bytes),
            machine_memory_available_bytes: None,
            cgroup_memory_bytes: None,
            cgroup_memory_working_set_bytes: None,
            cgroup_cpu_percent_of_core: None,
            cpu_pressure_some_avg10: None,
            memory_pressure_some_avg10: None,
            memory_pressure_full_avg10: None,
            max_lag: Duration::ZERO,
            threads: status.threads.unwrap_or(0),
            open_fds: None,
        };
        let level_inactive = vec![0; files.memory_levels.len()];
        let fast = FastFiles::new(&proc_self, &files);
        Ok(Monitor {
            limits,
            files,
            reader,
            baseline: Baseline {
                at: Instant::now(),
                process_ticks: Some(ticks.total()),
                cgroup_cpu_ns,
            },
            last,
            lag: None,
            roots: Roots {
                proc_root: proc_root.to_owned(),
                fs_root: fs_root.to_owned(),
                real_procfs,
            },
            level_inactive,
            fast,
        })
    }

    /// Discovers the limits again (CPU affinity and quota, memory limits, the cgroup the process is in) and,
    /// when they changed, uses the new ones from now on. Returns what changed. Costs about as much as
    /// [`Monitor::new`] (a few dozen small reads): call it every few seconds, not per sample. A discovery that
    /// fails keeps the limits in force.
    pub fn refresh_limits(&mut self) -> Option<LimitsChange> {
        let fresh = Monitor::build(
            &self.roots.proc_root,
            &self.roots.fs_root,
            self.roots.real_procfs,
        )
        .map_err(|error| {
            self.reader
                .log_once(&self.roots.proc_root, &error.to_string())
        })
        .ok()?;
        if fresh.limits == self.limits {
            return None;
        }
        let before = std::mem::replace(&mut self.limits, fresh.limits);
        let cpu_file_moved = self.files.cpu_usage.as_ref().map(CpuUsageFile::path)
            != fresh.files.cpu_usage.as_ref().map(CpuUsageFile::path);
        if cpu_file_moved {
            // A different cgroup's counter: the next interval starts from nothing rather than a wrong delta.
            self.baseline.cgroup_cpu_ns = fresh.baseline.cgroup_cpu_ns;
        }
        self.level_inactive = vec![0; fresh.files.memory_levels.len()];
        self.files = fresh.files;
        self.fast = fresh.fast;
        Some(LimitsChange {
            before,
            after: self.limits.clone(),
        })
    }

    /// Memory alone: the resident set (`/proc/self/statm`) and one usage file per memory cgroup with a limit, each
    /// kept open and read with one `pread`, so that the guard can watch fast growth tens of times a second for a
    /// few microseconds each. Falls back to the last values on a failed read.
    pub fn memory_now(&mut self) -> MemoryReading {
        let reader = &mut self.reader;
        let rss_bytes = match &mut self.fast.statm {
            Some((statm, page_size)) => {
                let page_size = *page_size;
                reader.parse_kept(statm, |text| {
                    parse::statm_resident_pages(text)?.checked_mul(page_size)
                })
            }
            None => reader.parse(&self.files.status, |text| {
                parse::parse_status(text).rss_bytes
            }),
        }
        .unwrap_or(self.last.rss_bytes);
        let least_headroom = self
            .files
            .memory_levels
            .iter()
            .zip(&self.level_inactive)
            .zip(&mut self.fast.level_usage)
            .filter_map(|(((_, limit), inactive), usage_file)| {
                let usage = reader.parse_kept(usage_file, parse::parse_u64)?;
                Some(limit.saturating_sub(usage.saturating_sub(*inactive)))
            })
            .min();
        let cgroup_used = match (self.limits.cgroup_memory_limit_bytes, least_headroom) {
            (Some(limit), Some(headroom)) => limit.saturating_sub(headroom),
            _ => 0,
        };
        MemoryReading {
            rss_bytes,
            used_bytes: rss_bytes.max(cgroup_used),
        }
    }

    /// The limits discovered at start.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The most recent sample (before the first call to [`sample`](Monitor::sample): zeros, and the RSS at
    /// start).
    pub fn last(&self) -> &Usage {
        &self.last
    }

    /// Reads the [`LagProbe`]'s worst lag at each sample from now on (replacing any probe attached before).
    pub fn attach_lag_probe(&mut self, probe: &LagProbe) {
        self.lag = Some(probe.clone());
    }

    /// Measures now. CPU figures cover the time since the previous sample (or since the monitor started);
    /// a sample less than 100 ms after the previous one repeats the previous CPU figures. Never panics.
    pub fn sample(&mut self) -> Usage {
        let reader = &mut self.reader;
        let files = &self.files;
        let last = &self.last;

        let ticks = reader
            .parse(&files.stat, parse::parse_proc_stat)
            .map(parse::CpuTicks::total);
        let cgroup_cpu_ns = files.cpu_usage.as_ref().and_then(|f| f.read_ns(reader));
        let now = Instant::now();
        let status = reader.parse(&files.status, |text| Some(parse::parse_status(text)));
        let machine_memory_available_bytes = reader.parse(&files.meminfo, |text| {
            parse::meminfo_bytes(text, "MemAvailable")
        });

        // CPU over the interval.
        let elapsed = now.saturating_duration_since(self.baseline.at);
        let (interval, cpu_percent_of_core, cgroup_cpu_percent_of_core) = if elapsed
            >= MIN_CPU_INTERVAL
        {
            let process = match (self.baseline.process_ticks, ticks) {
                (Some(before), Some(after)) => ticks_percent(after.saturating_sub(before), elapsed),
                _ => last.cpu_percent_of_core,
            };
            let cgroup = match (self.baseline.cgroup_cpu_ns, cgroup_cpu_ns) {
                (Some(before), Some(after)) => {
                    Some(nanos_percent(after.saturating_sub(before), elapsed))
                }
                _ => None,
            };
            self.baseline = Baseline {
                at: now,
                process_ticks: ticks.or(self.baseline.process_ticks),
                cgroup_cpu_ns,
            };
            (elapsed, process, cgroup)
        } else {
            (
                last.interval,
                last.cpu_percent_of_core,
                last.cgroup_cpu_percent_of_core,
            )
        };
        let cpu_percent_of_available = if self.limits.cores_available > 0.0 {
            cpu_percent_of_core / self.limits.cores_available
        } else {
            cpu_percent_of_core
        };

        // Memory.
        let rss_bytes = status
            .as_ref()
            .and_then(|s| s.rss_bytes)
            .unwrap_or(last.rss_bytes);
        let threads = status
            .as_ref()
            .and_then(|s| s.threads)
            .unwrap_or(last.threads);
        let own = files.memory.as_ref().and_then(|m| m.read(reader));
        let level_inactive = &mut self.level_inactive;
        let least_headroom = files
            .memory_levels
            .iter()
            .zip(level_inactive.iter_mut())
            .filter_map(|((level, limit), inactive)| {
                let (usage, working_set) = match &files.memory {
                    Some(m) if m.dir == level.dir => own,
                    _ => level.read(reader),
                }?;
                *inactive = usage - working_set;
                Some(limit.saturating_sub(working_set))
            })
            .min();
        let cgroup_used = match (self.limits.cgroup_memory_limit_bytes, least_headroom) {
            (Some(limit), Some(headroom)) => limit.saturating_sub(headroom),
            _ => 0,
        };
        let memory_used_bytes = rss_bytes.max(cgroup_used);

        let pressure = |reader: &mut Reader, path: &Option<PathBuf>| {
            path.as_ref()
                .and_then(|p| reader.parse(p, |text| Some(parse::parse_pressure(text))))
        };
        let cpu_pressure = pressure(reader, &files.cpu_pressure);
        let memory_pressure = pressure(reader, &files.memory_pressure);

        let open_fds = count_fds(&files.fd_dir, files.fd_dir_size_is_count, reader);

        let usage = Usage {
            unix_ms: unix_ms(),
            interval,
            cpu_percent_of_core,
            cpu_percent_of_available,
            rss_bytes,
            memory_used_bytes,
            memory_percent_of_limit: percent(memory_used_bytes, self.limits.memory_limit_bytes),
            machine_memory_available_bytes,
            cgroup_memory_bytes: own.map(|(usage, _)| usage),
            cgroup_memory_working_set_bytes: own.map(|(_, working_set)| working_set),
            cgroup_cpu_percent_of_core,
            cpu_pressure_some_avg10: cpu_pressure.and_then(|p| p.some).map(|l| l.avg10),
            memory_pressure_some_avg10: memory_pressure.and_then(|p| p.some).map(|l| l.avg10),
            memory_pressure_full_avg10: memory_pressure.and_then(|p| p.full).map(|l| l.avg10),
            max_lag: self.lag.as_ref().map_or(Duration::ZERO, LagProbe::take_max),
            threads,
            open_fds,
        };
        self.last = usage.clone();
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    const V1_UNLIMITED: &str = "9223372036854771712\n";

    /// A fake `/` with `proc/` and `sys/` in a temporary directory.
    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        /// The process files every monitor needs: 2 KiB RSS… with the given CPUs and CPU ticks.
        fn new(cpus: &str) -> Tree {
            let tree = Tree {
                dir: tempfile::tempdir().unwrap(),
            };
            tree.stat(100, 20);
            tree.status(2108, 7, cpus);
            tree.write(
                "proc/meminfo",
                "MemTotal:       25165824 kB\nMemAvailable:   20000000 kB\n",
            );
            tree.write(
                "proc/self/limits",
                "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max open files            20000                20000                files     \n",
            );
            for fd in 0..4 {
                tree.write(&format!("proc/self/fd/{fd}"), "");
            }
            tree
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn stat(&self, utime: u64, stime: u64) {
            self.write(
                "proc/self/stat",
                &format!(
                    "4242 (cicada (worker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 7 0 \
                     326998 2998272 393 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
                ),
            );
        }

        fn status(&self, rss_kib: u64, threads: u64, cpus: &str) {
            self.write(
                "proc/self/status",
                &format!(
                    "Name:\tcicada\nVmRSS:\t{rss_kib:>8} kB\nThreads:\t{threads}\nCpus_allowed_list:\t{cpus}\n"
                ),
            );
        }

        fn monitor(&self) -> Monitor {
            Monitor::with_roots(&self.path("proc"), self.dir.path()).unwrap()
        }
    }

    /// This machine's layout: v1 controllers each on their own mount, an empty unified hierarchy, and the
    /// process in a nested memory cgroup whose parent has the tighter limit.
    fn v1_hybrid() -> Tree {
        let tree = Tree::new("0-3");
        tree.write(
            "proc/self/cgroup",
            "9:name=systemd:/\n4:memory:/process_api/abc/child\n3:cpuset:/\n2:cpuacct:/process_api/abc\n\
             1:cpu:/process_api/abc/child\n0::/\n",
        );
        tree.write(
            "proc/self/mountinfo",
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:5 - cgroup cgroup rw,cpu\n\
             33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        let memory = "sys/fs/cgroup/memory";
        tree.write(&format!("{memory}/memory.limit_in_bytes"), V1_UNLIMITED);
        tree.write(
            &format!("{memory}/process_api/memory.limit_in_bytes"),
            V1_UNLIMITED,
        );
        tree.write(
            &format!("{memory}/process_api/abc/memory.limit_in_bytes"),
            &format!("{GIB}\n"),
        );
        tree.write(
            &format!("{memory}/process_api/abc/memory.usage_in_bytes"),
            &format!("{}\n", 700 * MIB),
        );
        tree.write(
            &format!("{memory}/process_api/abc/memory.stat"),
            &format!("total_inactive_file {}\n", 100 * MIB),
        );
        tree.write(
            &format!("{memory}/process_api/abc/child/memory.limit_in_bytes"),
            &format!("{}\n", 2 * GIB),
        );
        tree.write(
            &format!("{memory}/process_api/abc/child/memory.usage_in_bytes"),
            &format!("{}\n", 300 * MIB),
        );
        tree.write(
            &format!("{memory}/process_api/abc/child/memory.stat"),
            &format!(
                "cache 1\ninactive_file 7\ntotal_inactive_file {}\n",
                50 * MIB
            ),
        );
        let cpu = "sys/fs/cgroup/cpu";
        for (dir, quota) in [
            ("", "-1"),
            ("/process_api", "-1"),
            ("/process_api/abc", "150000"),
            ("/process_api/abc/child", "-1"),
        ] {
            tree.write(
                &format!("{cpu}{dir}/cpu.cfs_quota_us"),
                &format!("{quota}\n"),
            );
            tree.write(&format!("{cpu}{dir}/cpu.cfs_period_us"), "100000\n");
        }
        tree.write(
            "sys/fs/cgroup/cpuacct/process_api/abc/cpuacct.usage",
            "5000000000\n",
        );
        tree.write("sys/fs/cgroup/unified/cgroup.controllers", "");
        tree.write(
            "sys/fs/cgroup/unified/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        tree.write(
            "proc/pressure/cpu",
            "some avg10=9.78 avg60=22.47 avg300=16.27 total=438327045\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        tree.write(
            "proc/pressure/memory",
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=5\n\
                    full avg10=0.25 avg60=0.00 avg300=0.00 total=2\n",
        );
        tree.write("sys/devices/system/cpu/online", "0-3\n");
        tree
    }

    #[test]
    fn v1_hybrid_limits_take_the_tightest_parent() {
        let tree = v1_hybrid();
        let monitor = tree.monitor();
        let limits = monitor.limits();
        assert_eq!(limits.cores_online, 4);
        assert_eq!(limits.cpu_quota_cores, Some(1.5));
        assert!((limits.cores_available - 1.5).abs() < 1e-12);
        assert_eq!(limits.machine_memory_bytes, 25_165_824 * 1024);
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(GIB));
        assert_eq!(limits.memory_limit_bytes, GIB);
        assert_eq!(limits.max_open_files, Some(20_000));
        let info = limits.cgroup.as_ref().unwrap();
        assert_eq!(info.version, CgroupVersion::V1);
        let memory = info.memory.as_ref().unwrap();
        assert_eq!(
            memory.dir,
            tree.path("sys/fs/cgroup/memory/process_api/abc/child")
        );
        assert_eq!(memory.mount_point, tree.path("sys/fs/cgroup/memory"));
        assert_eq!(
            info.memory_limit_dir,
            Some(tree.path("sys/fs/cgroup/memory/process_api/abc"))
        );
        assert_eq!(
            info.cpu_quota_dir,
            Some(tree.path("sys/fs/cgroup/cpu/process_api/abc"))
        );
        assert_eq!(
            info.cpu_usage.as_ref().unwrap().dir,
            tree.path("sys/fs/cgroup/cpuacct/process_api/abc")
        );
        assert!(!info.cpu_usage_is_hierarchy_root());
        // v1: system-wide pressure, not the (empty) unified hierarchy's.
        assert_eq!(
            limits.cpu_pressure_file,
            Some(tree.path("proc/pressure/cpu"))
        );
        assert_eq!(
            limits.memory_pressure_file,
            Some(tree.path("proc/pressure/memory"))
        );
    }

    #[test]
    fn v1_hybrid_sample() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        let usage = monitor.sample();
        assert_eq!(usage.rss_bytes, 2108 * 1024);
        assert_eq!(usage.threads, 7);
        assert_eq!(usage.cgroup_memory_bytes, Some(300 * MIB));
        assert_eq!(usage.cgroup_memory_working_set_bytes, Some(250 * MIB));
        // The parent's limit (1 GiB) binds, and the parent's working set (600 MiB, siblings included) leaves
        // the least headroom; the child's 2 GiB limit leaves far more.
        assert_eq!(usage.memory_used_bytes, 600 * MIB);
        assert!((usage.memory_percent_of_limit - 600.0 / 1024.0 * 100.0).abs() < 1e-9);
        assert_eq!(
            usage.machine_memory_available_bytes,
            Some(20_000_000 * 1024)
        );
        assert_eq!(usage.cpu_pressure_some_avg10, Some(9.78));
        assert_eq!(usage.memory_pressure_some_avg10, Some(1.5));
        assert_eq!(usage.memory_pressure_full_avg10, Some(0.25));
        assert_eq!(usage.open_fds, Some(3));
        assert_eq!(usage.max_lag, Duration::ZERO);
        assert!(usage.unix_ms > 1_600_000_000_000);
    }

    #[test]
    fn cpu_percent_from_two_stat_samples() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        // 150 ticks (1.5 s of CPU) and 1.5 s of cgroup CPU over a 2 s interval.
        monitor.baseline.at = Instant::now().checked_sub(Duration::from_secs(2)).unwrap();
        tree.stat(100 + 100, 20 + 50);
        tree.write(
            "sys/fs/cgroup/cpuacct/process_api/abc/cpuacct.usage",
            "6500000000\n",
        );
        let usage = monitor.sample();
        assert!(
            usage.interval >= Duration::from_secs(2) && usage.interval < Duration::from_secs(3)
        );
        let expected = 75.0 * 2.0 / usage.interval.as_secs_f64();
        assert!(
            (usage.cpu_percent_of_core - expected).abs() < 1e-9,
            "{usage:?}"
        );
        // 1.5 cores available: 0.75 cores is half of them.
        assert!((usage.cpu_percent_of_available - expected / 1.5).abs() < 1e-9);
        assert!((usage.cgroup_cpu_percent_of_core.unwrap() - expected).abs() < 1e-9);

        // A sample right after repeats the CPU figures instead of dividing by a few microseconds. "Right after" is
        // pinned by moving the baseline an hour ahead: on a loaded machine the test thread can be descheduled for
        // longer than MIN_CPU_INTERVAL between two calls (seen in CI).
        tree.stat(500, 500);
        monitor.baseline.at = Instant::now() + Duration::from_secs(3_600);
        let again = monitor.sample();
        assert_eq!(again.cpu_percent_of_core, usage.cpu_percent_of_core);
        assert_eq!(again.interval, usage.interval);

        // Above 100 % of what is available is kept raw: 3 cores' worth over 1 s with 1.5 available.
        monitor.baseline.at = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        monitor.baseline.process_ticks = Some(0);
        tree.stat(200, 100);
        let over = monitor.sample();
        assert!(over.cpu_percent_of_available > 190.0, "{over:?}");
    }

    #[test]
    fn cpu_percent_arithmetic() {
        assert!((ticks_percent(100, Duration::from_secs(1)) - 100.0).abs() < 1e-12);
        assert!((ticks_percent(150, Duration::from_secs(2)) - 75.0).abs() < 1e-12);
        assert!((ticks_percent(1, Duration::from_millis(500)) - 2.0).abs() < 1e-12);
        assert_eq!(ticks_percent(5, Duration::ZERO), 0.0);
        assert!((nanos_percent(250_000_000, Duration::from_millis(500)) - 50.0).abs() < 1e-12);
        assert_eq!(percent(1, 0), 0.0);
    }

    #[test]
    fn missing_files_give_none_or_last_values() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        let first = monitor.sample();
        fs::remove_file(tree.path("proc/self/status")).unwrap();
        fs::remove_file(tree.path("proc/self/stat")).unwrap();
        fs::remove_file(
            tree.path("sys/fs/cgroup/memory/process_api/abc/child/memory.usage_in_bytes"),
        )
        .unwrap();
        fs::remove_file(tree.path("sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes"))
            .unwrap();
        fs::remove_file(tree.path("proc/pressure/cpu")).unwrap();
        tree.write("proc/pressure/memory", "garbage");
        fs::remove_dir_all(tree.path("proc/self/fd")).unwrap();
        monitor.baseline.at = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        for _ in 0..2 {
            let usage = monitor.sample();
            assert_eq!(usage.rss_bytes, first.rss_bytes);
            assert_eq!(usage.threads, first.threads);
            assert_eq!(usage.cpu_percent_of_core, first.cpu_percent_of_core);
            assert_eq!(usage.cgroup_memory_bytes, None);
            assert_eq!(usage.memory_used_bytes, usage.rss_bytes);
            assert_eq!(usage.cpu_pressure_some_avg10, None);
            assert_eq!(usage.memory_pressure_some_avg10, None);
            assert_eq!(usage.open_fds, None);
        }
        // Logged once per file.
        assert!(monitor.reader.logged.contains(&tree.path("proc/self/stat")));
    }

    #[test]
    fn limits_follow_a_resized_container() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        assert_eq!(monitor.refresh_limits(), None, "nothing changed yet");
        assert_eq!(monitor.limits().cpu_quota_cores, Some(1.5));
        // The quota is raised and the memory limit lowered in place, as Kubernetes' in-place resize does.
        tree.write(
            "sys/fs/cgroup/cpu/process_api/abc/cpu.cfs_quota_us",
            "300000\n",
        );
        tree.write(
            "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes",
            &format!("{}\n", 512 * MIB),
        );
        let change = monitor.refresh_limits().expect("a change");
        assert_eq!(change.before.cores_available, 1.5);
        assert_eq!(change.after.cores_available, 3.0);
        assert_eq!(change.after.memory_limit_bytes, 512 * MIB);
        assert_eq!(
            change.describe(),
            "CPU 1.50 -> 3.00 cores, memory 1024 -> 512 MiB"
        );
        assert_eq!(monitor.limits().cores_available, 3.0);
        assert_eq!(monitor.refresh_limits(), None, "reported once");
        // Samples go on against the new limits: 600 MiB in use is over the new 512 MiB, no headroom left.
        let usage = monitor.sample();
        assert_eq!(usage.memory_used_bytes, 512 * MIB);
        assert!((usage.memory_percent_of_limit - 100.0).abs() < 1e-9);
    }

    #[test]
    fn memory_now_reads_rss_and_the_tightest_cgroup() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        // Before a full sample, the page cache is not known: usage counts whole.
        let reading = monitor.memory_now();
        assert_eq!(reading.rss_bytes, 2108 * 1024);
        assert_eq!(reading.used_bytes, 700 * MIB);
        monitor.sample();
        // After it, the inactive page cache of each level (100 MiB at the 1 GiB level) is left out.
        assert_eq!(monitor.memory_now().used_bytes, 600 * MIB);
        tree.write(
            "sys/fs/cgroup/memory/process_api/abc/memory.usage_in_bytes",
            &format!("{}\n", 900 * MIB),
        );
        tree.status(3000, 7, "0-3");
        let reading = monitor.memory_now();
        assert_eq!(reading.rss_bytes, 3000 * 1024);
        assert_eq!(reading.used_bytes, 800 * MIB);
    }

    #[test]
    fn memory_now_reads_statm_where_the_page_size_is_known() {
        let tree = v1_hybrid();
        let auxv: Vec<u8> = [(6usize, 16384usize), (0, 0)]
            .iter()
            .flat_map(|&(key, value)| key.to_ne_bytes().into_iter().chain(value.to_ne_bytes()))
            .collect();
        fs::write(tree.path("proc/self/auxv"), auxv).unwrap();
        tree.write("proc/self/statm", "5000 100 20 1 0 300 0\n");
        let mut monitor = tree.monitor();
        // statm's resident pages (100 of 16 KiB), not status's VmRSS (2108 kB).
        assert_eq!(monitor.memory_now().rss_bytes, 100 * 16384);
        tree.write("proc/self/statm", "5000 250 20 1 0 300 0\n");
        assert_eq!(monitor.memory_now().rss_bytes, 250 * 16384);
        // A statm that cannot be read any more: the last full sample's value, not zero.
        fs::remove_file(tree.path("proc/self/statm")).unwrap();
        monitor.fast.statm.as_mut().unwrap().0 = KeptFile::new(tree.path("proc/self/statm"));
        monitor.sample();
        assert_eq!(monitor.memory_now().rss_bytes, 2108 * 1024);
    }

    #[test]
    fn thread_cpu_time_counts_this_thread() {
        let before = thread_cpu_time().expect("/proc/thread-self/stat");
        let until = Instant::now() + Duration::from_millis(150);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = thread_cpu_time().unwrap();
        assert!(after >= before);
        // Spinning 150 ms on this thread: most of it counted, even on a busy machine.
        assert!(
            after - before >= Duration::from_millis(30),
            "{:?}",
            after - before
        );
    }

    fn v2(cpu_max: &str, memory_max: &str) -> Tree {
        let tree = Tree::new("0-7");
        tree.write("proc/self/cgroup", "0::/user.slice/app\n");
        tree.write(
            "proc/self/mountinfo",
            "25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
             rw,nsdelegate,memory_recursiveprot\n",
        );
        let root = "sys/fs/cgroup";
        tree.write(
            &format!("{root}/cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        tree.write(&format!("{root}/cpu.stat"), "usage_usec 999999999\n");
        tree.write(&format!("{root}/user.slice/cpu.max"), "max 100000\n");
        tree.write(&format!("{root}/user.slice/memory.max"), "max\n");
        tree.write(&format!("{root}/user.slice/app/cpu.max"), cpu_max);
        tree.write(&format!("{root}/user.slice/app/memory.max"), memory_max);
        tree.write(
            &format!("{root}/user.slice/app/memory.current"),
            &format!("{}\n", 200 * MIB),
        );
        tree.write(
            &format!("{root}/user.slice/app/memory.stat"),
            &format!(
                "anon 1\nfile 2\nactive_file 3\ninactive_file {}\n",
                40 * MIB
            ),
        );
        tree.write(
            &format!("{root}/user.slice/app/cpu.stat"),
            "usage_usec 1000000\nuser_usec 1\n",
        );
        tree.write(
            &format!("{root}/user.slice/app/cpu.pressure"),
            "some avg10=3.00 avg60=0.00 avg300=0.00 total=1\n\
                   full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n",
        );
        tree.write(
            &format!("{root}/user.slice/app/memory.pressure"),
            "some avg10=4.00 avg60=0.00 avg300=0.00 total=1\n\
                   full avg10=2.00 avg60=0.00 avg300=0.00 total=1\n",
        );
        tree.write(
            "proc/pressure/cpu",
            "some avg10=50.00 avg60=0.00 avg300=0.00 total=1\n",
        );
        tree
    }

    #[test]
    fn pure_v2_quota_and_memory_max() {
        let tree = v2("50000 100000\n", &format!("{}\n", 512 * MIB));
        let mut monitor = tree.monitor();
        let limits = monitor.limits().clone();
        assert_eq!(limits.cores_online, 8);
        assert_eq!(limits.cpu_quota_cores, Some(0.5));
        assert!((limits.cores_available - 0.5).abs() < 1e-12);
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(512 * MIB));
        assert_eq!(limits.memory_limit_bytes, 512 * MIB);
        let info = limits.cgroup.as_ref().unwrap();
        assert_eq!(info.version, CgroupVersion::V2);
        let app = tree.path("sys/fs/cgroup/user.slice/app");
        assert_eq!(info.memory.as_ref().unwrap().dir, app);
        assert_eq!(info.cpu.as_ref().unwrap().dir, app);
        assert_eq!(info.cpu_quota_dir.as_ref(), Some(&app));
        // v2: the cgroup's own pressure files.
        assert_eq!(limits.cpu_pressure_file, Some(app.join("cpu.pressure")));
        assert_eq!(
            limits.memory_pressure_file,
            Some(app.join("memory.pressure"))
        );

        monitor.baseline.at = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        tree.write(
            "sys/fs/cgroup/user.slice/app/cpu.stat",
            "usage_usec 1400000\n",
        );
        let usage = monitor.sample();
        assert_eq!(usage.cgroup_memory_bytes, Some(200 * MIB));
        assert_eq!(usage.cgroup_memory_working_set_bytes, Some(160 * MIB));
        assert_eq!(usage.memory_used_bytes, 160 * MIB);
        assert!((usage.memory_percent_of_limit - 31.25).abs() < 1e-9);
        let cgroup_cpu = usage.cgroup_cpu_percent_of_core.unwrap();
        assert!(cgroup_cpu > 35.0 && cgroup_cpu <= 40.0, "{cgroup_cpu}");
        assert_eq!(usage.cpu_pressure_some_avg10, Some(3.0));
        assert_eq!(usage.memory_pressure_some_avg10, Some(4.0));
        assert_eq!(usage.memory_pressure_full_avg10, Some(2.0));
    }

    #[test]
    fn v2_max_means_no_limit() {
        let tree = v2("max 100000\n", "max\n");
        let mut monitor = tree.monitor();
        let limits = monitor.limits().clone();
        assert_eq!(limits.cpu_quota_cores, None);
        assert!((limits.cores_available - 8.0).abs() < 1e-12);
        assert_eq!(limits.cgroup_memory_limit_bytes, None);
        assert_eq!(limits.memory_limit_bytes, limits.machine_memory_bytes);
        let info = limits.cgroup.as_ref().unwrap();
        assert_eq!(
            (info.memory_limit_dir.as_ref(), info.cpu_quota_dir.as_ref()),
            (None, None)
        );
        // Without a limit, the cgroup's usage (other processes, page cache) does not count: only the RSS.
        let usage = monitor.sample();
        assert_eq!(usage.cgroup_memory_bytes, Some(200 * MIB));
        assert_eq!(usage.memory_used_bytes, usage.rss_bytes);
    }

    #[test]
    fn v1_container_with_non_root_mount_root() {
        // Docker on v1 without a cgroup namespace: /proc/self/cgroup shows the host path, and the mount's
        // root column says which host directory is mounted at the mount point.
        let tree = Tree::new("0-7");
        tree.write(
            "proc/self/cgroup",
            "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
        );
        tree.write(
            "proc/self/mountinfo",
            "700 690 0:75 / / rw,relatime master:1 - overlay overlay rw,lowerdir=x\n\
             712 711 0:33 /docker/abc /sys/fs/cgroup/memory ro,nosuid master:15 - cgroup cgroup rw,memory\n\
             713 711 0:34 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:16 - cgroup cgroup \
             rw,cpu,cpuacct\n",
        );
        tree.write(
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            &format!("{}\n", 256 * MIB),
        );
        tree.write(
            "sys/fs/cgroup/memory/memory.usage_in_bytes",
            &format!("{}\n", 64 * MIB),
        );
        tree.write(
            "sys/fs/cgroup/memory/memory.stat",
            "total_inactive_file 0\n",
        );
        tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n");
        tree.write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        tree.write("sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", "1\n");
        let mut monitor = tree.monitor();
        let limits = monitor.limits().clone();
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(256 * MIB));
        assert_eq!(limits.cpu_quota_cores, Some(2.0));
        assert!((limits.cores_available - 2.0).abs() < 1e-12);
        let info = limits.cgroup.as_ref().unwrap();
        assert_eq!(info.version, CgroupVersion::V1);
        let cpu = info.cpu.as_ref().unwrap();
        assert_eq!(cpu.dir, tree.path("sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(info.cpu_usage.as_ref().unwrap().dir, cpu.dir);
        assert_eq!(monitor.sample().cgroup_memory_bytes, Some(64 * MIB));
        // No PSI in this tree.
        assert_eq!(limits.cpu_pressure_file, None);
    }

    #[test]
    fn v2_container_with_sub_tree_mount() {
        // The unified hierarchy's /kubepods/pod1 mounted at /sys/fs/cgroup: the process's path below it
        // is found relative to the mount root, and the walk for limits stops at the mount point.
        let tree = Tree::new("0-15");
        tree.write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
        tree.write(
            "proc/self/mountinfo",
            "900 899 0:30 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        );
        tree.write("sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n");
        tree.write("sys/fs/cgroup/memory.max", &format!("{}\n", GIB));
        tree.write("sys/fs/cgroup/cpu.max", "300000 100000\n");
        tree.write("sys/fs/cgroup/ctr/memory.max", &format!("{}\n", 3 * GIB));
        tree.write("sys/fs/cgroup/ctr/cpu.max", "max 100000\n");
        // Outside the mount, and so never read.
        tree.write("sys/memory.max", "1\n");
        let monitor = tree.monitor();
        let limits = monitor.limits();
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(GIB));
        assert_eq!(limits.cpu_quota_cores, Some(3.0));
        let info = limits.cgroup.as_ref().unwrap();
        assert_eq!(
            info.memory.as_ref().unwrap().dir,
            tree.path("sys/fs/cgroup/ctr")
        );
        assert_eq!(info.memory_limit_dir, Some(tree.path("sys/fs/cgroup")));
    }

    #[test]
    fn path_outside_mount_root_falls_back_to_the_mount_point() {
        let tree = Tree::new("0");
        tree.write("proc/self/cgroup", "4:memory:/elsewhere\n");
        tree.write(
            "proc/self/mountinfo",
            "1 0 0:1 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        tree.write(
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            &format!("{}\n", 100 * MIB),
        );
        let limits = tree.monitor().limits().clone();
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(100 * MIB));
        assert_eq!(limits.cores_online, 1);
        assert!(
            limits
                .cgroup
                .unwrap()
                .memory
                .unwrap()
                .dir
                .ends_with("sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn no_cgroups_and_offline_cpus() {
        // Affinity lists 8 possible CPUs, 2 are online; no cgroup files at all.
        let tree = Tree::new("0-7");
        tree.write("sys/devices/system/cpu/online", "0-1\n");
        let mut monitor = tree.monitor();
        let limits = monitor.limits().clone();
        assert_eq!(limits.cores_online, 2);
        assert!((limits.cores_available - 2.0).abs() < 1e-12);
        assert_eq!(limits.cgroup, None);
        assert_eq!(limits.memory_limit_bytes, limits.machine_memory_bytes);
        let usage = monitor.sample();
        assert_eq!(
            (usage.cgroup_memory_bytes, usage.cgroup_cpu_percent_of_core),
            (None, None)
        );
        assert_eq!(usage.memory_used_bytes, 2108 * 1024);
    }

    #[test]
    fn cgroup_limit_above_machine_memory_is_capped() {
        let tree = Tree::new("0");
        tree.write("proc/self/cgroup", "0::/big\n");
        tree.write(
            "proc/self/mountinfo",
            "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        tree.write("sys/fs/cgroup/cgroup.controllers", "memory\n");
        tree.write("sys/fs/cgroup/big/memory.max", &format!("{}\n", 64 * GIB));
        let limits = tree.monitor().limits().clone();
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(64 * GIB));
        assert_eq!(limits.memory_limit_bytes, limits.machine_memory_bytes);
    }

    #[test]
    fn non_utf8_names_do_not_blind_the_monitor() {
        let tree = v1_hybrid();
        let mut stat = b"4242 (bad\xff\xfe name) S 1 4242 4242 0 -1 4194560 100 0 0 0 ".to_vec();
        stat.extend_from_slice(b"300 40 0 0 20 0 7 0 326998 2998272 393\n");
        fs::write(tree.path("proc/self/stat"), stat).unwrap();
        let mut status = b"Name:\tbad\xff\n".to_vec();
        status.extend_from_slice(b"VmRSS:\t 4 kB\nThreads:\t3\nCpus_allowed_list:\t0-1\n");
        fs::write(tree.path("proc/self/status"), status).unwrap();
        let mut mountinfo = b"20 1 0:5 / /mnt/\xff\xfe rw - ext4 /dev/sda rw\n".to_vec();
        mountinfo.extend_from_slice(&fs::read(tree.path("proc/self/mountinfo")).unwrap());
        fs::write(tree.path("proc/self/mountinfo"), mountinfo).unwrap();
        let mut monitor = tree.monitor();
        assert_eq!(monitor.baseline.process_ticks, Some(340));
        assert_eq!(monitor.limits().cgroup_memory_limit_bytes, Some(GIB));
        assert_eq!(monitor.limits().cores_online, 2);
        let usage = monitor.sample();
        assert_eq!((usage.rss_bytes, usage.threads), (4096, 3));
    }

    #[test]
    fn start_up_errors_name_the_file() {
        let tree = Tree::new("0-1");
        fs::remove_file(tree.path("proc/meminfo")).unwrap();
        let error = Monitor::with_roots(&tree.path("proc"), tree.dir.path()).unwrap_err();
        assert!(
            matches!(&error, MonitorError::Read { path, .. } if path.ends_with("proc/meminfo"))
        );
        assert!(error.to_string().contains("meminfo"), "{error}");

        let tree = Tree::new("zero");
        let error = Monitor::with_roots(&tree.path("proc"), tree.dir.path()).unwrap_err();
        assert!(
            matches!(&error, MonitorError::Parse { path, .. } if path.ends_with("proc/self/status"))
        );
        assert!(error.to_string().contains("Cpus_allowed_list"), "{error}");
    }

    #[test]
    fn usage_and_limits_round_trip_through_serde() {
        let tree = v1_hybrid();
        let mut monitor = tree.monitor();
        let usage = monitor.sample();
        let json = serde_json::to_string(&usage).unwrap();
        let back: Usage = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.cgroup_memory_bytes, usage.cgroup_memory_bytes);
        let json = serde_json::to_string(monitor.limits()).unwrap();
        assert!(json.contains("\"version\":\"V1\""), "{json}");
        let back: Limits = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, monitor.limits());
    }

    /// The real machine (Linux with /proc): sane limits and a live sample.
    #[test]
    fn real_machine_smoke() {
        let mut monitor = Monitor::new().unwrap();
        let limits = monitor.limits().clone();
        eprintln!("{limits:#?}");
        assert!(limits.cores_online >= 1);
        assert!(limits.cores_available > 0.0);
        assert!(limits.memory_limit_bytes > 0);
        // Burn a little CPU so the interval has something to show.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(150) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let usage = monitor.sample();
        eprintln!("{usage:#?}");
        assert!(usage.rss_bytes > 0);
        assert!(usage.threads >= 1);
        assert!(usage.memory_percent_of_limit > 0.0);
        assert!(usage.cpu_percent_of_core >= 0.0);
        assert!(usage.open_fds.is_some_and(|n| n >= 3));
        // The directory's size (Linux >= 6.2) and its listing agree, give or take descriptors that other
        // tests open and close meanwhile.
        let mut reader = Reader::default();
        let by_size = count_fds(Path::new("/proc/self/fd"), true, &mut reader).unwrap();
        let by_listing = count_fds(Path::new("/proc/self/fd"), false, &mut reader).unwrap();
        assert!(
            by_size.abs_diff(by_listing) < 64,
            "{by_size} vs {by_listing}"
        );
        // Whatever this machine is (cgroup v1, v2 or hybrid), discovery must agree with /proc/self/cgroup: a v1
        // memory controller line wins when its hierarchy is mounted, else the unified hierarchy.
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let v1_memory = proc_cgroup.lines().any(|line| {
            line.split(':')
                .nth(1)
                .is_some_and(|controllers| controllers.split(',').any(|c| c == "memory"))
        });
        eprintln!("cgroup: {:?}", limits.cgroup);
        if let Some(info) = &limits.cgroup
            && let Some(memory) = &info.memory
        {
            let expected = if v1_memory {
                CgroupVersion::V1
            } else {
                CgroupVersion::V2
            };
            assert_eq!(memory.version, expected, "{info:?}\n{proc_cgroup}");
            assert!(memory.dir.is_dir(), "{info:?}");
        }
    }
}

/// End to end on the real kernel: a child process in a freshly made cgroup with a real memory limit and CPU
/// quota. Needs root and a writable cgroup v1 tree (as on the build machine and CI), so it is ignored by default;
/// run it with `cargo test -p cicada-monitor -- --ignored real_cgroup`. Where the machine refuses, it fails and
/// says why instead of passing silently.
#[cfg(test)]
mod real_cgroup_tests {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};

    use super::*;

    const CHILD_ENV: &str = "CICADA_MONITOR_CGROUP_CHILD";
    const LIMIT: u64 = 512 << 20;

    /// Removes the test's cgroups, even when an assertion fails.
    struct Cleanup(Vec<PathBuf>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for dir in &self.0 {
                if let Err(error) = fs::remove_dir(dir) {
                    eprintln!("could not remove {}: {error}", dir.display());
                }
            }
        }
    }

    #[test]
    #[ignore = "needs root and a writable cgroup v1 memory and cpu hierarchy; run: cargo test -p cicada-monitor -- --ignored real_cgroup"]
    fn real_cgroup_limits_are_discovered() {
        let parent = Monitor::new().unwrap();
        let info = parent
            .limits()
            .cgroup
            .clone()
            .expect("no cgroup found on this machine");
        let (Some(memory), Some(cpu)) = (info.memory.clone(), info.cpu.clone()) else {
            panic!("no memory or cpu controller: {info:?}");
        };
        assert!(
            memory.version == CgroupVersion::V1 && cpu.version == CgroupVersion::V1,
            "written for cgroup v1 (the build machine and CI): {memory:?} {cpu:?}"
        );
        let name = format!("cicada-monitor-test-{}", std::process::id());
        let mut cleanup = Cleanup(Vec::new());
        let mut made = Vec::new();
        for dir in [memory.dir.join(&name), cpu.dir.join(&name)] {
            if let Err(error) = fs::create_dir(&dir) {
                panic!("mkdir {}: {error} (needs root)", dir.display());
            }
            cleanup.0.push(dir.clone());
            made.push(dir);
        }
        let (memory_dir, cpu_dir) = (&made[0], &made[1]);
        let setup = fs::write(memory_dir.join("memory.limit_in_bytes"), LIMIT.to_string())
            .and_then(|()| fs::write(cpu_dir.join("cpu.cfs_period_us"), "100000"))
            .and_then(|()| fs::write(cpu_dir.join("cpu.cfs_quota_us"), "50000"));
        if let Err(error) = setup {
            panic!("cannot set limits: {error}");
        }

        // The child waits on stdin until it is in the cgroups, then reports what it discovers.
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "monitor::real_cgroup_tests::cgroup_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let moved = fs::write(memory_dir.join("cgroup.procs"), &pid)
            .and_then(|()| fs::write(cpu_dir.join("cgroup.procs"), &pid));
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if let Err(error) = moved {
            panic!("cannot move the child into the cgroup: {error}");
        }
        assert!(output.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("LIMITS "))
            .expect(&stdout);
        let limits: Limits = serde_json::from_str(line).unwrap();
        eprintln!("child in {name}: {limits:#?}");
        assert_eq!(limits.cgroup_memory_limit_bytes, Some(LIMIT));
        assert_eq!(limits.memory_limit_bytes, LIMIT);
        assert_eq!(limits.cpu_quota_cores, Some(0.5));
        assert!((limits.cores_available - 0.5).abs() < 1e-12);
        let info = limits.cgroup.unwrap();
        assert_eq!(info.memory_limit_dir.as_ref(), Some(memory_dir));
        assert_eq!(info.cpu_quota_dir.as_ref(), Some(cpu_dir));
        let usage = stdout
            .lines()
            .find_map(|l| l.strip_prefix("USAGE "))
            .expect(&stdout);
        let usage: Usage = serde_json::from_str(usage).unwrap();
        assert!(
            usage.cgroup_memory_bytes.is_some_and(|b| b > 0),
            "{usage:?}"
        );
        assert!(usage.memory_used_bytes > 0 && usage.memory_percent_of_limit > 0.0);
    }

    /// Run by `real_cgroup_limits_are_discovered` in a child process.
    #[test]
    #[ignore = "run by real_cgroup_limits_are_discovered in a child process"]
    fn cgroup_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
        let mut monitor = Monitor::new().unwrap();
        println!(
            "LIMITS {}",
            serde_json::to_string(monitor.limits()).unwrap()
        );
        monitor.baseline.at = Instant::now()
            .checked_sub(Duration::from_millis(200))
            .unwrap();
        println!(
            "USAGE {}",
            serde_json::to_string(&monitor.sample()).unwrap()
        );
    }
}
