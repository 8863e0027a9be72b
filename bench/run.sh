#!/usr/bin/env bash
# Load benchmark for siesta: every figure printed comes from this one run.
#
#   bash bench/run.sh                      # defaults: 32 connections, 10 s per case
#   DURATION=30s CONNS=64 bash bench/run.sh
#
# The server is pinned to CPU 0 and wrk to CPU 1, against a fresh SQLite
# database in a temporary directory that is removed on exit.
set -euo pipefail

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
WARMUP="${WARMUP:-2s}"
AGENTS=100
SERVER_CPU=0
WRK_CPU=1

cd "$(dirname "$0")/.."
REPO="$(pwd)"
BIN="$REPO/target/release/siesta"

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    say "bench: installing wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk taskset curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed"
done
NPROC="$(nproc)"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock migrations 2>/dev/null || true)" ]]; then
    REV="$REV + uncommitted changes"
fi
# taskset needs both CPUs to exist (and to be allowed for this process).
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU"
taskset -c "$WRK_CPU" true 2>/dev/null || die "cannot pin to CPU $WRK_CPU (need at least 2 CPUs; nproc=$NPROC)"

# --- build -------------------------------------------------------------------
say "bench: cargo build --release --locked"
cargo build --release --locked
[[ -x "$BIN" ]] || die "$BIN was not built"

# --- fresh environment ---------------------------------------------------------
# Inherited SIESTA_* settings (another database, other limits) or RUST_LOG
# would change what is measured: drop them, then set only what the run needs.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(SIESTA_|RUST_LOG$)' || true)

TMP="$(mktemp -d -t siesta-bench.XXXXXX)"
SERVER_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    cd / && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$TMP"

# --- server ------------------------------------------------------------------
# taskset execs the server, so $! is the server's own pid.
SIESTA_AUTH_FAILURE_LIMIT=1000000000 \
    taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:0 >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!

BASE=""
for _ in $(seq 100); do   # up to 10 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        say "bench: the server exited during start-up; its log:"
        tail -n 20 "$TMP/server.log" >&2 || true
        die "server did not start"
    fi
    first_line="$(head -n 1 "$TMP/server.out" 2>/dev/null || true)"
    if [[ "$first_line" =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]] \
        && grep -q '^  X-Api-Key: ' "$TMP/server.out"; then
        BASE="${BASH_REMATCH[1]}"
        break
    fi
    sleep 0.1
done
[[ -n "$BASE" ]] || die "no 'listening on' line and first-start block within 10 s"

ORG="$(sed -n 's/^  X-Org-Id:  \([0-9a-fA-F-]\{36\}\)$/\1/p' "$TMP/server.out" | head -n 1)"
[[ -n "$ORG" ]] || die "no X-Org-Id in the first-start block"
# The bootstrap key (600 requests/min) is not used: drop it from disk now.
: >"$TMP/server.out"

# --- a key without a practical rate limit --------------------------------------
KEY="$("$BIN" keys create --org "$ORG" --user admin@localhost --name bench-local-load \
        --scope write --rate-limit 1000000000/min --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')" \
    || die "siesta keys create failed"
[[ -n "$KEY" ]] || die "siesta keys create printed no key"
GARBAGE="sai_live_$(printf 'A%.0s' $(seq 46))"   # well-formed, fails the checksum

# curl reads the credentials from files so they are not on its command line.
printf 'X-Api-Key: %s\nX-Org-Id: %s\n' "$KEY" "$ORG" >"$TMP/valid.h"
printf 'X-Api-Key: %s\nX-Org-Id: %s\n' "$GARBAGE" "$ORG" >"$TMP/garbage.h"
chmod 600 "$TMP/valid.h" "$TMP/garbage.h"

status() { # status HEADER_FILE METHOD URL [BODY]
    local args=(-sS -o /dev/null -w '%{http_code}' -H "@$1" -X "$2" "$3")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    curl "${args[@]}" || true
}

# The server notices the new key by itself; allow it a moment.
code=""
for _ in $(seq 50); do
    code="$(status "$TMP/valid.h" GET "$BASE/api/v1/Me")"
    [[ "$code" == 200 ]] && break
    sleep 0.1
done
[[ "$code" == 200 ]] || die "GET /api/v1/Me with the new key answered $code, not 200"

say "bench: creating $AGENTS agents"
for i in $(seq "$AGENTS"); do
    code="$(status "$TMP/valid.h" POST "$BASE/api/v1/Agent" \
        "{\"name\":\"agent-$i\",\"description\":\"bench\",\"instructions\":\"be brief\"}")"
    [[ "$code" == 201 ]] || die "POST /api/v1/Agent (agent-$i) answered $code, not 201"
done

# One request per case before loading it, so a wrong status shows up here.
for check in "200 - /healthz" "200 valid /api/v1/Me" "401 garbage /api/v1/Me" "200 valid /api/v1/Agent?Limit=10"; do
    read -r want hdr path <<<"$check"
    if [[ "$hdr" == - ]]; then
        code="$(curl -sS -o /dev/null -w '%{http_code}' "$BASE$path" || true)"
    else
        code="$(status "$TMP/$hdr.h" GET "$BASE$path")"
    fi
    [[ "$code" == "$want" ]] || die "GET $path ($hdr) answered $code, expected $want"
done

# --- load ----------------------------------------------------------------------
RESULTS="$TMP/results.tsv"
: >"$RESULTS"

