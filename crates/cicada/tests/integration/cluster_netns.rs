//! Two machines, simulated: a master and two workers of the quickstart example in two network namespaces, with a
//! proxy of the test's own between them that adds latency, cuts every connection now and then and once
//! partitions the two "machines" for longer than the master's 3 s missing rule. The counts must still be exact
//! (the master's merged count equals the demo target's own), and the workers must have come back.
//!
//! The layout keeps every packet on links this test made. The test process (the root namespace) is the network
//! in between: it holds the demo target and the proxy, because both must be read or driven in-process (the
//! target's exact counters, the proxy's cuts) and the workspace forbids the `unsafe` `setns` call that would move
//! a thread into a namespace. Each namespace reaches the root namespace over a veth pair of its own, on a /30 of
//! 10.200.X.0/29 that no other interface of the machine uses; the namespaces have no default route and the root
//! namespace does not forward, so A and B talk only through the proxy.
//!
//! ```text
//!  namespace A ("master machine")     root namespace (the network)          namespace B ("workers machine")
//!  master on 10.200.X.2:5557  <-veth->  10.200.X.1   proxy on 10.200.X.5:P  <-veth->  10.200.X.6  two workers
//!                                                     target on 10.200.X.5:T <------------------- users' requests
//! ```
//!
//! The test needs root (`ip netns`, `ip link`); it is ignored by default and fails, saying so, when asked to run
//! without it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cicada_demo::{DemoCounters, DemoServer};
use serde_json::Value;

use crate::common::{example, output_within};

/// Latency the proxy adds in each direction.
const ONE_WAY_DELAY: Duration = Duration::from_millis(50);
/// Every live connection through the proxy is cut this often (both ends see it close).
const CUT_EVERY: Duration = Duration::from_secs(3);
/// When the partition starts, counted from the proxy's start (the test is running by then).
const PARTITION_AT: Duration = Duration::from_secs(10);
/// How long nothing crosses the proxy: longer than the master's missing rule (3 s) and the workers' master
/// silence rule (3 s), so that both sides notice, and the workers reconnect once it heals.
const PARTITION_FOR: Duration = Duration::from_secs(5);
/// The master's cluster port inside namespace A (a fresh namespace: nothing else listens there).
const MASTER_PORT: u16 = 5557;
/// Bound on one `ip` command.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `ip ARGS`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let mut command = Command::new("ip");
    command.args(args);
    let output = output_within(command, IP_TIMEOUT);
    assert!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Run `ip ARGS` for cleaning up: a failure is only reported, so that the rest of the clean-up still runs.
