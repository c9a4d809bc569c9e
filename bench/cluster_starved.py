#!/usr/bin/env python3
"""bench/cluster_starved.py: load moved off a starved worker (issue #11).

    sudo python3 bench/cluster_starved.py [--users N] [--duration SECS] [--quota-percent P] [--no-build]

Two runs of the quickstart example against the demo target (`cicada demo`, one thread), each a master with its web
UI (autostarted, polled every second for its workers) and a JSON report:

  healthy   a master and one worker;
  starved   a master and two workers, one of them in a CPU cgroup whose quota is P% of one core (cgroup v1 or v2).

It prints, as Markdown: where the users ran over time (per worker), the cluster's actions from the report, the
share of history points marked saturated, and the p95 of the points that are *not* marked in each run, with the
starved run's difference from the healthy one. Needs root (cgroups). All traffic stays on 127.0.0.1; every process
it starts is stopped by pid. Results (reports, polls, logs) go to bench/results/cluster_starved/.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results", "cluster_starved")
TARGET = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release")
QUICKSTART = os.path.join(TARGET, "examples", "quickstart")
CICADA = os.path.join(TARGET, "cicada")
CGROUP_NAME = "cicada-starved-bench"

started = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, log, preexec=None):
    out = open(log, "w")
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=preexec)
    started.append(process)
    return process


def stop_all():
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


class CpuCgroup:
    """A CPU cgroup with a quota; v1 (`cpu.cfs_quota_us`) or v2 (`cpu.max`)."""

    def __init__(self, percent):
        period = 100_000
        quota = max(1_000, int(period * percent / 100))
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.path = f"/sys/fs/cgroup/{CGROUP_NAME}"
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "cpu.max"), "w") as f:
                f.write(f"{quota} {period}")
        else:
            self.path = f"/sys/fs/cgroup/cpu/{CGROUP_NAME}"
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "cpu.cfs_period_us"), "w") as f:
                f.write(str(period))
            with open(os.path.join(self.path, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota))
        self.percent = quota * 100 / period

    def enter(self):
        """For preexec_fn: the child joins the cgroup before it runs the worker."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def get_json(address, path):
    request = urllib.request.Request(f"http://{address}{path}", headers={"Host": address})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def web_address(log, deadline):
    while time.time() < deadline:
        with open(log) as f:
            for line in f:
                if "web UI: " in line:
                    return line.split("web UI: ")[1].strip().replace("http://", "")
        time.sleep(0.1)
    raise SystemExit(f"the master never announced its web UI (see {log})")


def run(name, users, duration, target, starved_cgroup=None):
    port = str(free_port())
    report = os.path.join(RESULTS, f"{name}.json")
    master_log = os.path.join(RESULTS, f"{name}-master.log")
    workers = 2 if starved_cgroup else 1
    master = start([QUICKSTART, "--master", "--autostart", "--web-port", "0", "--master-bind-port", port,
                    "-H", target, "--expect-workers", str(workers), "-u", str(users), "-r", str(users),
                    "-t", f"{duration}s", "-s", "5", "--autoquit", "0", "--report-json", report], master_log)
    address = web_address(master_log, time.time() + 30)
    worker_args = [QUICKSTART, "--worker", "--master-port", port, "-L", "WARNING"]
    pids = {}
    run_processes = [master]
    if starved_cgroup:
        starved = start(worker_args, os.path.join(RESULTS, f"{name}-starved.log"), starved_cgroup.enter)
        pids[starved.pid] = "starved"
        run_processes.append(starved)
    healthy = start(worker_args, os.path.join(RESULTS, f"{name}-healthy.log"))
    pids[healthy.pid] = "healthy"
    run_processes.append(healthy)
    polls = []
    while master.poll() is None:
        try:
            snapshot = get_json(address, "/stats/requests")
            row = {"t": time.time(), "users": snapshot.get("user_count", 0)}
            for worker in snapshot.get("workers") or []:
                role = next((r for p, r in pids.items() if f"_{p}_" in worker["id"]), worker["id"])
                row[role] = worker["user_count"]
            polls.append(row)
        except OSError:
            pass
        time.sleep(1)
    with open(os.path.join(RESULTS, f"{name}-polls.json"), "w") as f:
        json.dump(polls, f)
    # The workers leave when their master quits; the demo target stays for the next run.
    for process in run_processes:
        if process.poll() is None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    with open(report) as f:
        return json.load(f), polls


def unmarked_p95(report):
    points = [p for p in report["history"] if p["user_count"] > 0 and p["total_requests"] > 0]
    unmarked = [p["p95_ms"] for p in points if not (p.get("generator") or {}).get("saturated")]
    marked = len(points) - len(unmarked)
    return (statistics.median(unmarked) if unmarked else None), len(unmarked), marked


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--quota-percent", type=float, default=1.0)
    parser.add_argument("--no-build", action="store_true")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cluster_starved.py needs root (it creates a CPU cgroup)")
    os.makedirs(RESULTS, exist_ok=True)
    if not options.no_build:
        for what in (["-p", "cicada", "--example", "quickstart"], ["-p", "cicada-cli"]):
            subprocess.run(["cargo", "build", "--release", *what],
                           cwd=REPO, check=True, env={**os.environ, "CICADA_SKIP_WEB_BUILD": "1"})
    cgroup = CpuCgroup(options.quota_percent)
    try:
        demo_port = free_port()
        start([CICADA, "demo", "--port", str(demo_port), "--threads", "1"], os.path.join(RESULTS, "demo.log"))
        time.sleep(0.5)
        target = f"http://127.0.0.1:{demo_port}"
        healthy, healthy_polls = run("healthy", options.users, options.duration, target)
        starved, starved_polls = run("starved", options.users, options.duration, target, cgroup)
    finally:
        stop_all()
        cgroup.remove()

    print(f"## A starved worker ({options.users} quickstart users, {options.duration} s, one worker's CPU quota "
          f"{cgroup.percent:.0f}% of a core)\n")
    print("Where the users ran (the master's Workers data, every 5 s):\n")
    print("| s | users | starved worker | healthy worker |")
    print("| ---: | ---: | ---: | ---: |")
    t0 = starved_polls[0]["t"] if starved_polls else 0
    for row in starved_polls[::5]:
        print(f"| {row['t'] - t0:.0f} | {row['users']} | {row.get('starved', '-')} | {row.get('healthy', '-')} |")
    print("\nThe cluster's actions (the report's `cluster.actions`):\n")
    for action in (starved.get("cluster") or {}).get("actions", []):
        print(f"- {action['run_seconds']:.1f} s: {action['kind']} {action.get('worker') or ''} "
              f"({action['users']} users): {action['reason']}")
    h_p95, h_n, h_marked = unmarked_p95(healthy)
    s_p95, s_n, s_marked = unmarked_p95(starved)
    print("\n| run | history points unmarked / marked | p95 of the unmarked points (median) | vs healthy |")
    print("| --- | ---: | ---: | ---: |")
    def ms(value):
        return f"{value:.2f} ms" if value is not None else "none unmarked"

    print(f"| healthy, one worker | {h_n} / {h_marked} | {ms(h_p95)} | |")
    diff = f"{(s_p95 / h_p95 - 1) * 100:+.1f}%" if (s_p95 and h_p95) else "-"
    print(f"| one of two workers starved | {s_n} / {s_marked} | {ms(s_p95)} | {diff} |")
    for name, report in (("healthy", healthy), ("starved", starved)):
        total = report["stats"]["total"]
        print(f"\n{name}: {total['num_requests']} requests, {total['num_failures']} failures.", end="")
    print()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        stop_all()
