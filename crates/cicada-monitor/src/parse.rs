//! Pure parsers for the kernel's text files: `/proc/self/stat`, `/proc/self/status`, `/proc/meminfo`,
//! `/proc/self/limits`, pressure (PSI) files, `/proc/self/cgroup`, `/proc/self/mountinfo`, and the cgroup
//! controller files (`cpu.max`, `memory.max`, `memory.limit_in_bytes`, `cpu.cfs_quota_us`, `key value` stat
//! files). No I/O here: every function takes the file's text and returns `None` (or skips a line) on input it
//! does not understand, so that the callers decide what a malformed file means.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Cgroup v1 memory limits at or above this are "no limit" (the kernel reports unlimited as
/// `PAGE_COUNTER_MAX` × page size, 0x7FFFFFFFFFFFF000 on x86-64; 2^62 leaves room for other page sizes).
pub(crate) const UNLIMITED_MEMORY_THRESHOLD: u64 = 1 << 62;

/// The largest CPU number accepted in a CPU list (the kernel's `NR_CPUS` tops out at 8192).
const MAX_CPU_INDEX: usize = 1 << 16;

/// Process CPU time from `/proc/<pid>/stat`, in clock ticks (`USER_HZ`, 100 per second on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// Field 14, `utime`: time in user mode, all threads of the process.
    pub(crate) user: u64,
    /// Field 15, `stime`: time in kernel mode, all threads of the process.
    pub(crate) system: u64,
}

impl CpuTicks {
    /// User plus system time.
    pub(crate) fn total(self) -> u64 {
        self.user.saturating_add(self.system)
    }
}

/// Parses `/proc/<pid>/stat`. The second field, `comm`, is in parentheses and may itself contain spaces and
/// parentheses, so the fixed fields are counted from after the *last* `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // After the comm: field 3 (state) is index 0, so field N is index N - 3.
    let mut fields = after_comm.split_ascii_whitespace();
    let user = fields.nth(14 - 3)?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// The lines of `/proc/<pid>/status` that the monitor uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// `VmRSS`, converted from KiB to bytes.
    pub(crate) rss_bytes: Option<u64>,
    /// `Threads`.
    pub(crate) threads: Option<u64>,
    /// `Cpus_allowed_list`, unparsed (see [`parse_cpu_list`]).
    pub(crate) cpus_allowed_list: Option<String>,
}

/// Parses `/proc/<pid>/status` (`Key:<tab>value` lines).
pub(crate) fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "VmRSS" => status.rss_bytes = parse_kib(value),
            "Threads" => status.threads = value.parse().ok(),
            "Cpus_allowed_list" => status.cpus_allowed_list = Some(value.to_owned()),
            _ => {}
        }
    }
    status
}

/// `"2108 kB"` → 2108 × 1024.
fn parse_kib(value: &str) -> Option<u64> {
    let number = value.strip_suffix("kB").unwrap_or(value).trim();
    number.parse::<u64>().ok()?.checked_mul(1024)
}

/// Parses a kernel CPU list such as `0-3,8,10-11` (`Cpus_allowed_list`, `/sys/devices/system/cpu/online`).
/// An empty list is an empty set; anything malformed is `None`.
pub(crate) fn parse_cpu_list(text: &str) -> Option<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (
                first.trim().parse::<usize>().ok()?,
                last.trim().parse::<usize>().ok()?,
            ),
            None => {
                let cpu = part.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        if first > last || last > MAX_CPU_INDEX {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// One `Key: value kB` entry of `/proc/meminfo`, in bytes.
pub(crate) fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key).then(|| parse_kib(value.trim())).flatten()
    })
}

/// The soft `Max open files` limit from `/proc/<pid>/limits`; `None` when unlimited or absent.
pub(crate) fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One line of a pressure (PSI) file: the share of wall time, in percent, during which some (or all) tasks
/// were stalled, averaged over 10, 60 and 300 seconds, and the total stall time in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PsiLine {
    pub(crate) avg10: f64,
    pub(crate) avg60: f64,
    pub(crate) avg300: f64,
    pub(crate) total_us: u64,
}

