#!/usr/bin/env bash
# bench/cluster.sh: the distributed mode's costs (issue #10).
#
#   bench/cluster.sh [--only master|worker[,...]] [--sizes 100,300,1000] [--duration SECS] [--window SECS]
#                    [--reps N] [--worker-duration SECS] [--no-build]
#
# master: a real master (cluster_master, CPU 1) with N simulated workers (cluster_sim_workers, CPU 0) that send a
#         20-name statistics delta and a heartbeat every second; the master's CPU over a steady window, its RSS
#         over the run, the simulator's CPU, and whether the master's report counts every request sent.
# worker: get_root flat out against nginx (CPU 1), run locally and as the one worker of a master, interleaved
#         (A B, A B, ...); the generator's CPU per request in each mode and the ratio.
# Writes bench/results/cluster/ (CSV and raw logs) and prints Markdown tables. Every process it starts is
# stopped by pid on exit; all traffic stays on 127.0.0.1. See bench/README.md, "Distributed mode".

set -euo pipefail
export LC_ALL=C

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
RESULTS="$BENCH/results/cluster"
PY="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

ONLY="master,worker" SIZES="100,300,1000" DURATION=60 WINDOW=30 REPS=3 WORKER_DURATION=20 BUILD=1
while (($#)); do
    case "$1" in
        --only) ONLY="${2:?--only needs a value}"; shift ;;
        --sizes) SIZES="${2:?--sizes needs a value}"; shift ;;
        --duration) DURATION="${2:?--duration needs a value}"; shift ;;
        --window) WINDOW="${2:?--window needs a value}"; shift ;;
        --reps) REPS="${2:?--reps needs a value}"; shift ;;
        --worker-duration) WORKER_DURATION="${2:?--worker-duration needs a value}"; shift ;;
        --no-build) BUILD=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "cluster.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for suite in ${ONLY//,/ }; do
    case "$suite" in master | worker) ;; *) echo "cluster.sh: --only takes master or worker, not '$suite'" >&2; exit 2 ;; esac
