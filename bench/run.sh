#!/usr/bin/env bash
# bench/run.sh: cicada against wrk, Goose and Locust on one machine (issue #3).
#
#   bench/run.sh [--quick] [--only throughput|memory|spawn|accuracy|paced|users|tls[,...]] [--duration SECS] [--reps N]
#                [--no-build]   (use the cicada-bench binaries already in target/release)
#
# Starts its own nginx (1 worker, pinned to CPU 1) on a free 127.0.0.1 port, pins every generator to CPU 0, runs
# the selected suites, writes CSV/JSON and raw logs to bench/results/, prints the Markdown tables and rewrites the
# block between the result markers in bench/README.md. Peers that cannot be installed or built get a
# "not installed" row. Every process it starts is stopped by pid on exit. See bench/README.md for the method.

set -euo pipefail
export LC_ALL=C

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
RESULTS="$BENCH/results"
PY="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
GOOSE_DIR="$BENCH/.goose-build"
VENV="$BENCH/.venv-locust"

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

QUICK=0 ONLY="throughput,memory,spawn,accuracy" DURATION="" REPS="" BUILD=1
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --no-build) BUILD=0 ;;
        --only) ONLY="${2:?--only needs a value}"; shift ;;
        --only=*) ONLY="${1#*=}" ;;
        --duration) DURATION="${2:?--duration needs a value}"; shift ;;
        --duration=*) DURATION="${1#*=}" ;;
        --reps) REPS="${2:?--reps needs a value}"; shift ;;
        --reps=*) REPS="${1#*=}" ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for suite in ${ONLY//,/ }; do
    case "$suite" in throughput | memory | spawn | accuracy | paced | users | tls) ;; *)
        echo "run.sh: --only takes throughput, memory, spawn, accuracy, paced, users or tls (comma-separated), not '$suite'" >&2
        exit 2 ;;
    esac
done
if ((QUICK)); then
    MODE=quick DURATION="${DURATION:-3}" REPS="${REPS:-1}" SPAWN_LIMIT=30
else
    MODE=full DURATION="${DURATION:-10}" REPS="${REPS:-3}" SPAWN_LIMIT=120
fi
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 ]] || { echo "run.sh: --duration must be a whole number >= 1" >&2; exit 2; }
[[ "$REPS" =~ ^[0-9]+$ && "$REPS" -ge 1 && "$REPS" -le 20 ]] || { echo "run.sh: --reps must be 1..20" >&2; exit 2; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# Memory sizes; the open-file cap (20,000 per process) keeps runs with connections at 10,000.
SIZES_NOCONN=(1 1000 10000 100000)
SIZES_CONN=(1 1000 10000)
MEM_CAP_KIB=$((8 * 1024 * 1024)) # skip a size whose estimated RSS exceeds 8 GiB

TMP="$(mktemp -d /tmp/cicada-bench.XXXXXX)"
PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

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

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid" TERM 3; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
sockets_of() { { ls -l "/proc/$1/fd" 2>/dev/null || true; } | grep -c 'socket:' || true; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
now() { echo "$EPOCHREALTIME"; }
elapsed_since() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }

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

# ------------------------------------------------------------------------------------------------ prerequisites

declare -A PEER=()

ensure_apt() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]} == 0)) && return 0
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        log "installing from Debian: ${missing[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
            >"$RESULTS/raw/apt.log" 2>&1 || log "apt-get failed (see results/raw/apt.log)"
    fi
}

# The commit the binaries are built from (others may commit while the suites run), with +dirty when crates/ or
# Cargo.lock differ from it.
COMMIT=unknown
source_commit() {
    COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git -C "$REPO" status --porcelain -- crates Cargo.lock 2>/dev/null || true)" ]]; then
        COMMIT+="+dirty"
    fi
}

build_cicada() {
    local packages=(-p cicada-bench) bin
    if ((!BUILD)); then
        for bin in get_root idle_users slow_page counted_demo paced_mix; do
            [[ -x "$TARGET_DIR/$bin" ]] || die "--no-build: $TARGET_DIR/$bin is missing (build once without it)"
        done
        PEER[cicada]="prebuilt"
        source_commit
        COMMIT="$COMMIT? (prebuilt binaries, --no-build)"
        log "using the prebuilt cicada-bench binaries in $TARGET_DIR (--no-build)"
        return 0
    fi
    log "building cicada (cargo build --release ${packages[*]})"
    source_commit
    (cd "$REPO" && cargo build --release "${packages[@]}") >"$RESULTS/raw/build-cicada.log" 2>&1 ||
        die "cargo build failed; see bench/results/raw/build-cicada.log"
    PEER[cicada]="built"
}