# Busy share of the two pinned CPUs over one second while the bench itself is
# idle: anything else running (a compiler, tests) skews the figures.
cpu_busy() {
    python3 - "$SERVER_CPU" "$WRK_CPU" <<'PY'
import sys, time
cpus = ["cpu" + c for c in sys.argv[1:]]
def sample():
    out = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in cpus:
            v = list(map(int, f[1:9]))
            out[f[0]] = (sum(v), v[3] + v[4])   # total, idle + iowait
    return out
a = sample(); time.sleep(1); b = sample()
print(", ".join(f"{c} {100 * (1 - (b[c][1] - a[c][1]) / max(1, b[c][0] - a[c][0])):.0f}%" for c in cpus))
PY
}
BUSY_BEFORE="$(cpu_busy)"

load() { # load NAME KEY_OR_EMPTY URL
    local name="$1" key="$2" url="$3" out="$TMP/wrk-$(($(wc -l <"$RESULTS") + 1)).txt"
    local headers=()
    [[ -n "$key" ]] && headers=(-H "X-Api-Key: $key" -H "X-Org-Id: $ORG")
    say "bench: $name: warm-up $WARMUP, then $DURATION"
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" ${headers[@]+"${headers[@]}"} "$url" >/dev/null
    taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency ${headers[@]+"${headers[@]}"} "$url" >"$out"
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during '$name'"
    python3 - "$name" "$out" >>"$RESULTS" <<'PY'
import re, sys
name, path = sys.argv[1], sys.argv[2]
text = open(path).read()
def grab(pattern, default="-"):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else default
rps = grab(r"^Requests/sec:\s+([\d.]+)")
p99 = grab(r"^\s+99%\s+(\S+)")
total = grab(r"^\s*(\d+) requests in ")
non2xx = grab(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", "0")
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in sock.groups()) if sock else 0
if rps == "-":
    sys.exit(f"bench: no Requests/sec in wrk output for {name}:\n{text}")
print("\t".join([name, rps, p99, total, non2xx, str(errors)]))
PY
}

load "GET /healthz" "" "$BASE/healthz"
load "GET /api/v1/Me (valid key)" "$KEY" "$BASE/api/v1/Me"
load "GET /api/v1/Me (garbage key, 401)" "$GARBAGE" "$BASE/api/v1/Me"
load "GET /api/v1/Agent?Limit=10 (valid key)" "$KEY" "$BASE/api/v1/Agent?Limit=10"

# --- report --------------------------------------------------------------------
BUSY_AFTER="$(cpu_busy)"
ERRORS="$(grep -c -E '(^| )ERROR ' "$TMP/server.log" || true)"
WARNS="$(grep -c -E '(^| )WARN ' "$TMP/server.log" || true)"
PANICS="$(grep -c 'panicked' "$TMP/server.log" || true)"
LOG_BYTES="$(wc -c <"$TMP/server.log")"

python3 - "$RESULTS" <<PY
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
expect_all_non2xx = {2}   # the garbage-key case answers 401 by design

print()
print("siesta load benchmark")
print(f"  source:   $REV")
print(f"  machine:  nproc=$NPROC, server pinned to CPU $SERVER_CPU, wrk pinned to CPU $WRK_CPU")
print(f"  wrk:      taskset -c $WRK_CPU wrk -t1 -c$CONNS -d$DURATION --latency"
      f" -H 'X-Api-Key: <key>' -H 'X-Org-Id: <org>' URL  (after a $WARMUP warm-up per case)")
print(f"  server:   SIESTA_AUTH_FAILURE_LIMIT=1000000000 taskset -c $SERVER_CPU siesta serve"
      f" --listen 127.0.0.1:0  (fresh SQLite, $AGENTS agents, default info logging to a file)")
print(f"  idle CPU busy (other processes): before $BUSY_BEFORE; after $BUSY_AFTER")
print(f"  load key: scope write, rate limit 1000000000/min")
print()
w = max(len(r[0]) for r in rows)
head = f"  {'case':<{w}}  {'requests/s':>12}  {'p99':>9}  {'requests':>9}  {'non-2xx/3xx':>11}  {'socket err':>10}"
print(head)
print("  " + "-" * (len(head) - 2))
warnings = []
for i, (name, rps, p99, total, non2xx, errs) in enumerate(rows):
    print(f"  {name:<{w}}  {float(rps):>12,.2f}  {p99:>9}  {total:>9}  {non2xx:>11}  {errs:>10}")
    if i in expect_all_non2xx:
        if total != "-" and int(non2xx) != int(total):
            warnings.append(f"{name}: {int(total) - int(non2xx)} responses were 2xx/3xx, expected all 401")
    elif int(non2xx):
        warnings.append(f"{name}: {non2xx} non-2xx/3xx responses")
    if int(errs):
        warnings.append(f"{name}: {errs} socket errors")
print()
health = float(rows[0][1])
print(f"  authenticated /Me ÷ /healthz:        {float(rows[1][1]) / health:.2f}")
print(f"  /Agent?Limit=10 ÷ /healthz:          {float(rows[3][1]) / health:.2f}")
print(f"  garbage-key /Me ÷ /healthz:          {float(rows[2][1]) / health:.2f}")
print()
print(f"  server log: $ERRORS ERROR, $WARNS WARN, $PANICS panic lines; {int('$LOG_BYTES') / 1e6:.1f} MB")
import re
if any(int(x) > 10 for x in re.findall(r"(\d+)%", "$BUSY_BEFORE $BUSY_AFTER")):
    warnings.append("other processes were using the pinned CPUs; the figures are not reliable")
for w_ in warnings:
    print(f"  WARNING: {w_}")
PY

if [[ "$ERRORS" != 0 || "$WARNS" != 0 || "$PANICS" != 0 ]]; then
    say ""
    say "bench: first ERROR/WARN/panic lines of the server log:"
    grep -m 10 -E '(^| )(ERROR|WARN) |panicked' "$TMP/server.log" >&2 || true
fi