/// A pressure file: its `some` and `full` lines (CPU pressure has `full` only since Linux 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Pressure {
    pub(crate) some: Option<PsiLine>,
    pub(crate) full: Option<PsiLine>,
}

/// Parses `/proc/pressure/{cpu,memory}` or a cgroup v2 `{cpu,memory}.pressure` file:
/// `some avg10=9.78 avg60=22.47 avg300=16.27 total=438327045`, then the same with `full`.
pub(crate) fn parse_pressure(text: &str) -> Pressure {
    let mut pressure = Pressure::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut pressure.some,
            Some("full") => &mut pressure.full,
            _ => continue,
        };
        let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
        for word in words {
            match word.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse().ok(),
                Some(("avg60", v)) => avg60 = v.parse().ok(),
                Some(("avg300", v)) => avg300 = v.parse().ok(),
                Some(("total", v)) => total_us = v.parse().ok(),
                _ => {}
            }
        }
        if let (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) =
            (avg10, avg60, avg300, total_us)
        {
            *slot = Some(PsiLine {
                avg10,
                avg60,
                avg300,
                total_us,
            });
        }
    }
    pressure
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupLine {
    /// 0 for the unified (v2) hierarchy.
    pub(crate) hierarchy: u32,
    /// v1 controllers bound to the hierarchy (`cpu`, `cpuacct`, `name=systemd`…); empty for v2.
    pub(crate) controllers: Vec<String>,
    /// The process's cgroup, relative to the hierarchy's root (as seen from this cgroup namespace).
    pub(crate) path: String,
}