ensure_locust() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import locust' 2>/dev/null; then
        :
    else
        log "installing Locust into bench/.venv-locust (pip install locust)"
        if ! { "$PY" -m venv "$VENV" && timeout 900 "$VENV/bin/pip" install -q "locust>=2,<3"; } \
            >"$RESULTS/raw/pip-locust.log" 2>&1; then
            PEER[locust]="not installed (pip failed, see results/raw/pip-locust.log)"
            PEER[locust-fast]="${PEER[locust]}" PEER[locust-http]="${PEER[locust]}"
            return 0
        fi
    fi
    local version
    version="$("$VENV/bin/python" -c 'import locust; print(locust.__version__)' 2>/dev/null || echo '?')"
    PEER[locust]="Locust $version" PEER[locust-fast]="Locust $version" PEER[locust-http]="Locust $version"
    LOCUST="$VENV/bin/locust"
}

# Write $2 into file $1 only when it differs, so that cargo does not rebuild an unchanged crate.
write_if_changed() {
    if [[ ! -f "$1" ]] || [[ "$(cat "$1")" != "$2" ]]; then printf '%s\n' "$2" >"$1"; fi
}

ensure_goose() {
    mkdir -p "$GOOSE_DIR/src"
    write_if_changed "$GOOSE_DIR/Cargo.toml" '# Generated by cicada bench/run.sh: the Goose peer, built outside the cicada workspace.
[package]
name = "goose-bench"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
goose = { version = "0.19", default-features = false, features = ["rustls-tls"] }
tokio = { version = "1", features = ["full"] }

[profile.release]
debug = false'
    write_if_changed "$GOOSE_DIR/src/main.rs" '//! Goose peer for cicada'"'"'s bench/run.sh (generated; not part of the cicada workspace).
//! BENCH_MODE unset: one transaction GET / with no wait. BENCH_MODE=idle0: users wait an hour and never
//! request. BENCH_MODE=idle1: each user requests / once, then waits an hour.
use goose::prelude::*;
use std::time::Duration;

async fn get_root(user: &mut GooseUser) -> TransactionResult {
    let _ = user.get("/").await?;
    Ok(())
}

async fn nothing(_user: &mut GooseUser) -> TransactionResult {
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let mode = std::env::var("BENCH_MODE").unwrap_or_default();
    let scenario = match mode.as_str() {
        "idle0" => scenario!("Idle")
            .set_wait_time(Duration::from_secs(3600), Duration::from_secs(3600))?
            .register_transaction(transaction!(nothing)),
        "idle1" => scenario!("Idle")
            .set_wait_time(Duration::from_secs(3600), Duration::from_secs(3600))?
            .register_transaction(transaction!(get_root)),
        _ => scenario!("GetRoot").register_transaction(transaction!(get_root)),
    };
    GooseAttack::initialize()?
        .register_scenario(scenario)
        .execute()
        .await?;
    Ok(())
}'
    log "building the Goose peer in bench/.goose-build (cached after the first build)"
    if (cd "$GOOSE_DIR" && CARGO_TARGET_DIR="$GOOSE_DIR/target" timeout 1800 cargo build --release) \
        >"$RESULTS/raw/build-goose.log" 2>&1; then
        GOOSE="$GOOSE_DIR/target/release/goose-bench"
        local version
        version="$(grep -A1 '^name = "goose"$' "$GOOSE_DIR/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
        PEER[goose]="Goose ${version:-?}"
    else
        PEER[goose]="not installed (cargo build failed, see results/raw/build-goose.log)"
    fi
}

# ------------------------------------------------------------------------------------------------ nginx target

start_nginx() {
    local port tls_port conf i
    port="$(free_port)"
    tls_port="$(free_port)"
    mkdir -p "$TMP/nginx/logs"
    # A self-signed certificate for the TLS rows (the clients accept it: BENCH_INSECURE_TLS, Locust's default).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/nginx/key.pem" \
        -out "$TMP/nginx/cert.pem" -days 2 -subj "/CN=localhost" >/dev/null 2>&1 || die "openssl could not make a certificate"
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
    server {
        listen 127.0.0.1:$tls_port ssl http2 backlog=4096;
        # nginx before 1.23.4 (Debian 12 ships 1.22) leaves TLS 1.3 out of its default protocols.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $TMP/nginx/cert.pem;
        ssl_certificate_key $TMP/nginx/key.pem;
        location / { return 200 "ok\n"; }
    }
}
EOF
    taskset -c 1 nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$conf" >"$TMP/nginx/stdout" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    URL="http://127.0.0.1:$port"
    TLS_URL="https://127.0.0.1:$tls_port"
    for ((i = 0; i < 50; i++)); do
        curl -fs -o /dev/null "$URL/" && break
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx/stdout" "$TMP/nginx/error.log" 2>/dev/null)"
        sleep 0.1
    done
    curl -fs -o /dev/null "$URL/" || die "nginx did not answer on $URL"
    echo "$NGINX_PID" >"$RESULTS/raw/nginx.pid"
    log "nginx (pid $NGINX_PID, CPU 1) serving $URL"
}