fn ip_quietly(args: &[&str]) {
    let mut command = Command::new("ip");
    command.args(args);
    let output = output_within(command, IP_TIMEOUT);
    if !output.status.success() {
        eprintln!(
            "clean-up: `ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
}

/// Whether this process runs as root (effective uid 0), read from /proc without a system call of our own.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The two namespaces and their links; dropping it removes them (a process still inside a namespace keeps it
/// alive only until it exits, which the processes' own guards see to first).
struct TwoMachines {
    master_ns: String,
    workers_ns: String,
    /// The root ends of the two veth pairs (deleting one end deletes its pair).
    root_links: Vec<String>,
    subnet: u8,
}

impl TwoMachines {
    fn create() -> TwoMachines {
        assert!(
            is_root(),
            "this test needs root to create network namespaces (run it as root, e.g. in CI)"
        );
        let pid = std::process::id();
        let subnet = free_subnet(pid);
        let mut machines = TwoMachines {
            master_ns: format!("cicada-a-{pid}"),
            workers_ns: format!("cicada-b-{pid}"),
            root_links: Vec::new(),
            subnet,
        };
        // Interface names hold at most 15 bytes: a three-letter prefix and a pid of at most 7 digits.
        for (ns, root_end, ns_end, root_addr, ns_addr) in [
            (
                machines.master_ns.clone(),
                format!("cra{pid}"),
                format!("cna{pid}"),
                machines.hub_to_master(),
                machines.master_addr(),
            ),
            (
                machines.workers_ns.clone(),
                format!("crb{pid}"),
                format!("cnb{pid}"),
                machines.hub_to_workers(),
                machines.workers_addr(),
            ),
        ] {
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &root_end, "type", "veth", "peer", "name", &ns_end,
            ]);
            machines.root_links.push(root_end.clone());
            ip(&["link", "set", &ns_end, "netns", &ns]);
            ip(&["addr", "add", &format!("{root_addr}/30"), "dev", &root_end]);
            ip(&["link", "set", &root_end, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ns_addr}/30"),
                "dev",
                &ns_end,
            ]);
            ip(&["-n", &ns, "link", "set", &ns_end, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        machines
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.subnet, last)
    }

    /// The master's address, in namespace A.
    fn master_addr(&self) -> Ipv4Addr {
        self.address(2)
    }

    /// The root namespace's end of the link to A.
    fn hub_to_master(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// The root namespace's end of the link to B: the proxy and the target listen here.
    fn hub_to_workers(&self) -> Ipv4Addr {
        self.address(5)
    }

    /// The workers' address, in namespace B.
    fn workers_addr(&self) -> Ipv4Addr {
        self.address(6)
    }
}

impl Drop for TwoMachines {
    fn drop(&mut self) {
        for link in &self.root_links {
            ip_quietly(&["link", "del", link]);
        }
        for ns in [&self.master_ns, &self.workers_ns] {
            ip_quietly(&["netns", "del", ns]);
        }
    }
}

/// A third octet X such that no address or route of this machine lies in 10.200.X.0/24, starting from one
/// derived from the pid (two runs at once pick different ones).
fn free_subnet(pid: u32) -> u8 {
    let mut command = Command::new("ip");
    command.args(["-4", "route", "show", "table", "all"]);
    let output = output_within(command, IP_TIMEOUT);
    assert!(
        output.status.success(),
        "this test needs iproute2's `ip`: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let routes = String::from_utf8_lossy(&output.stdout).into_owned();
    let first = 16 + pid % 224;
    (0..224)
        .map(|step| u8::try_from(16 + (first - 16 + step) % 224).expect("below 240"))
        .find(|x| !routes.contains(&format!("10.200.{x}.")))
        .expect("a free 10.200.X.0/24 for the test's links")
}

/// The demo target on its own runtime, listening on an address of the root namespace.
struct Target {
    runtime: tokio::runtime::Runtime,
    server: Option<DemoServer>,
}

impl Target {
    fn start(address: SocketAddr) -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("target runtime");
        let server = runtime
            .block_on(DemoServer::start(address))
            .expect("the demo target starts");
        Target {
            runtime,
            server: Some(server),
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    fn counters(&self) -> &DemoCounters {
        self.server.as_ref().unwrap().counters()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// What the proxy's threads share.
struct ProxyShared {
    upstream: SocketAddr,
    started: Instant,
    stop: AtomicBool,
    accepted: AtomicU64,
    cuts: AtomicU64,
    closed_during_partition: AtomicU64,
    /// Both sockets of each connection since the last cut. Bound: emptied at every cut (every 3 s), so it holds
    /// the few connections the workers open in one period.
    live: Mutex<Vec<[TcpStream; 2]>>,
    /// The threads that carry bytes, four per connection. Bound: the finished ones are joined at every cut.
    pipes: Mutex<Vec<JoinHandle<()>>>,
}

impl ProxyShared {
    fn partitioned(&self) -> bool {
        let elapsed = self.started.elapsed();
        elapsed >= PARTITION_AT && elapsed < PARTITION_AT + PARTITION_FOR
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn cut_all(&self) -> usize {
        let connections = std::mem::take(&mut *self.live.lock().unwrap());
        for [client, upstream] in &connections {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
        connections.len()
    }
}

/// A TCP proxy between the workers and the master: 50 ms each way, every connection cut every 3 s, one 5 s
/// partition. Threads, not async: it must keep working whatever the runtimes of the test do.
struct Proxy {
    address: SocketAddr,
    shared: Arc<ProxyShared>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    fn start(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).expect("the proxy listens");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared {
            upstream,
            started: Instant::now(),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            closed_during_partition: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            pipes: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        let cutter = {
            let shared = shared.clone();
            std::thread::spawn(move || cut_loop(&shared))
        };
        Proxy {
            address,
            shared,
            threads: vec![acceptor, cutter],
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.cut_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let pipes = std::mem::take(&mut *self.shared.pipes.lock().unwrap());
        for pipe in pipes {
            let _ = pipe.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<ProxyShared>) {
    while !shared.stopping() {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(error) => {
                eprintln!("proxy: accept failed: {error}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if shared.partitioned() {
            // The other side cannot be reached: the connection ends at once.
            shared
                .closed_during_partition
                .fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2))
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(client2), Ok(upstream2), Ok(client3), Ok(upstream3)) = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        ) else {
            continue;
        };
        shared.live.lock().unwrap().push([client3, upstream3]);
        let mut pipes = shared.pipes.lock().unwrap();
        pipes.extend(delayed_pipe(client, upstream2, shared));
        pipes.extend(delayed_pipe(upstream, client2, shared));
    }
}

fn cut_loop(shared: &ProxyShared) {
    let mut next_cut = shared.started + CUT_EVERY;
    while !shared.stopping() {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() < next_cut {
            continue;
        }
        next_cut += CUT_EVERY;
        // During the partition, connections stay open and silent: both sides must notice by silence alone.
        if shared.partitioned() {
            continue;
        }
        if shared.cut_all() > 0 {
            shared.cuts.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .pipes
            .lock()
            .unwrap()
            .retain(|pipe| !pipe.is_finished());
    }
}

/// Carry bytes from `from` to `to`, each chunk ONE_WAY_DELAY late (latency, not a bandwidth limit), none during
/// the partition (they are delivered when it heals, as TCP would after the network came back, unless an end gave
/// up meanwhile). Bound: at most 256 chunks of 16 KiB wait; past that the reader waits, as TCP's window would.
fn delayed_pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Arc<ProxyShared>,
) -> [JoinHandle<()>; 2] {
    let (sender, receiver) = mpsc::sync_channel::<(Instant, Vec<u8>)>(256);
    let reader = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0
                || sender
                    .send((Instant::now() + ONE_WAY_DELAY, buffer[..read].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    let shared = shared.clone();
    let writer = std::thread::spawn(move || {
        for (due, bytes) in receiver {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            while shared.partitioned() && !shared.stopping() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    [reader, writer]
}

/// A process of an example run inside a namespace (`ip netns exec` executes it in place: the pid is the
/// example's), its output going to files; dropping it ends it by pid.
struct NsProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl NsProcess {
    fn start(ns: &str, example_name: &str, args: &[&str], log: PathBuf) -> NsProcess {
        let file = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(example(example_name))
            .args(args)
            .env("CICADA_CLUSTER_TOKEN", "netns-test-token")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file);
        NsProcess {
            child: Some(command.spawn().expect("`ip netns exec` starts")),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for it to exit, at most `limit`; past that it is killed and the test fails with its log.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("not waited for yet");
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("the process can be waited for") {
                self.child = None;
                return status;
            }
            if Instant::now() >= until {
                let pid = child.id();
                kill(pid);
                let _ = child.wait();
                self.child = None;
                panic!(
                    "process {pid} ran longer than {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id());
            let _ = child.wait();
        }
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

fn report(path: &Path, master_log: &str) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report ({e}); the master's log:\n{master_log}"));
    serde_json::from_str(&text).unwrap()
}

#[test]
#[ignore = "needs root for network namespaces; run: cargo test -p cicada --test integration -- --ignored cluster_netns"]
fn two_machines_with_latency_cuts_and_a_partition_count_exactly() {
    // Declared first, dropped last: every process and socket is gone before the namespaces go.
    let machines = TwoMachines::create();
    let target = Target::start(SocketAddr::new(machines.hub_to_workers().into(), 0));
    let proxy = Proxy::start(
        SocketAddr::new(machines.hub_to_workers().into(), 0),
        SocketAddrV4::new(machines.master_addr(), MASTER_PORT).into(),
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let json_arg = json.display().to_string();
    let target_url = target.url();
    let master_host = machines.master_addr().to_string();
    let master_port = MASTER_PORT.to_string();
    let mut master = NsProcess::start(
        &machines.master_ns,
        "quickstart",
        &[
            "--master",
            "--headless",
            "--only-summary",
            "--master-bind-host",
            &master_host,
            "--master-bind-port",
            &master_port,
            "--expect-workers",
            "2",
            "--expect-workers-max-wait",
            "60s",
            "-H",
            &target_url,
            "-u",
            "20",
            "-r",
            "10",
            "-t",
            "24s",
            "-s",
            "10s",
            "--report-json",
            &json_arg,
        ],
        dir.path().join("master.log"),
    );
    let proxy_host = proxy.address.ip().to_string();
    let proxy_port = proxy.address.port().to_string();
    let mut workers: Vec<NsProcess> = (0..2)
        .map(|n| {
            NsProcess::start(
                &machines.workers_ns,
                "quickstart",
                &[
                    "--worker",
                    "--master-host",
                    &proxy_host,
                    "--master-port",
                    &proxy_port,
                    "--master-timeout",
                    "20s",
                ],
                dir.path().join(format!("worker{n}.log")),
            )
        })
        .collect();

    let master_status = master.wait(Duration::from_secs(150));
    let master_log = master.log();
    let report = report(&json, &master_log);
    let worker_statuses: Vec<ExitStatus> = workers
        .iter_mut()
        .map(|worker| worker.wait(Duration::from_secs(60)))
        .collect();
    let worker_logs: Vec<String> = workers.iter().map(NsProcess::log).collect();
    let context = format!(
        "master {master_status:?}, log:\n{master_log}\nworkers {worker_statuses:?}, logs:\n{}",
        worker_logs.join("\n----\n")
    );

    assert!(
        matches!(master_status.code(), Some(0 | 1)),
        "the master ends the run by itself; {context}"
    );
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(reported > 0, "the users sent requests; {context}");
    assert_eq!(
        target.counters().total(),
        reported,
        "the target's own count equals the master's merged count; {context}"
    );
    // A partition makes the master hand the missing workers' users to those it still hears, while the missing
    // ones keep theirs (they cannot know): the cluster may run more than its target until all are back. Once
    // they are, the target is split again: the last points before the stop show the whole target, no more.
    let users: Vec<u64> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["user_count"].as_u64().unwrap())
        .collect();
    let last_running = users[users.len().saturating_sub(3)..]
        .iter()
        .copied()
        .max()
        .unwrap();
    assert_eq!(
        last_running, 20,
        "the cluster ends at its target: {users:?}; {context}"
    );

    // The network did what it should: connections were cut, the partition turned new connections away, and the
    // workers came back each time.
    let accepted = proxy.shared.accepted.load(Ordering::Relaxed);
    let cuts = proxy.shared.cuts.load(Ordering::Relaxed);
    assert!(cuts >= 3, "the proxy cut the connections {cuts} times");
    assert!(
        accepted > 2 + cuts,
        "the workers reconnected after each cut ({accepted} connections, {cuts} cuts); {context}"
    );
    let reconnects = master_log.matches("reconnected").count();
    assert!(
        reconnects >= 2,
        "the master took the workers back {reconnects} times; {context}"
    );
    assert!(
        master_log.contains("is missing") && master_log.contains("is back"),
        "the partition made the workers missing, and they came back; {context}"
    );
    for status in &worker_statuses {
        assert_eq!(
            status.code(),
            Some(0),
            "a worker quits with its master; {context}"
        );
    }
    drop(workers);
    drop(master);
    drop(proxy);
    drop(target);
    drop(machines);
}
