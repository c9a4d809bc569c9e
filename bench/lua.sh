#!/usr/bin/env bash
# bench/lua.sh: Lua tests against compiled ones, side by side in one run (issue #12).
#
#   bench/lua.sh [--duration SECS] [--users N] [--idle-users N] [--no-build]
#
# Builds the release `cicada` binary, the compiled quickstart and the cicada-bench programs, starts the demo target
# (`cicada demo`, one thread, pinned to CPU 1 when there are two), and measures with every generator pinned to CPU 0:
#   1. throughput: `GET /` without wait by 50 users, compiled (get_root) and Lua: CPU microseconds per request;
#   2. the same at a fixed rate (50 users, 100 requests/s each: paced_root and Lua), so both send as many requests;
#   3. the quickstart (examples/quickstart.rs and examples/lua/quickstart.lua) with --users users: CPU per request;
#   4. memory: --idle-users idle users (no request, constant(3600)), compiled and Lua: bytes per user from RSS.
# Prints a Markdown table; raw logs stay in a temporary folder it names. Every process it starts is stopped by pid.

set -euo pipefail
export LC_ALL=C

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
DURATION=10 USERS=2000 IDLE_USERS=100000 BUILD=1

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --duration) DURATION="${2:?}"; shift ;;
        --users) USERS="${2:?}"; shift ;;
        --idle-users) IDLE_USERS="${2:?}"; shift ;;
        --no-build) BUILD=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "lua.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for n in "$DURATION" "$USERS" "$IDLE_USERS"; do
    [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 ]] || { echo "lua.sh: numbers must be whole and >= 1" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "lua.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

TMP="$(mktemp -d /tmp/cicada-lua-bench.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PIN_GEN=() PIN_TARGET=()
if command -v taskset >/dev/null && (($(nproc) >= 2)); then
    PIN_GEN=(taskset -c 0) PIN_TARGET=(taskset -c 1)
fi

if ((BUILD)); then
    log "building (release)"
    (cd "$REPO" && CICADA_SKIP_WEB_BUILD=1 cargo build --release -q -p cicada-cli -p cicada-bench \
        -p cicada --example quickstart)
fi
CICADA="$TARGET_DIR/cicada"
for bin in "$CICADA" "$TARGET_DIR/get_root" "$TARGET_DIR/paced_root" "$TARGET_DIR/idle_users" \
    "$TARGET_DIR/examples/quickstart"; do
    [[ -x "$bin" ]] || { echo "lua.sh: $bin is missing (run without --no-build)" >&2; exit 2; }
done

"${PIN_TARGET[@]}" "$CICADA" demo --port 0 --threads 1 >"$TMP/demo.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q "listening on" "$TMP/demo.out" && break; sleep 0.1; done
URL="$(sed -n 's/.*listening on //p' "$TMP/demo.out" | head -1)"
[[ -n "$URL" ]] || { echo "lua.sh: the demo target did not start" >&2; cat "$TMP/demo.out" >&2; exit 1; }
log "demo target at $URL; logs in $TMP"

cat >"$TMP/get_root.lua" <<'EOF'
local GetRoot = cicada.user { name = "GetRoot" }
GetRoot:task(function(self) self.client:get("/") end)
EOF
cat >"$TMP/paced.lua" <<'EOF'
local PacedRoot = cicada.user { name = "PacedRoot", wait_time = cicada.constant_throughput(100) }
PacedRoot:task(function(self) self.client:get("/") end)
EOF
cat >"$TMP/idle.lua" <<'EOF'
local Idle = cicada.user { name = "Idle", wait_time = cicada.constant(3600) }
Idle:task(function(self) end)
EOF

# CPU microseconds per request of one run: "$name" then the command (reports go to $TMP/$name.json).
cpu_per_request() {
    local name="$1"; shift
    /usr/bin/time -o "$TMP/$name.time" -f "%U %S %M" "${PIN_GEN[@]}" "$@" --headless --only-summary -H "$URL" \
        -t "${DURATION}s" --report-json "$TMP/$name.json" >"$TMP/$name.log" 2>&1 || true
    python3 - "$TMP/$name.time" "$TMP/$name.json" <<'EOF'
import json, sys
user, system, rss = open(sys.argv[1]).read().split()[-3:]
report = json.load(open(sys.argv[2]))
requests = report["stats"]["total"]["num_requests"]
print(f"{(float(user) + float(system)) * 1e6 / max(requests, 1):.1f} {requests} {rss}")
EOF
}

# RSS in KiB once `all N users spawned` is logged: "$name" "$users" then the command.
idle_rss() {
    local name="$1" users="$2"; shift 2
    "${PIN_GEN[@]}" "$@" --headless --only-summary -H "$URL" -u "$users" -r 1000000 -t 600s --guard off \
        >"$TMP/$name.log" 2>&1 &
    local pid=$! rss=""
    PIDS+=($pid)
    for _ in $(seq 1200); do
        if grep -q "all $users users spawned" "$TMP/$name.log" 2>/dev/null; then
            sleep 2
            rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "${rss:-0}"
}

log "throughput: GET / by 50 users without wait, ${DURATION}s each"
read -r tp_rust tp_rust_n _ < <(cpu_per_request get_root_rust "$TARGET_DIR/get_root" -u 50 -r 1000)
read -r tp_lua tp_lua_n _ < <(cpu_per_request get_root_lua "$CICADA" -f "$TMP/get_root.lua" -u 50 -r 1000)
log "GET / at 100 requests/s by each of 50 users, ${DURATION}s each"
read -r pc_rust pc_rust_n _ < <(BENCH_RATE=100 cpu_per_request paced_rust "$TARGET_DIR/paced_root" -u 50 -r 1000)
read -r pc_lua pc_lua_n _ < <(cpu_per_request paced_lua "$CICADA" -f "$TMP/paced.lua" -u 50 -r 1000)
log "quickstart: $USERS users, ${DURATION}s each"
read -r qs_rust qs_rust_n _ < <(cpu_per_request quickstart_rust "$TARGET_DIR/examples/quickstart" -u "$USERS" \
    -r "$USERS")
read -r qs_lua qs_lua_n _ < <(cpu_per_request quickstart_lua "$CICADA" -f "$REPO/examples/lua/quickstart.lua" \
    -u "$USERS" -r "$USERS")
log "memory: 1 and $IDLE_USERS idle users"
rust_1="$(idle_rss idle_rust_1 1 "$TARGET_DIR/idle_users")"
rust_n="$(idle_rss idle_rust_n "$IDLE_USERS" "$TARGET_DIR/idle_users")"
lua_1="$(idle_rss idle_lua_1 1 "$CICADA" -f "$TMP/idle.lua")"
lua_n="$(idle_rss idle_lua_n "$IDLE_USERS" "$CICADA" -f "$TMP/idle.lua")"

python3 - "$tp_rust" "$tp_lua" "$tp_rust_n" "$tp_lua_n" "$pc_rust" "$pc_lua" "$pc_rust_n" "$pc_lua_n" \
    "$qs_rust" "$qs_lua" "$qs_rust_n" "$qs_lua_n" \
    "$rust_1" "$rust_n" "$lua_1" "$lua_n" "$IDLE_USERS" "$DURATION" "$USERS" <<'EOF'
import sys
a = sys.argv[1:]
tp_rust, tp_lua, tp_rust_n, tp_lua_n, pc_rust, pc_lua, pc_rust_n, pc_lua_n = a[:8]
qs_rust, qs_lua, qs_rust_n, qs_lua_n = a[8:12]
rust_1, rust_n, lua_1, lua_n, idle, duration, users = (int(x) if x.isdigit() else x for x in a[12:])
ratio = lambda x, y: f"{float(y) / float(x):.2f}x" if float(x) > 0 else "-"
per_user = lambda one, n: f"{(n - one) * 1024 / (idle - 1):.0f} B" if n and one else "did not finish"
print(f"| Measure ({duration}s runs, generator on one core) | compiled | Lua | Lua / compiled |")
print("| --- | --- | --- | --- |")
print(f"| CPU per request, GET / by 50 users without wait | {tp_rust} us ({tp_rust_n} req) | {tp_lua} us ({tp_lua_n} req) | {ratio(tp_rust, tp_lua)} |")
print(f"| CPU per request, GET / at 100/s by each of 50 users | {pc_rust} us ({pc_rust_n} req) | {pc_lua} us ({pc_lua_n} req) | {ratio(pc_rust, pc_lua)} |")
print(f"| CPU per request, the quickstart with {users} users | {qs_rust} us ({qs_rust_n} req) | {qs_lua} us ({qs_lua_n} req) | {ratio(qs_rust, qs_lua)} |")
print(f"| memory per idle user, {idle:,} users (RSS) | {per_user(rust_1, rust_n)} | {per_user(lua_1, lua_n)} | |")
print(f"| RSS with {idle:,} idle users | {rust_n / 1024:.0f} MiB | {lua_n / 1024:.0f} MiB | |")
EOF