stop_nginx() {
    [[ -n "${NGINX_PID:-}" ]] || return 0
    stop_pid "$NGINX_PID" TERM 5
    log "nginx (pid $NGINX_PID) stopped"
    NGINX_PID=""
}

# ------------------------------------------------------------------------------------------------ throughput

write_locustfiles() {
    cat >"$TMP/locust_http.py" <<'EOF'
from locust import HttpUser, task


class GetRoot(HttpUser):
    @task
    def root(self):
        self.client.get("/")
EOF
    cat >"$TMP/locust_fast.py" <<'EOF'
from locust import FastHttpUser, task


class GetRoot(FastHttpUser):
    @task
    def root(self):
        self.client.get("/")
EOF
    cat >"$TMP/locust_idle.py" <<'EOF'
import os
import sys

import gevent
from locust import HttpUser, constant, events, task

REQUEST = os.environ.get("BENCH_IDLE_REQUEST") == "1"


class Idle(HttpUser):
    wait_time = constant(3600)

    @task
    def once(self):
        if REQUEST:
            self.client.get("/")


@events.init.add_listener
def report_user_count(environment, **_kwargs):
    def loop():
        while True:
            gevent.sleep(1)
            if environment.runner is not None:
                print(f"BENCH users={environment.runner.user_count}", file=sys.stderr, flush=True)

    gevent.spawn(loop)
EOF
}

tp_command() {
    local gen="$1" prefix="$2"
    case "$gen" in
        # --guard warn: a generator driven flat out on one core is saturated by definition; the guard keeps measuring
        # (its cost is in the numbers) but must not shed the 50 users the comparison is about.
        cicada) CMD=(taskset -c 0 "$TARGET_DIR/get_root" --headless --only-summary -H "$URL" -u 50 -r 1000
            -t "${DURATION}s" --guard warn --report-json "$prefix.json") ;;
        wrk) CMD=(taskset -c 0 wrk -t1 -c50 "-d${DURATION}s" --latency "$URL/") ;;
        locust-http) CMD=(taskset -c 0 "$LOCUST" -f "$TMP/locust_http.py" --headless -H "$URL" -u 50 -r 50
            -t "${DURATION}s" --only-summary --json) ;;
        locust-fast) CMD=(taskset -c 0 "$LOCUST" -f "$TMP/locust_fast.py" --headless -H "$URL" -u 50 -r 50
            -t "${DURATION}s" --only-summary --json) ;;
        goose) CMD=(taskset -c 0 "$GOOSE" -H "$URL" -u 50 -r 50 -t "${DURATION}s" --no-reset-metrics --no-telnet
            --report-file "$prefix.goose.json" -q) ;;
    esac
}