impl CgroupLine {
    /// True for the cgroup v2 line (`0::/path`).
    pub(crate) fn is_unified(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// Parses `/proc/<pid>/cgroup`. The path may contain `:`, so each line is split at its first two colons.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(CgroupLine {
                hierarchy,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The parts of one `/proc/<pid>/mountinfo` line that cgroup discovery needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Field 4, the root: the directory of the mounted filesystem that appears at the mount point. For a
    /// cgroup mount inside a container this is often the container's cgroup (e.g. `/docker/<id>`), not `/`.
    pub(crate) root: PathBuf,
    /// Field 5, the mount point, absolute in this mount namespace.
    pub(crate) mount_point: PathBuf,
    /// The filesystem type after the ` - ` separator: `cgroup` (v1) or `cgroup2`.
    pub(crate) fs_type: String,
    /// The super options (last field), e.g. `rw,cpu,cpuacct`: v1 controllers are listed there.
    pub(crate) super_options: Vec<String>,
}

/// Parses `/proc/<pid>/mountinfo`:
/// `id parent major:minor root mount-point options [optional fields…] - fstype source super-options`.
/// The optional fields vary in number, so the filesystem type is found after the lone `-` field.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            let fs_type = fields.get(separator + 1)?;
            let super_options = fields.get(separator + 3).copied().unwrap_or("");
            Some(Mount {
                root: PathBuf::from(unescape_mount_field(fields.get(3)?)),
                mount_point: PathBuf::from(unescape_mount_field(fields.get(4)?)),
                fs_type: (*fs_type).to_owned(),
                super_options: super_options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011` tab, `\012` newline, `\134` backslash).
pub(crate) fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A limit value read from a cgroup file: a number, or explicitly no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LimitValue<T> {
    /// No limit (`max`, `-1`, or v1's huge "unlimited" number).
    Unlimited,
    /// A limit.
    Limit(T),
}

impl<T> LimitValue<T> {
    pub(crate) fn limit(self) -> Option<T> {
        match self {
            LimitValue::Unlimited => None,
            LimitValue::Limit(value) => Some(value),
        }
    }
}

/// Parses cgroup v2 `cpu.max` (`"$QUOTA $PERIOD"` in microseconds, or `"max $PERIOD"`) into cores.
pub(crate) fn parse_cpu_max(text: &str) -> Option<LimitValue<f64>> {
    let mut words = text.split_ascii_whitespace();
    let quota = words.next()?;
    // The period may be absent in very old kernels' output; the default is 100 ms.
    let period: u64 = words.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" {
        return Some(LimitValue::Unlimited);
    }
    let quota: u64 = quota.parse().ok()?;
    quota_cores(i128::from(quota), i128::from(period))
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` into cores (`-1` quota: no limit).
pub(crate) fn parse_cfs_quota(quota: &str, period: &str) -> Option<LimitValue<f64>> {
    let quota: i64 = quota.trim().parse().ok()?;
    if quota < 0 {
        return Some(LimitValue::Unlimited);
    }
    let period: i64 = period.trim().parse().ok()?;
    quota_cores(i128::from(quota), i128::from(period))
}

fn quota_cores(quota: i128, period: i128) -> Option<LimitValue<f64>> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(LimitValue::Limit(quota as f64 / period as f64))
}

/// Parses a memory limit: v2 `memory.max` (`max` or bytes) or v1 `memory.limit_in_bytes` (bytes, where
/// "unlimited" is a number ≥ 2^62).
pub(crate) fn parse_memory_limit(text: &str) -> Option<LimitValue<u64>> {
    let text = text.trim();
    if text == "max" {
        return Some(LimitValue::Unlimited);
    }
    // Some kernels have shown -1 for unlimited in v1 files.
    if text == "-1" {
        return Some(LimitValue::Unlimited);
    }
    let bytes: u64 = text.parse().ok()?;
    if bytes >= UNLIMITED_MEMORY_THRESHOLD {
        Some(LimitValue::Unlimited)
    } else {
        Some(LimitValue::Limit(bytes))
    }
}

/// A single number file such as `memory.usage_in_bytes`, `memory.current` or `cpuacct.usage`.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The resident set of `/proc/<pid>/statm`, in pages: its second field (`size resident shared text lib data dt`),
/// the same count `VmRSS` of `status` shows in kB.
pub(crate) fn statm_resident_pages(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The page size from `/proc/<pid>/auxv` (the `AT_PAGESZ` entry of the auxiliary vector: native-endian pairs of
/// machine words, ended by `AT_NULL`). Reading it needs no libc call, which this crate forbids.
pub(crate) fn auxv_page_size(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_PAGESZ: u64 = 6;
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |bytes: &[u8]| -> Option<u64> {
        let mut raw = [0u8; WORD];
        raw.copy_from_slice(bytes.get(..WORD)?);
        u64::try_from(usize::from_ne_bytes(raw)).ok()
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        let key = word(pair)?;
        let value = word(&pair[WORD..])?;
        match key {
            AT_NULL => return None,
            AT_PAGESZ => return (value.is_power_of_two() && value >= 512).then_some(value),
            _ => {}
        }
    }
    None
}

/// One `key value` line of a flat-keyed file such as `memory.stat` or `cpu.stat`.
pub(crate) fn keyed_u64(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_with_spaces_and_parentheses_in_comm() {
        // A comm of "a) (b c)" with utime 1234 and stime 56.
        let text = "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 7 0 326998 \
                    2998272 393 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_proc_stat(text),
            Some(CpuTicks {
                user: 1234,
                system: 56
            })
        );
        assert_eq!(parse_proc_stat(text).map(CpuTicks::total), Some(1290));
    }

    #[test]
    fn proc_stat_real_shape_and_garbage() {
        let text = "16195 (head) R 16180 16180 15587 0 -1 4194304 102 0 0 0 7 3 0 0 20 0 1 0 326998 2998272 393";
        assert_eq!(parse_proc_stat(text), Some(CpuTicks { user: 7, system: 3 }));
        assert_eq!(parse_proc_stat("no parenthesis 1 2 3"), None);
        assert_eq!(parse_proc_stat("1 (x) R 1 2"), None);
        assert_eq!(parse_proc_stat("1 (x) R 0 0 0 0 0 0 0 0 0 0 zz 3"), None);
    }

    #[test]
    fn status_fields() {
        let text = "Name:\tcicada\nUmask:\t0022\nVmRSS:\t    2108 kB\nThreads:\t7\nCpus_allowed:\t3\n\
                    Cpus_allowed_list:\t0-1\n";
        let status = parse_status(text);
        assert_eq!(status.rss_bytes, Some(2108 * 1024));
        assert_eq!(status.threads, Some(7));
        assert_eq!(status.cpus_allowed_list.as_deref(), Some("0-1"));
        assert_eq!(parse_status("Name:\tx\n"), Status::default());
    }

    #[test]
    fn cpu_lists() {
        let cpus = parse_cpu_list("0-3,8,10-11").unwrap();
        assert_eq!(
            cpus.iter().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("0\n").unwrap().len(), 1);
        assert_eq!(parse_cpu_list("").unwrap().len(), 0);
        assert_eq!(parse_cpu_list("0-1,1-2").unwrap().len(), 3);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
    }

    #[test]
    fn meminfo_and_limits() {
        let meminfo =
            "MemTotal:       25165824 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(25_165_824 * 1024));
        assert_eq!(
            meminfo_bytes(meminfo, "MemAvailable"),
            Some(20_000_000 * 1024)
        );
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_max_open_files(limits), Some(20_000));
        assert_eq!(
            parse_max_open_files("Max open files   unlimited  unlimited  files\n"),
            None
        );
    }

    #[test]
    fn pressure_files() {
        let text = "some avg10=9.78 avg60=22.47 avg300=16.27 total=438327045\n\
                    full avg10=0.50 avg60=0.00 avg300=0.00 total=12\n";
        let pressure = parse_pressure(text);
        let some = pressure.some.unwrap();
        assert!((some.avg10 - 9.78).abs() < 1e-9);
        assert!((some.avg60 - 22.47).abs() < 1e-9);
        assert!((some.avg300 - 16.27).abs() < 1e-9);
        assert_eq!(some.total_us, 438_327_045);
        assert!((pressure.full.unwrap().avg10 - 0.5).abs() < 1e-9);
        // Before Linux 5.13, CPU pressure had only a `some` line.
        let old = parse_pressure("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n");
        assert!(old.some.is_some() && old.full.is_none());
        assert_eq!(
            parse_pressure("some avg10=x avg60=2.00 avg300=3.00 total=4\n").some,
            None
        );
        assert_eq!(parse_pressure(""), Pressure::default());
    }

    #[test]
    fn proc_cgroup_lines() {
        let text =
            "9:name=systemd:/\n4:memory:/process_api/538f\n2:cpu,cpuacct:/a:b\n0::/user.slice\n";
        let lines = parse_proc_cgroup(text);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].controllers, vec!["name=systemd"]);
        assert_eq!(lines[1].path, "/process_api/538f");
        assert_eq!(lines[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(lines[2].path, "/a:b");
        assert!(lines[3].is_unified() && !lines[1].is_unified());
        assert_eq!(lines[3].path, "/user.slice");
    }

    #[test]
    fn mountinfo_lines() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 master:2 - cgroup2 cgroup2 rw\n\
                    50 31 0:40 /docker/abc /sys/fs/cgroup/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(mounts[0].fs_type, "cgroup");
        assert_eq!(mounts[0].super_options, vec!["rw", "memory"]);
        assert_eq!(mounts[1].fs_type, "cgroup2");
        assert_eq!(mounts[2].root, PathBuf::from("/docker/abc"));
        assert_eq!(
            mounts[2].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu acct")
        );
        assert_eq!(mounts[2].super_options, vec!["rw", "cpu", "cpuacct"]);
    }

    #[test]
    fn mount_unescape() {
        assert_eq!(unescape_mount_field("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape_mount_field("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_mount_field("\\999"), "\\999");
        assert_eq!(unescape_mount_field("\\040"), " ");
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(
            parse_cpu_max("50000 100000\n"),
            Some(LimitValue::Limit(0.5))
        );
        assert_eq!(parse_cpu_max("max 100000\n"), Some(LimitValue::Unlimited));
        assert_eq!(parse_cpu_max("200000 100000"), Some(LimitValue::Limit(2.0)));
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(
            parse_cfs_quota("-1\n", "100000\n"),
            Some(LimitValue::Unlimited)
        );
        assert_eq!(
            parse_cfs_quota("150000\n", "100000\n"),
            Some(LimitValue::Limit(1.5))
        );
        assert_eq!(parse_cfs_quota("150000", "0"), None);
        assert_eq!(parse_cfs_quota("x", "100000"), None);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory_limit("max\n"), Some(LimitValue::Unlimited));
        assert_eq!(
            parse_memory_limit("9223372036854771712\n"),
            Some(LimitValue::Unlimited)
        );
        assert_eq!(parse_memory_limit("-1"), Some(LimitValue::Unlimited));
        assert_eq!(
            parse_memory_limit("536870912\n"),
            Some(LimitValue::Limit(512 << 20))
        );
        assert_eq!(parse_memory_limit("lots"), None);
    }

    #[test]
    fn keyed_files() {
        let stat = "cache 100\nrss 200\ninactive_file 300\ntotal_inactive_file 400\n";
        assert_eq!(keyed_u64(stat, "inactive_file"), Some(300));
        assert_eq!(keyed_u64(stat, "total_inactive_file"), Some(400));
        assert_eq!(keyed_u64(stat, "missing"), None);
        assert_eq!(
            keyed_u64("usage_usec 123456\nuser_usec 1\n", "usage_usec"),
            Some(123_456)
        );
        assert_eq!(parse_u64(" 42\n"), Some(42));
    }

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(statm_resident_pages("12345 678 90 1 0 2000 0\n"), Some(678));
        assert_eq!(statm_resident_pages("12345\n"), None);
        assert_eq!(statm_resident_pages("12345 x 1"), None);
    }

