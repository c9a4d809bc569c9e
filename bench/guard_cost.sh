#!/usr/bin/env bash
# The resource guard's own cost: CPU of its thread (read from /proc/thread-self/stat by the guard itself and written
# into the JSON report's generator section) over a run, idle and under load, next to the whole process's CPU.
#
#   bench/guard_cost.sh              # 30 s per run
#   bench/guard_cost.sh --duration 10 --no-build
#
# Runs bench/cicada-bench's get_root (GET /, no wait) against the demo target started in-process on 127.0.0.1, so
# it needs nothing but cargo. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=30
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "guard_cost.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$BUILD" = 1 ] && cargo build --release -q -p cicada-bench
BIN=target/release/get_root
[ -x "$BIN" ] || { echo "guard_cost.sh: $BIN is missing (build without --no-build)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "| Run | Users | Requests | Process CPU (s) | Guard CPU (s) | Guard CPU, % of a core | Memory readings | Full samples |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for users in 0 50; do
    out="$TMP/run-$users.json"
    /usr/bin/time -f "%U %S" -o "$TMP/time-$users" timeout $((DURATION + 30)) \
        "$BIN" --headless --only-summary -u "$users" -r 1000 -t "${DURATION}s" --guard protect --max-cpu 100 \
        --report-json "$out" >/dev/null 2>"$TMP/err-$users" || true
    python3 - "$out" "$TMP/time-$users" "$users" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
g = report["generator"]
users = int(sys.argv[3])
label = "idle" if users == 0 else "flat out"
print(f"| {label} | {users} | {report['stats']['total']['num_requests']:,} | {user + system:.2f} | "
      f"{g['guard_cpu_seconds']:.2f} | {g['guard_cpu_percent']:.2f} | {g['memory_readings']:,} | {g['samples']} |")
PY
done