run_throughput() {
    local raw="$RESULTS/raw/throughput" gens=() gen rep i n rc load prefix
    rm -rf "$raw" "$RESULTS/throughput.csv"
    mkdir -p "$raw"
    ensure_locust
    ensure_goose
    write_locustfiles
    gens=(cicada)
    if command -v wrk >/dev/null; then PEER[wrk]="$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $1, $2}')"; gens+=(wrk)
    else PEER[wrk]="not installed"; fi
    [[ -n "${GOOSE:-}" ]] && gens+=(goose)
    [[ -n "${LOCUST:-}" ]] && gens+=(locust-fast locust-http)
    log "throughput: ${gens[*]}, ${DURATION} s each, $REPS rep(s), interleaved"
    n=${#gens[@]}
    for ((rep = 1; rep <= REPS; rep++)); do
        for ((i = 0; i < n; i++)); do
            gen="${gens[$(((i + rep - 1) % n))]}" # rotate the order each repetition
            prefix="$raw/${gen}_rep${rep}"
            tp_command "$gen" "$prefix"
            load="$(loadavg)"
            rc=0
            timeout -k 5 $((DURATION + 90)) /usr/bin/time -o "$prefix.time" -f "%U %S %M %e" "${CMD[@]}" \
                >"$prefix.stdout" 2>"$prefix.stderr" || rc=$?
            "$PY" "$BENCH/bench.py" tp-row --gen "$gen" --rep "$rep" --raw "$prefix" --rc "$rc" \
                --loadavg "$load" --csv "$RESULTS/throughput.csv"
        done
    done
}

# ------------------------------------------------------------------------------------------------ paced, users

# Realistic pacing (issue #14): the quickstart's mix, 500 users waiting 0.5-1.5 s after each task (about 500 req/s),
# cicada against Locust FastHttpUser with the same mix and pacing, and cicada flat out (the saturated reference);
# cicada once more with the guard off, to show what the guard's own sampling costs at this rate.
PACED_USERS=500
paced_duration() { echo $((DURATION < 20 ? 20 : DURATION)); }

write_locust_paced() {
    cat >"$TMP/locust_paced.py" <<'EOF'
import random

from locust import FastHttpUser, between, task


class Visitor(FastHttpUser):
    wait_time = between(0.5, 1.5)

    @task
    def index(self):
        self.client.get("/")

    @task(3)
    def view_item(self):
        self.client.get(f"/items/{random.randint(1, 10000)}", name="/items/[id]")

    @task
    def slow_page(self):
        self.client.get("/slow?ms=50", name="/slow")
EOF
}

paced_command() {
    local gen="$1" prefix="$2" secs
    secs="$(paced_duration)"
    case "$gen" in
        cicada-paced) CMD=(taskset -c 0 "$TARGET_DIR/paced_mix" --headless --only-summary -H "$URL"
            -u "$PACED_USERS" -r 1000 -t "${secs}s" --report-json "$prefix.json") ;;
        cicada-paced-noguard) CMD=(taskset -c 0 "$TARGET_DIR/paced_mix" --headless --only-summary -H "$URL"
            -u "$PACED_USERS" -r 1000 -t "${secs}s" --guard off --report-json "$prefix.json") ;;
        cicada-saturated) CMD=(taskset -c 0 "$TARGET_DIR/get_root" --headless --only-summary -H "$URL" -u 50 -r 1000
            -t "${DURATION}s" --guard warn --report-json "$prefix.json") ;;
        floor-paced) CMD=(taskset -c 0 "$TMP/paced_floor" 127.0.0.1 "${URL##*:}" "$PACED_USERS" "$secs") ;;
        locust-fast-paced) CMD=(taskset -c 0 "$LOCUST" -f "$TMP/locust_paced.py" --headless -H "$URL"
            -u "$PACED_USERS" -r "$PACED_USERS" -t "${secs}s" --only-summary --json) ;;
    esac
}

# Users scaling (issue #14): get_root flat out with 50, 500 and 5,000 users (no wait); wrk -c50 as the reference.
users_command() {
    local gen="$1" prefix="$2"
    case "$gen" in
        cicada-u*) CMD=(taskset -c 0 "$TARGET_DIR/get_root" --headless --only-summary -H "$URL" -u "${gen#cicada-u}"
            -r 100000 -t "${DURATION}s" --guard warn --report-json "$prefix.json") ;;
        wrk-c50) CMD=(taskset -c 0 wrk -t1 -c50 "-d${DURATION}s" --latency "$URL/") ;;
    esac
}

