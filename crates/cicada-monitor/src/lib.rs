//! Self-measurement for the cicada load generator: the process's CPU, memory, the machine's and the
//! container's limits, pressure, and scheduler lag, sampled about once a second for the engine's resource
//! guard. Linux only, and read entirely from `/proc` and `/sys` text files (no libc, no `unsafe`): limits are
//! discovered at start and re-discovered on demand ([`Limits`], including cgroup v1, v2 and hybrid hierarchies, nested cgroups and
//! containers), and each [`Monitor::sample`] reads a handful of small files into a reused buffer.
//!
//! ```
//! use std::time::Duration;
//! use cicada_monitor::{LagProbe, Monitor};
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
//! runtime.block_on(async {
//!     let mut monitor = Monitor::new()?;
//!     let limits = monitor.limits();
//!     println!("{} cores, {} bytes of memory", limits.cores_available, limits.memory_limit_bytes);
//!     let probe = LagProbe::spawn(LagProbe::DEFAULT_INTERVAL);
//!     monitor.attach_lag_probe(&probe);
//!     // In the engine: a `tokio::time::interval(Duration::from_secs(1))` loop.
//!     tokio::time::sleep(Duration::from_millis(200)).await;
//!     let usage = monitor.sample();
//!     println!(
//!         "cpu {:.0}% of what is available, memory {:.1}% of the limit, lag {:?}",
//!         usage.cpu_percent_of_available, usage.memory_percent_of_limit, usage.max_lag
//!     );
//!     Ok::<_, cicada_monitor::MonitorError>(())
//! })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod cgroup;
mod error;
mod lag;
mod monitor;
mod parse;
mod text;

pub use cgroup::{CgroupInfo, CgroupVersion, ControllerDir};
pub use error::MonitorError;
pub use lag::LagProbe;
pub use monitor::{Limits, LimitsChange, MemoryReading, Monitor, USER_HZ, Usage, thread_cpu_time};