done
for size in ${SIZES//,/ }; do
    [[ "$size" =~ ^[0-9]+$ && "$size" -ge 1 && "$size" -le 10000 ]] ||
        { echo "cluster.sh: --sizes are worker counts 1..10000, not '$size'" >&2; exit 2; }
done
for value in "$DURATION" "$WINDOW" "$REPS" "$WORKER_DURATION"; do
    [[ "$value" =~ ^[0-9]+$ && "$value" -ge 1 ]] || { echo "cluster.sh: '$value' is not a whole number >= 1" >&2; exit 2; }
done
((WINDOW + 10 <= DURATION)) || { echo "cluster.sh: --window must be at least 10 s shorter than --duration" >&2; exit 2; }
((REPS <= 20)) || { echo "cluster.sh: --reps must be 1..20" >&2; exit 2; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

TMP="$(mktemp -d /tmp/cicada-cluster-bench.XXXXXX)"
PIDS=()
CLK_TCK="$(getconf CLK_TCK)"
# The cluster test's host: a master runs no users and the simulated workers send no request, so nothing connects
# to it; given only so that the master does not start its built-in demo target.
NO_HOST="http://127.0.0.1:9"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Stop one process this script started: SIGTERM (or $2), then SIGKILL after $3 seconds.
stop_pid() {
    local pid="$1" sig="${2:-TERM}" grace="${3:-5}" i
    if kill -0 "$pid" 2>/dev/null; then
        kill -"$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# Wait up to $2 seconds for process $1 to exit on its own; 0 when it did (its status in WAITED_RC).
wait_exit() {
    local pid="$1" limit="$2" i
    for ((i = 0; i < limit * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            WAITED_RC=0
            wait "$pid" 2>/dev/null || WAITED_RC=$?
            forget_pid "$pid"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid" TERM 3; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
# utime + stime of a process, in clock ticks (fields 14 and 15; the command names here have no spaces).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Wait up to $2 seconds for the regex $3 in file $4 while process $1 lives. 0 = found, 1 = died, 2 = timeout.
wait_for_line() {
    local pid="$1" limit="$2" pattern="$3" file="$4" i
    for ((i = 0; i < limit * 10; i++)); do
        grep -qE "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { grep -qE "$pattern" "$file" 2>/dev/null && return 0; return 1; }
        sleep 0.1
    done
    return 2
}

json_field() { "$PY" -c 'import json, sys
data = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    data = data[key]
print(data)' "$1" "$2" 2>/dev/null || echo ""; }

# ------------------------------------------------------------------------------------------------ build

COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -z "$(git -C "$REPO" status --porcelain -- crates bench/cicada-bench Cargo.lock 2>/dev/null || true)" ]] ||
    COMMIT+="+dirty"
mkdir -p "$RESULTS/raw"
if ((BUILD)); then
    log "building cicada-bench (cargo build --release -p cicada-bench)"
    (cd "$REPO" && cargo build --release -p cicada-bench) >"$RESULTS/raw/build.log" 2>&1 ||
        die "cargo build failed; see $RESULTS/raw/build.log"
    COMMIT="$COMMIT (built)"
else
    COMMIT="$COMMIT? (prebuilt binaries, --no-build)"
fi
for bin in cluster_master cluster_sim_workers get_root; do
    [[ -x "$TARGET_DIR/$bin" ]] || die "$TARGET_DIR/$bin is missing (run without --no-build)"
done
log "cicada cluster bench: suites $ONLY; $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(loadavg)"

# ------------------------------------------------------------------------------------------------ master

# One size: a master with $1 simulated workers. Appends a row to master.csv.
measure_master() {
    local workers="$1" prefix="$RESULTS/raw/master_$1" port master sim rc status=ok
    local t0 t1 m0 m1 s0 s1 rss rss_first="" rss_last="" rss_min="" rss_max="" series="" i requests sent sim_line
    local rss_end_of_run="" master_rc="" sim_rc=""
    port="$(free_port)"
    taskset -c 1 "$TARGET_DIR/cluster_master" --master --headless --master-bind-port "$port" \
        --expect-workers "$workers" -H "$NO_HOST" -u "$workers" -r "$workers" -t "${DURATION}s" --report-json "$prefix.json" \
        >"$prefix.master.stdout" 2>"$prefix.master.stderr" &
    master=$!
    PIDS+=("$master")
    wait_for_line "$master" 10 "master listening for workers" "$prefix.master.stderr" ||
        { log "the master did not start: $(tail -3 "$prefix.master.stderr")"; stop_pid "$master"; return 0; }
    taskset -c 0 "$TARGET_DIR/cluster_sim_workers" --master-port "$port" --workers "$workers" \
        --max-seconds $((DURATION + 120)) >"$prefix.sim.stdout" 2>"$prefix.sim.stderr" &
    sim=$!
    PIDS+=("$sim")
    rc=0
    wait_for_line "$sim" 90 "all $workers users spawned" "$prefix.master.stderr" || rc=$?
    kill -0 "$master" 2>/dev/null || rc=1
    if ((rc != 0)); then
        log "$workers workers: the master did not get all users running (rc $rc); see $prefix.*"
        status="not spawned"
        stop_pid "$master" TERM 5
        stop_pid "$sim" TERM 15
    else
        # Let the sessions settle (every worker sending deltas, first histograms allocated), then the window.
        sleep 5
        t0="$EPOCHREALTIME" m0="$(cpu_ticks "$master")" s0="$(cpu_ticks "$sim")"
        for ((i = 0; i <= WINDOW; i += 5)); do
            rss="$(rss_kib "$master")"
            series+="${series:+ }$rss"
            [[ -z "$rss_first" ]] && rss_first="$rss"
            [[ -z "$rss_min" || "$rss" -lt "$rss_min" ]] && rss_min="$rss"
            [[ -z "$rss_max" || "$rss" -gt "$rss_max" ]] && rss_max="$rss"
            rss_last="$rss"
            ((i < WINDOW)) && sleep 5
        done
        t1="$EPOCHREALTIME" m1="$(cpu_ticks "$master")" s1="$(cpu_ticks "$sim")"
        # The RSS until the master's end, to see whether it keeps growing past the window.
        while kill -0 "$master" 2>/dev/null; do
            rss="$(rss_kib "$master")"
            [[ -n "$rss" ]] && rss_end_of_run="$rss"
            sleep 1
        done
    fi
    if [[ "$status" == ok ]]; then
        wait_exit "$master" $((DURATION + 60)) && master_rc="$WAITED_RC" || { stop_pid "$master"; master_rc=killed; }
        wait_exit "$sim" 60 && sim_rc="$WAITED_RC" || { stop_pid "$sim"; sim_rc=killed; }
    fi
    requests="$(json_field "$prefix.json" stats.total.num_requests)"
    sim_line="$(grep -m1 '^SIM ' "$prefix.sim.stdout" | cut -c5- || true)"
    printf '%s\n' "$sim_line" >"$prefix.sim.json"
    sent="$(json_field "$prefix.sim.json" requests_sent)"
    "$PY" - "$RESULTS/master.csv" <<EOF
import csv, json, os, sys
path = sys.argv[1]
sim = json.loads(open("$prefix.sim.json").read().strip() or "{}")
window = (float("${t1:-0}") - float("${t0:-0}")) or None
tck = $CLK_TCK
def pct(a, b):
    return "" if not window or a == "" or b == "" else f"{(int(b) - int(a)) / tck / window * 100:.1f}"
row = {
    "workers": $workers, "status": "$status", "window_s": f"{window:.1f}" if window else "",
    "master_cpu_pct": pct("${m0:-}", "${m1:-}"), "sim_cpu_pct": pct("${s0:-}", "${s1:-}"),
    "master_rss_first_kib": "$rss_first", "master_rss_last_kib": "$rss_last",
    "master_rss_min_kib": "$rss_min", "master_rss_max_kib": "$rss_max", "master_rss_end_kib": "$rss_end_of_run",
    "rss_series_kib": "$series",
    "report_requests": "$requests", "sim_requests_sent": "$sent",
    "deltas_sent": sim.get("deltas_sent", ""), "delta_bytes_sent": sim.get("delta_bytes_sent", ""),
    "sim_attached": sim.get("attached", ""), "sim_flushed": sim.get("flushed", ""),
    "sim_reconnects": sim.get("reconnects", ""), "sim_refused": sim.get("refused", ""),
    "builder_cpu_s": sim.get("builder_cpu_s", ""), "sim_elapsed_s": sim.get("elapsed_s", ""),
    "master_rc": "$master_rc", "sim_rc": "$sim_rc", "loadavg": "$(loadavg)",
}
new = not os.path.exists(path)
with open(path, "a", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    if new:
        w.writeheader()
    w.writerow(row)
print(f"  {row['workers']:>5} workers: master {row['master_cpu_pct']} % CPU, sim {row['sim_cpu_pct']} %, "
      f"RSS {row['rss_series_kib']} KiB, report {row['report_requests']} / sent {row['sim_requests_sent']} requests",
      file=sys.stderr)
EOF
}

run_master() {
    local size
    rm -f "$RESULTS/master.csv"
    rm -rf "$RESULTS"/raw/master_*
    log "master: sizes $SIZES, -t ${DURATION}s, CPU window ${WINDOW} s"
    for size in ${SIZES//,/ }; do
        measure_master "$size"
    done
}

# ------------------------------------------------------------------------------------------------ worker

start_nginx() {
    local port conf i
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || die "nginx is not installed (apt-get install -y nginx)"
    PATH="$PATH:/usr/sbin"
    port="$(free_port)"
    mkdir -p "$TMP/nginx/logs"
    conf="$TMP/nginx/nginx.conf"
    cat >"$conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log crit;
worker_rlimit_nofile 20000;
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
    taskset -c 1 nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$conf" >"$TMP/nginx/stdout" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    URL="http://127.0.0.1:$port"
    for ((i = 0; i < 50; i++)); do
        curl -fs -o /dev/null "$URL/" && break
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx/stdout" "$TMP/nginx/error.log" 2>/dev/null)"
        sleep 0.1
    done
    curl -fs -o /dev/null "$URL/" || die "nginx did not answer on $URL"
    log "nginx (pid $NGINX_PID, CPU 1) serving $URL"
}

# Append one worker-suite row: mode $1, rep $2, prefix $3 (its .time and .json), rc $4, master's .time or "".
worker_row() {
    "$PY" - "$RESULTS/worker.csv" "$@" <<'EOF'
import csv, json, os, sys
path, mode, rep, prefix, rc, master_time = sys.argv[1:7]
def times(p):
    try:
        for line in open(p).read().splitlines()[::-1]:
            parts = line.split()
            if len(parts) == 4:
                return float(parts[0]), float(parts[1]), int(parts[2]), float(parts[3])
    except (OSError, ValueError):
        pass
    return None
row = {"mode": mode, "rep": rep, "rc": rc}
t = times(prefix + ".time")
try:
    stats = json.load(open(prefix + ".json"))["stats"]
    requests, failures, window = int(stats["total"]["num_requests"]), int(stats["total"]["num_failures"]), float(stats["duration"])
except (OSError, KeyError, ValueError):
    requests = failures = window = None
row["requests"] = requests if requests is not None else ""
row["failures"] = failures if failures is not None else ""
row["req_per_s"] = f"{requests / window:.0f}" if requests and window else ""
row["user_s"], row["sys_s"], row["peak_rss_kib"], row["wall_s"] = t if t else ("", "", "", "")
row["cpu_us_per_req"] = f"{(t[0] + t[1]) / requests * 1e6:.2f}" if t and requests else ""
m = times(master_time) if master_time else None
row["master_cpu_s"] = f"{m[0] + m[1]:.2f}" if m else ""
new = not os.path.exists(path)
with open(path, "a", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    if new:
        w.writeheader()
    w.writerow(row)
print(f"  {mode:<6} rep {rep}: {row['requests']} requests, {row['req_per_s']} req/s, "
      f"{row['cpu_us_per_req']} CPU us/request", file=sys.stderr)
EOF
}

run_local() {
    local prefix="$1" rc=0
    timeout -k 5 $((WORKER_DURATION + 60)) /usr/bin/time -o "$prefix.time" -f "%U %S %M %e" \
        taskset -c 0 "$TARGET_DIR/get_root" --headless --only-summary -H "$URL" -u 50 -r 1000 \
        -t "${WORKER_DURATION}s" --guard warn --report-json "$prefix.json" >"$prefix.stdout" 2>"$prefix.stderr" || rc=$?
    worker_row local "$2" "$prefix" "$rc" ""
}

run_as_worker() {
    local prefix="$1" port master rc=0
    port="$(free_port)"
    # --master-timeout 3s: the master of this commit ends its sessions right after its quit command, which then
    # does not reach the worker (it never did in our runs); the worker would wait its default 60 s for the master
    # (idle, no CPU) before exiting with code 3. Its users are stopped and its last delta sent before that, so
    # its CPU is the same.
    # The master runs no users; it shares CPU 1 with nginx so that CPU 0 is the worker's alone.
    /usr/bin/time -o "$prefix.master.time" -f "%U %S %M %e" taskset -c 1 "$TARGET_DIR/get_root" --master \
        --headless --only-summary -H "$URL" -u 50 -r 1000 -t "${WORKER_DURATION}s" --expect-workers 1 \
        --master-bind-port "$port" --report-json "$prefix.json" >"$prefix.master.stdout" 2>"$prefix.master.stderr" &
    master=$!
    PIDS+=("$master")
    wait_for_line "$master" 10 "master listening for workers" "$prefix.master.stderr" ||
        log "the master did not say it listens: $(tail -3 "$prefix.master.stderr")"
    timeout -k 5 $((WORKER_DURATION + 60)) /usr/bin/time -o "$prefix.time" -f "%U %S %M %e" \
        taskset -c 0 "$TARGET_DIR/get_root" --worker --master-port "$port" --guard warn --master-timeout 3s \
        >"$prefix.stdout" 2>"$prefix.stderr" || rc=$?
    wait_exit "$master" 30 || stop_pid "$master"
    worker_row worker "$2" "$prefix" "$rc" "$prefix.master.time"
}

run_worker() {
    local rep
    rm -f "$RESULTS/worker.csv"
    rm -rf "$RESULTS"/raw/worker_* "$RESULTS"/raw/local_*
    start_nginx
    log "worker overhead: get_root -u 50 flat out, ${WORKER_DURATION} s, local and as a worker, $REPS pair(s), A B A B"
    for ((rep = 1; rep <= REPS; rep++)); do
        run_local "$RESULTS/raw/local_rep$rep" "$rep"
        run_as_worker "$RESULTS/raw/worker_rep$rep" "$rep"
    done
    stop_pid "$NGINX_PID" TERM 5
}

# ------------------------------------------------------------------------------------------------ report

report() {
    "$PY" - "$RESULTS" "$COMMIT" <<'EOF'
import csv, os, statistics, sys
results, commit = sys.argv[1], sys.argv[2]
def rows(name):
    path = os.path.join(results, name)
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []
def mib(kib):
    return f"{int(kib) / 1024:.1f}" if kib else "–"
out = []
master = rows("master.csv")
if master:
    out += ["### Master with simulated workers", "",
            "| workers | master CPU % of one core | CPU µs per worker-second | master RSS MiB (window: first → last, min–max) | RSS at end MiB | simulator CPU % | report requests = sent | delta KiB |",
            "| ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |"]
    for r in master:
        if r["status"] != "ok":
            out.append(f"| {r['workers']} | {r['status']} | | | | | | |")
            continue
        cpu = float(r["master_cpu_pct"])
        per = f"{cpu / 100 / int(r['workers']) * 1e6:.0f}"
        match = "yes" if r["report_requests"] and r["report_requests"] == r["sim_requests_sent"] else \
            f"no ({r['report_requests']} vs {r['sim_requests_sent']})"
        rate = f"{int(r['delta_bytes_sent']) / int(r['deltas_sent']) / 1024:.1f}" if r["deltas_sent"] not in ("", "0") else ""
        out.append(f"| {int(r['workers']):,} | {cpu:.1f} | {per} | {mib(r['master_rss_first_kib'])} → {mib(r['master_rss_last_kib'])} "
                   f"({mib(r['master_rss_min_kib'])}–{mib(r['master_rss_max_kib'])}) | {mib(r['master_rss_end_kib'])} | "
                   f"{float(r['sim_cpu_pct']):.1f} | {match} | {rate} |")
    out.append("")
worker = rows("worker.csv")
if worker:
    def med(mode, key):
        values = [float(r[key]) for r in worker if r["mode"] == mode and r[key]]
        return (statistics.median(values), min(values), max(values), len(values)) if values else None
    ratios = []
    for rep in sorted({r["rep"] for r in worker}):
        pair = {r["mode"]: r for r in worker if r["rep"] == rep}
        if all(m in pair and pair[m]["cpu_us_per_req"] for m in ("local", "worker")):
            ratios.append(float(pair["worker"]["cpu_us_per_req"]) / float(pair["local"]["cpu_us_per_req"]))
    out += ["### Worker overhead", "",
            "| mode | req/s | CPU µs / request | generator user + sys s | peak RSS MiB | failures | runs |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in ("local", "worker"):
        rps, cpu = med(mode, "req_per_s"), med(mode, "cpu_us_per_req")
        us, sy, rss = med(mode, "user_s"), med(mode, "sys_s"), med(mode, "peak_rss_kib")
        fails = sum(int(r["failures"] or 0) for r in worker if r["mode"] == mode)
        if not cpu:
            out.append(f"| {mode} | – | – | – | – | – | 0 |")
            continue
        out.append(f"| {mode} | {rps[0]:,.0f} ({rps[1]:,.0f}–{rps[2]:,.0f}) | {cpu[0]:.2f} ({cpu[1]:.2f}–{cpu[2]:.2f}) | "
                   f"{us[0]:.2f} + {sy[0]:.2f} | {rss[0] / 1024:.1f} | {fails} | {cpu[3]} |")
    if ratios:
        out += ["", f"Worker / local CPU per request, per pair then median: **{statistics.median(ratios):.3f}×** "
                f"({min(ratios):.3f}–{max(ratios):.3f}, {len(ratios)} pairs). Bar: ≤ 1.05×."]
    out.append("")
out.append(f"_Built from `{commit}`; {os.cpu_count()} CPUs._")
print("\n".join(out))
EOF
}

wants master && run_master
wants worker && run_worker
echo
report | tee "$RESULTS/tables.md"
log "done in $SECONDS s; raw logs and CSV in $RESULTS"