# Run suite $1 (paced|users) with the generators that follow: interleaved, rotated each repetition, into $1.csv.
run_rows() {
    local suite="$1" raw gens n rep i gen prefix load rc secs
    shift
    gens=("$@")
    raw="$RESULTS/raw/$suite"
    rm -rf "$raw" "$RESULTS/$suite.csv"
    mkdir -p "$raw"
    n=${#gens[@]}
    log "$suite: ${gens[*]}, $REPS rep(s), interleaved"
    for ((rep = 1; rep <= REPS; rep++)); do
        for ((i = 0; i < n; i++)); do
            gen="${gens[$(((i + rep - 1) % n))]}"
            prefix="$raw/${gen}_rep${rep}"
            "${suite}_command" "$gen" "$prefix"
            load="$(loadavg)"
            secs="$(paced_duration)"
            rc=0
            timeout -k 5 $((secs + 90)) /usr/bin/time -o "$prefix.time" -f "%U %S %M %e" "${CMD[@]}" \
                >"$prefix.stdout" 2>"$prefix.stderr" || rc=$?
            "$PY" "$BENCH/bench.py" tp-row --gen "$gen" --rep "$rep" --raw "$prefix" --rc "$rc" \
                --loadavg "$load" --csv "$RESULTS/$suite.csv"
        done
    done
}

run_paced() {
    local gens=(cicada-paced cicada-paced-noguard cicada-saturated)
    # The kernel's floor at this pacing: a client with no user-space work to speak of (bench/paced_floor.c).
    if gcc -O2 -o "$TMP/paced_floor" "$BENCH/paced_floor.c" 2>"$RESULTS/raw/build-paced-floor.log"; then
        gens+=(floor-paced)
    else
        log "paced: gcc could not build bench/paced_floor.c (see results/raw/build-paced-floor.log); no floor row"
    fi
    ensure_locust
    write_locust_paced
    [[ -n "${LOCUST:-}" ]] && gens+=(locust-fast-paced)
    run_rows paced "${gens[@]}"
}

run_users() {
    local gens=(cicada-u50 cicada-u500 cicada-u5000)
    if command -v wrk >/dev/null; then
        PEER[wrk]="$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $1, $2}')"
        gens+=(wrk-c50)
    else
        PEER[wrk]="not installed"
    fi
    run_rows users "${gens[@]}"
}

# TLS and HTTP/2 (issue #14): get_root flat out over TLS 1.3 with HTTP/1.1 and with HTTP/2 (nginx's TLS listener,
# a self-signed certificate), Goose and Locust FastHttpUser over TLS; then the memory of an idle user holding a TLS
# connection, HTTP/1.1 and HTTP/2 (idle_users, 1,000 and 10,000 users, as in the memory suite).
tls_command() {
    local gen="$1" prefix="$2"
    case "$gen" in
        cicada-tls-h1) CMD=(env BENCH_INSECURE_TLS=1 BENCH_HTTP=1 taskset -c 0 "$TARGET_DIR/get_root" --headless
            --only-summary -H "$TLS_URL" -u 50 -r 1000 -t "${DURATION}s" --guard warn --report-json "$prefix.json") ;;
        cicada-tls-h2) CMD=(env BENCH_INSECURE_TLS=1 BENCH_HTTP=2 taskset -c 0 "$TARGET_DIR/get_root" --headless
            --only-summary -H "$TLS_URL" -u 50 -r 1000 -t "${DURATION}s" --guard warn --report-json "$prefix.json") ;;
        locust-fast-tls) CMD=(taskset -c 0 "$LOCUST" -f "$TMP/locust_fast.py" --headless -H "$TLS_URL" -u 50 -r 50
            -t "${DURATION}s" --only-summary --json) ;;
        # Goose's client (reqwest, rustls) offers HTTP/1.1 only; --accept-invalid-certs takes the self-signed certificate.
        goose-tls) CMD=(taskset -c 0 "$GOOSE" -H "$TLS_URL" -u 50 -r 50 -t "${DURATION}s" --no-reset-metrics
            --no-telnet --accept-invalid-certs --report-file "$prefix.goose.json" -q) ;;
    esac
}

run_tls() {
    local gens=(cicada-tls-h1 cicada-tls-h2) mode users base
    ensure_locust
    write_locustfiles
    [[ -n "${GOOSE:-}" ]] || ensure_goose
    [[ -n "${GOOSE:-}" ]] && gens+=(goose-tls)
    [[ -n "${LOCUST:-}" ]] && gens+=(locust-fast-tls)
    run_rows tls "${gens[@]}"
    rm -rf "$RESULTS/raw/memory-tls" "$RESULTS/memory-tls.csv"
    mkdir -p "$RESULTS/raw/memory-tls"
    for mode in tls-h1 tls-h2; do
        for users in "${SIZES_CONN[@]}"; do
            measure_idle_tls "$mode" "$users"
        done
    done
}