    #[test]
    fn auxv_page_size_is_found_and_checked() {
        let vector = |pairs: &[(usize, usize)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|&(key, value)| key.to_ne_bytes().into_iter().chain(value.to_ne_bytes()))
                .collect()
        };
        assert_eq!(
            auxv_page_size(&vector(&[(33, 7), (6, 4096), (0, 0)])),
            Some(4096)
        );
        assert_eq!(auxv_page_size(&vector(&[(6, 16384)])), Some(16384));
        // Not a power of two, after AT_NULL, absent, or cut short: unknown.
        assert_eq!(auxv_page_size(&vector(&[(6, 4000), (0, 0)])), None);
        assert_eq!(auxv_page_size(&vector(&[(0, 0), (6, 4096)])), None);
        assert_eq!(auxv_page_size(&vector(&[(33, 7)])), None);
        assert_eq!(auxv_page_size(&[6, 0, 0]), None);
    }

    #[test]
    fn this_process_statm_matches_status_vm_rss() {
        let (Ok(auxv), Ok(statm), Ok(status)) = (
            std::fs::read("/proc/self/auxv"),
            std::fs::read_to_string("/proc/self/statm"),
            std::fs::read_to_string("/proc/self/status"),
        ) else {
            return; // not Linux
        };
        let page_size = auxv_page_size(&auxv).expect("AT_PAGESZ in this process's auxv");
        let from_statm = statm_resident_pages(&statm).unwrap() * page_size;
        let from_status = parse_status(&status).rss_bytes.unwrap();
        // Read a moment apart: equal but for the pages touched in between.
        let diff = from_statm.abs_diff(from_status);
        assert!(diff < 4 << 20, "statm {from_statm} vs status {from_status}");
    }
}