# One idle_users run over TLS ($1 = tls-h1|tls-h2) with $2 users, each holding one connection; VmRSS into
# memory-tls.csv once every user's connection is open and the RSS has settled.
measure_idle_tls() {
    local mode="$1" users="$2" prefix pid status=ok rc i prev cur rss http=1
    [[ "$mode" == tls-h2 ]] && http=2
    prefix="$RESULTS/raw/memory-tls/cicada_${mode}_${users}"
    env BENCH_IDLE_REQUEST=1 BENCH_INSECURE_TLS=1 "BENCH_HTTP=$http" taskset -c 0 "$TARGET_DIR/idle_users" \
        --headless --only-summary -H "$TLS_URL" -u "$users" -r 1000000 -t 1h >"$prefix.stdout" 2>"$prefix.stderr" &
    pid=$!
    PIDS+=("$pid")
    rc=0
    wait_for_line "$pid" "$SPAWN_LIMIT" "all $users users spawned" "$prefix.stderr" || rc=$?
    case "$rc" in 1) status=died ;; 2) status=timeout ;; esac
    if [[ "$status" == ok ]]; then
        status=timeout
        for ((i = 0; i < SPAWN_LIMIT * 10; i++)); do
            (($(sockets_of "$pid") >= users)) && { status=ok; break; }
            kill -0 "$pid" 2>/dev/null || { status=died; break; }
            sleep 0.1
        done
        prev="$(rss_kib "$pid")"
        for ((i = 0; i < 20; i++)); do
            sleep 0.5
            cur="$(rss_kib "$pid")"
            [[ -n "$cur" && -n "$prev" ]] || break
            if ((cur - prev < prev / 200 && prev - cur < prev / 200)); then break; fi
            prev="$cur"
        done
    fi
    rss="$(rss_kib "$pid")"
    stop_pid "$pid" TERM 3
    "$PY" "$BENCH/bench.py" append "$RESULTS/memory-tls.csv" generator=cicada mode="$mode" users="$users" \
        status="$status" rss_kib="${rss:-}"
    printf '  cicada  %-6s %7s users: %-7s VmRSS %9s KiB\n' "$mode" "$users" "$status" "${rss:-?}"
}

# ------------------------------------------------------------------------------------------------ memory

# Start generator $1 with $3 idle users, $2 = noconn|conn; read VmRSS once they are all running; stop it.
measure_idle() {
    local gen="$1" mode="$2" users="$3" req=0 prefix pid pattern stream status=ok rc start spawn_s="" rss
    local reached="" sockets remaining i prev cur
    [[ "$mode" == conn ]] && req=1
    prefix="$RESULTS/raw/memory/${gen}_${mode}_${users}"
    case "$gen" in
        cicada)
            CMD=(env "BENCH_IDLE_REQUEST=$req" taskset -c 0 "$TARGET_DIR/idle_users" --headless --only-summary
                -H "$URL" -u "$users" -r 1000000 -t 1h)
            pattern="all $users users spawned" stream=stderr ;;
        locust)
            CMD=(env "BENCH_IDLE_REQUEST=$req" taskset -c 0 "$LOCUST" -f "$TMP/locust_idle.py" --headless -H "$URL"
                -u "$users" -r "$users" -t 1h --only-summary)
            pattern="All users spawned" stream=stderr ;;
        goose)
            CMD=(env "BENCH_MODE=idle$req" taskset -c 0 "$GOOSE" -H "$URL" -u "$users" -r 1000000 -t 1h --no-telnet
                --no-reset-metrics)
            pattern="entering GooseAttack phase: Maintain" stream=stdout ;;
    esac
    start="$(now)"
    "${CMD[@]}" >"$prefix.stdout" 2>"$prefix.stderr" &
    pid=$!
    PIDS+=("$pid")
    rc=0
    wait_for_line "$pid" "$SPAWN_LIMIT" "$pattern" "$prefix.$stream" || rc=$?
    case "$rc" in 1) status=died ;; 2) status=timeout ;; esac
    if [[ "$status" == ok && "$mode" == conn ]]; then
        # every user holds its one connection once N sockets are open
        remaining="$("$PY" -c "import sys; print(max(1, int($SPAWN_LIMIT - (float(sys.argv[2]) - float(sys.argv[1])))))" "$start" "$(now)")"
        status=timeout
        for ((i = 0; i < remaining * 10; i++)); do
            (($(sockets_of "$pid") >= users)) && { status=ok; break; }
            kill -0 "$pid" 2>/dev/null || { status=died; break; }
            sleep 0.1
        done
    fi
    spawn_s="$(elapsed_since "$start")"
    if [[ "$status" != died ]]; then
        # let the RSS settle: two readings 0.5 s apart within 0.5 % (at most 10 s)
        prev="$(rss_kib "$pid")"
        for ((i = 0; i < 20; i++)); do
            sleep 0.5
            cur="$(rss_kib "$pid")"
            [[ -n "$cur" && -n "$prev" ]] || break
            if ((cur - prev < prev / 200 && prev - cur < prev / 200)); then break; fi
            prev="$cur"
        done
    fi
    rss="$(rss_kib "$pid")"
    if [[ "$status" == timeout ]]; then
        case "$gen" in
            locust) reached="$(grep -o 'BENCH users=[0-9]*' "$prefix.stderr" | tail -1 | cut -d= -f2 || true)" ;;
            goose) reached="$(grep -c 'launching user from' "$prefix.stdout" || true)" ;;
            cicada) reached="" ;;
        esac
    fi
    sockets="$(sockets_of "$pid")"
    stop_pid "$pid" TERM 3
    "$PY" "$BENCH/bench.py" append "$RESULTS/memory.csv" generator="$gen" mode="$mode" users="$users" \
        status="$status" rss_kib="${rss:-}" spawn_s="$spawn_s" reached="${reached:-}" sockets="$sockets"
    printf '  %-7s %-6s %7s users: %-7s VmRSS %9s KiB after %6s s, %s sockets%s\n' "$gen" "$mode" "$users" \
        "$status" "${rss:-?}" "$spawn_s" "$sockets" "${reached:+ (reached $reached users)}"
    LAST_RSS="${rss:-}" LAST_STATUS="$status"
}

run_memory() {
    local gens=(cicada) gen mode users sizes base per_user est
    rm -rf "$RESULTS/raw/memory" "$RESULTS/memory.csv"
    mkdir -p "$RESULTS/raw/memory"
    [[ -n "${LOCUST:-}" ]] || ensure_locust
    [[ -n "${GOOSE:-}" ]] || ensure_goose
    write_locustfiles
    [[ -n "${LOCUST:-}" ]] && gens+=(locust)
    [[ -n "${GOOSE:-}" ]] && gens+=(goose)
    log "memory per idle user: ${gens[*]} (spawn limit ${SPAWN_LIMIT} s per size)"
    for gen in "${gens[@]}"; do
        for mode in noconn conn; do
            if [[ "$mode" == conn ]]; then sizes=("${SIZES_CONN[@]}"); else sizes=("${SIZES_NOCONN[@]}"); fi
            base="" per_user=""
            for users in "${sizes[@]}"; do
                if [[ -n "$per_user" ]] && ((users > 10000)); then
                    est=$((base + per_user * users))
                    if ((est > MEM_CAP_KIB)); then
                        "$PY" "$BENCH/bench.py" append "$RESULTS/memory.csv" generator="$gen" mode="$mode" \
                            users="$users" status="skipped (est. $(((est + 524288) / 1048576)) GiB)" rss_kib= spawn_s= reached= sockets=
                        printf '  %-7s %-6s %7s users: skipped (estimated %s GiB)\n' "$gen" "$mode" "$users" \
                            "$(((est + 524288) / 1048576))"
                        continue
                    fi
                fi
                measure_idle "$gen" "$mode" "$users"
                if [[ "$users" == 1 && "$LAST_STATUS" == ok ]]; then base="$LAST_RSS"; fi
                if [[ -n "$base" && "$LAST_STATUS" == ok && "$users" -gt 1 ]]; then
                    per_user=$(((LAST_RSS - base) / users + 1))
                fi
                # a size that timed out makes the larger ones pointless
                [[ "$LAST_STATUS" == ok ]] || break
            done
        done
    done
}

# ------------------------------------------------------------------------------------------------ spawn

run_spawn() {
    local raw="$RESULTS/raw/spawn" users=100000 rep prefix start pid rc status rss
    rm -rf "$raw" "$RESULTS/spawn.csv"
    mkdir -p "$raw"
    log "spawn: $users idle cicada users at -r 1000000, $REPS rep(s)"
    for ((rep = 1; rep <= REPS; rep++)); do
        prefix="$raw/cicada_rep${rep}"
        start="$(now)"
        BENCH_IDLE_REQUEST=0 taskset -c 0 "$TARGET_DIR/idle_users" --headless --only-summary -H "$URL" \
            -u "$users" -r 1000000 -t 1h >"$prefix.stdout" 2>"$prefix.stderr" &
        pid=$!
        PIDS+=("$pid")
        rc=0
        wait_for_line "$pid" 60 "all $users users spawned" "$prefix.stderr" || rc=$?
        case "$rc" in 0) status=ok ;; 1) status=died ;; *) status=timeout ;; esac
        rss="$(rss_kib "$pid")"
        stop_pid "$pid" TERM 3
        "$PY" "$BENCH/bench.py" spawn-row --rep "$rep" --users "$users" --log "$prefix.stderr" --start "$start" \
            --rss "${rss:-}" --status "$status" --csv "$RESULTS/spawn.csv"
    done
}

# ------------------------------------------------------------------------------------------------ accuracy

run_accuracy() {
    local raw="$RESULTS/raw/accuracy" target pid port rc out prefix rep snapshots mine
    rm -rf "$raw" "$RESULTS/accuracy.csv"
    mkdir -p "$raw"
    log "accuracy: slow_page (20 users, GET /slow?ms=50, ${DURATION} s, -s 5) then wrk -c20, $REPS rep(s)," \
        "against the demo target and delay_server.py"
    for target in demo python; do
        out="$raw/$target"
        if [[ "$target" == demo ]]; then
            taskset -c 1 "$TARGET_DIR/counted_demo" --port 0 >"$out.server" 2>&1 &
        else
            taskset -c 1 "$PY" "$BENCH/delay_server.py" --port 0 --delay-ms 50 >"$out.server" 2>&1 &
        fi
        pid=$!
        PIDS+=("$pid")
        rc=0
        wait_for_line "$pid" 10 "listening on http://127.0.0.1:[0-9]+" "$out.server" || rc=$?
        if ((rc != 0)); then
            log "the $target target did not start: $(head -5 "$out.server")"
            stop_pid "$pid"
            "$PY" "$BENCH/bench.py" append "$RESULTS/accuracy.csv" target="$target" rep=1 \
                status="target did not start"
            continue
        fi
        port="$(grep -oE 'listening on http://127.0.0.1:[0-9]+' "$out.server" | head -1 | grep -oE '[0-9]+$')"
        snapshots=0
        for ((rep = 1; rep <= REPS; rep++)); do
            prefix="$out.rep$rep"
            rc=0
            timeout -k 5 $((DURATION + 60)) taskset -c 0 "$TARGET_DIR/slow_page" --headless --only-summary \
                -H "http://127.0.0.1:$port" -u 20 -r 1000 -t "${DURATION}s" -s 5 --report-json "$prefix.cicada.json" \
                >"$prefix.cicada.stdout" 2>"$prefix.cicada.stderr" || rc=$?
            # the server prints the count of cicada's run and starts counting afresh (after a pause longer than
            # one delay, so that a request the client abandoned would still be counted in its own window)
            sleep 0.5
            kill -USR1 "$pid" 2>/dev/null || true
            snapshots=$((snapshots + 1))
            mine=$snapshots
            wait_for_json_lines "$out.server" "$snapshots"
            if command -v wrk >/dev/null; then
                timeout -k 5 $((DURATION + 30)) taskset -c 0 wrk -t1 -c20 "-d${DURATION}s" --latency \
                    "http://127.0.0.1:$port/slow?ms=50" >"$prefix.wrk" 2>&1 || true
                sleep 0.5 # wrk exits with requests in flight: let the server finish them inside wrk's window
                kill -USR1 "$pid" 2>/dev/null || true
                snapshots=$((snapshots + 1))
                wait_for_json_lines "$out.server" "$snapshots"
            fi
            "$PY" "$BENCH/bench.py" acc-row --target "$target" --rep "$rep" --cicada-json "$prefix.cicada.json" \
                --server-out "$out.server" --snapshot "$mine" \
                --wrk-out "$prefix.wrk" --nominal-ms 50 --csv "$RESULTS/accuracy.csv"
        done
        stop_pid "$pid" TERM 5
    done
}

# Wait (at most 5 s) until file $1 holds $2 JSON lines (the servers' count snapshots).
wait_for_json_lines() {
    local i
    for ((i = 0; i < 50; i++)); do
        (($(grep -c '^{' "$1" || true) >= $2)) && return 0
        sleep 0.1
    done
}

# ------------------------------------------------------------------------------------------------ main

mkdir -p "$RESULTS/raw"
command -v cargo >/dev/null || die "cargo is not on PATH"
log "cicada bench: $MODE mode, suites $ONLY, ${DURATION} s runs, $REPS rep(s); $(nproc) CPUs," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r), load $(loadavg)"
ensure_apt
build_cicada
if wants throughput || wants memory || wants spawn || wants paced || wants users || wants tls; then
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || die "nginx is not installed (apt-get install -y nginx)"
    PATH="$PATH:/usr/sbin"
    start_nginx
fi

for suite in throughput memory spawn accuracy paced users tls; do
    wants "$suite" || continue
    suite_start=$SECONDS
    "run_$suite"
    peer_args=()
    for name in "${!PEER[@]}"; do peer_args+=(--peer "$name=${PEER[$name]}"); done
    "$PY" "$BENCH/bench.py" meta --suite "$suite" --mode "$MODE" --duration "$DURATION" --reps "$REPS" \
        --commit "$COMMIT" --seconds "$((SECONDS - suite_start))" "${peer_args[@]}" --out "$RESULTS/$suite.meta.json"
done
stop_nginx

echo
"$PY" "$BENCH/bench.py" report --results "$RESULTS" --readme "$BENCH/README.md"
log "done in $SECONDS s; raw logs and CSV in bench/results/, tables written to bench/README.md"
