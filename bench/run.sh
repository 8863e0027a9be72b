#!/usr/bin/env bash
# Load benchmark for siesta: every figure printed comes from this one run.
#
#   bash bench/run.sh                      # defaults: 32 connections, 10 s per case
#   DURATION=30s CONNS=64 bash bench/run.sh
#   bash bench/run.sh --scale-out          # SQLite against PostgreSQL + Redis, revocation lag
#
# The server is pinned to CPU 0 and wrk to CPU 1, against a fresh SQLite
# database in a temporary directory that is removed on exit.
#
# --scale-out measures, in one run:
#   1. GET /api/v1/Agent?Limit=10 (100 agents) on SQLite, set up as in the default mode;
#   2. the same on one replica using a throwaway PostgreSQL and Redis that the script
#      starts (installed with apt if missing), the replica pinned to CPU 0 as before:
#      first with PostgreSQL and Redis pinned to CPU 1 (with wrk; the replica has CPU 0
#      to itself, as the SQLite server has), the headline, then with them unpinned (free
#      to share CPU 0 too); it prints the ratios PostgreSQL + Redis ÷ SQLite and the goal;
#   3. the revocation lag between two replicas of that PostgreSQL and Redis, over TRIALS
#      (default 30) trials of bench/revocation_lag.py: median and maximum.
# Servers, the PostgreSQL cluster, Redis and the temporary directories go on exit.
set -euo pipefail

MODE=default
for arg in "$@"; do
    case "$arg" in
        --scale-out) MODE=scale-out ;;
        -h|--help) sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) printf 'bench: unknown argument %s (try --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
WARMUP="${WARMUP:-2s}"
AGENTS=100
SERVER_CPU=0
WRK_CPU=1
TRIALS="${TRIALS:-30}"         # --scale-out: revocation-lag trials
GOAL=0.40                      # --scale-out: PostgreSQL + Redis ÷ SQLite, /Agent?Limit=10

cd "$(dirname "$0")/.."
REPO="$(pwd)"
BIN="$REPO/target/release/siesta"

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# --- tools -------------------------------------------------------------------
APT_UPDATED=""
apt_install() {
    [[ "$EUID" -eq 0 ]] || die "$* must be installed (apt-get install $*), which needs root"
    if [[ -z "$APT_UPDATED" ]]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v wrk >/dev/null 2>&1; then
    say "bench: installing wrk"
    apt_install wrk
fi
for tool in wrk taskset curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed"
done
PG_BIN=""
if [[ "$MODE" == scale-out ]]; then
    pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }
    PG_BIN="$(pg_bin)"
    if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
        say "bench: installing postgresql"
        apt_install postgresql
        PG_BIN="$(pg_bin)"
    fi
    for tool in initdb pg_ctl createdb postgres; do
        [[ -x "$PG_BIN/$tool" ]] || die "PostgreSQL's $tool not found under /usr/lib/postgresql/*/bin"
    done
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        say "bench: installing redis-server"
        apt_install redis-server
    fi
    for tool in redis-server redis-cli; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed"
    done
    if [[ "$EUID" -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run PostgreSQL as"
        command -v runuser >/dev/null 2>&1 || die "runuser is required to start PostgreSQL as root"
    fi
    PG_VERSION="$("$PG_BIN/postgres" --version | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/PostgreSQL \1/p')"
    REDIS_VERSION="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/Redis \1/p')"
fi
NPROC="$(nproc)"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock migrations 2>/dev/null || true)" ]]; then
    REV="$REV + uncommitted changes"
fi
# taskset needs both CPUs to exist (and to be allowed for this process).
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU"
taskset -c "$WRK_CPU" true 2>/dev/null || die "cannot pin to CPU $WRK_CPU (need at least 2 CPUs; nproc=$NPROC)"
# Every CPU this process may use: "unpinned" for PostgreSQL and Redis.
ALL_CPUS="$(taskset -c -p $$ | sed 's/.*: *//')"

# --- build -------------------------------------------------------------------
say "bench: cargo build --release --locked"
cargo build --release --locked
[[ -x "$BIN" ]] || die "$BIN was not built"

# --- fresh environment ---------------------------------------------------------
# Inherited SIESTA_* settings (another database, other limits) or RUST_LOG
# would change what is measured: drop them, then set only what the run needs.
# PG* settings would send PostgreSQL's client tools elsewhere: drop them too.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(SIESTA_|RUST_LOG$|PG)' || true)

TMP="$(mktemp -d -t siesta-bench.XXXXXX)"
PG_DIR=""          # the PostgreSQL cluster's directory, owned by its user
PG_STARTED=""
REDIS_PORT=""
SERVER_PIDS=()

as_pg() { # runs a PostgreSQL server tool as the postgres user when root (from /: that
    # user may not enter the bench's own temporary directory)
    if [[ "$EUID" -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
stop_pid() { # stop_pid PID: SIGTERM, up to 5 s for an orderly stop, then SIGKILL
    local pid="$1"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    local pid
    for pid in ${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}; do stop_pid "$pid"; done
    # Our Redis wrote its pid file: only then is the port surely its own.
    pid="$(cat "$TMP/redis/redis.pid" 2>/dev/null || true)"
    if [[ -n "$REDIS_PORT" && "$pid" =~ ^[0-9]+$ ]]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        stop_pid "$pid"
    fi
    if [[ -n "$PG_STARTED" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 20 stop >/dev/null 2>&1 || true
        pid="$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true)"
        [[ "$pid" =~ ^[0-9]+$ ]] && stop_pid "$pid"
    fi
    cd /
    rm -rf "$TMP"
    [[ -n "$PG_DIR" ]] && rm -rf "$PG_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$TMP"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- server ------------------------------------------------------------------
# start_server NAME CPU FIRST [VAR=VALUE...]: starts `siesta serve --listen 127.0.0.1:0`
# in $TMP/NAME (its working directory, stdout and log), pinned to CPU ("-": not pinned),
# with the given settings; waits for its "listening on" line and, if FIRST is "first"
# (the first start of an empty database), the first-start block. Sets SERVER_PID and
# BASE, and ORG on a first start. The bootstrap admin key (600 requests/min) is not
# used: it is dropped from disk at once.
start_server() {
    local name="$1" cpu="$2" first="$3"
    shift 3
    local dir="$TMP/$name" pin=()
    mkdir -p "$dir"
    if [[ "$cpu" != - ]]; then pin=(taskset -c "$cpu"); fi
    # The subshell execs taskset, which execs the server: $! is the server's own pid.
    (
        cd "$dir"
        export SIESTA_AUTH_FAILURE_LIMIT=1000000000 "$@"
        exec ${pin[@]+"${pin[@]}"} "$BIN" serve --listen 127.0.0.1:0 >"$dir/server.out" 2>"$dir/server.log"
    ) &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")

    BASE=""
    local first_line
    for _ in $(seq 100); do   # up to 10 s
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            say "bench: the server '$name' exited during start-up; its log:"
            tail -n 20 "$dir/server.log" >&2 || true
            die "server '$name' did not start"
        fi
        first_line="$(head -n 1 "$dir/server.out" 2>/dev/null || true)"
        if [[ "$first_line" =~ ^listening\ on\ (http://127\.0\.0\.1:[0-9]+)$ ]] \
            && { [[ "$first" != first ]] || grep -q '^  X-Api-Key: ' "$dir/server.out"; }; then
            BASE="${BASH_REMATCH[1]}"
            break
        fi
        sleep 0.1
    done
    if [[ -z "$BASE" && "$first" == first ]]; then
        die "server '$name': no 'listening on' line and first-start block within 10 s"
    fi
    [[ -n "$BASE" ]] || die "server '$name': no 'listening on' line within 10 s"
    if [[ "$first" == first ]]; then
        ORG="$(sed -n 's/^  X-Org-Id:  \([0-9a-fA-F-]\{36\}\)$/\1/p' "$dir/server.out" | head -n 1)"
        [[ -n "$ORG" ]] || die "server '$name': no X-Org-Id in the first-start block"
        : >"$dir/server.out"
    fi
}

# make_key HEADER_FILE DIR NAME SCOPE [VAR=VALUE...]: creates a key with the CLI, run in
# DIR with the given settings (the server's database), scope SCOPE and a rate limit of
# 1000000000/min, and writes it with ORG to HEADER_FILE (mode 600) for curl and wrk.
make_key() {
    local file="$1" dir="$2" name="$3" scope="$4" key
    shift 4
    key="$(cd "$dir" && env "$@" "$BIN" keys create --org "$ORG" --user admin@localhost \
            --name "$name" --scope "$scope" --rate-limit 1000000000/min --json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')" \
        || die "siesta keys create ($name) failed"
    [[ -n "$key" ]] || die "siesta keys create ($name) printed no key"
    (umask 077 && printf 'X-Api-Key: %s\nX-Org-Id: %s\n' "$key" "$ORG" >"$file")
}

status() { # status HEADER_FILE METHOD URL [BODY]
    local args=(-sS -o /dev/null -w '%{http_code}' -H "@$1" -X "$2" "$3")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    curl "${args[@]}" || true
}

# await_key HEADER_FILE BASE: the server notices a key the CLI made by itself; allow it a
# moment.
await_key() {
    local code=""
    for _ in $(seq 50); do
        code="$(status "$1" GET "$2/api/v1/Me")"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    die "GET $2/api/v1/Me with the new key answered $code, not 200"
}

create_agents() { # create_agents HEADER_FILE BASE
    local code
    say "bench: creating $AGENTS agents"
    for i in $(seq "$AGENTS"); do
        code="$(status "$1" POST "$2/api/v1/Agent" \
            "{\"name\":\"agent-$i\",\"description\":\"bench\",\"instructions\":\"be brief\"}")"
        [[ "$code" == 201 ]] || die "POST /api/v1/Agent (agent-$i) answered $code, not 201"
    done
}

# check_cases BASE "WANT HEADER_FILE|- PATH"...: one request per case before loading it, so
# a wrong status shows up here.
check_cases() {
    local base="$1" want hdr path code
    shift
    for check in "$@"; do
        read -r want hdr path <<<"$check"
        if [[ "$hdr" == - ]]; then
            code="$(curl -sS -o /dev/null -w '%{http_code}' "$base$path" || true)"
        else
            code="$(status "$hdr" GET "$base$path")"
        fi
        [[ "$code" == "$want" ]] || die "GET $path ($(basename "$hdr")) answered $code, expected $want"
    done
}

# await_redis BASE: /readyz says "redis": "ok" (the replica reaches Redis) within 10 s.
redis_ok() {
    curl -sS "$1/readyz" 2>/dev/null \
        | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin).get("redis") != "ok")' 2>/dev/null
}
await_redis() {
    for _ in $(seq 100); do redis_ok "$1" && return 0; sleep 0.1; done
    die "$1/readyz does not report Redis as reachable"
}

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

# snapshot FILE [LABEL=PID[+]...]: CPU counters of the two pinned CPUs and the CPU time of
# the given processes (PID+ adds its children, e.g. PostgreSQL's backends), to FILE.
snapshot() {
    python3 - "$SERVER_CPU" "$WRK_CPU" "$@" <<'PY'
import json, os, sys, time
server_cpu, wrk_cpu, path, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
cpus = {}
for line in open("/proc/stat"):
    f = line.split()
    if f[0] in ("cpu" + server_cpu, "cpu" + wrk_cpu):
        v = list(map(int, f[1:9]))
        cpus[f[0]] = [sum(v), v[3] + v[4]]
def stat(pid):
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return int(f[1]), int(f[11]) + int(f[12])   # ppid, utime + stime
procs = {}
if specs:
    table = {int(p): stat(p) for p in os.listdir("/proc") if p.isdigit()}
    for spec in specs:
        label, pid = spec.split("=")
        children = pid.endswith("+")
        pid = int(pid.rstrip("+"))
        ticks = (table.get(pid) or (0, 0))[1]
        if children:
            ticks += sum(t[1] for t in table.values() if t and t[0] == pid)
        procs[label] = ticks
json.dump({"time": time.time(), "cpus": cpus, "procs": procs}, open(path, "w"))
PY
}

# load NAME HEADER_FILE_OR_- URL [LABEL=PID[+]...]: a warm-up, then the measured wrk run;
# appends a row to $RESULTS: name, requests/s, p99, requests, non-2xx/3xx, socket errors,
# busy % of the server's and wrk's CPUs, and the CPU used by the labelled processes.
load() {
    local name="$1" headers="$2" url="$3" n out
    shift 3
    n=$(($(wc -l <"$RESULTS") + 1))
    out="$TMP/wrk-$n.txt"
    [[ "$headers" == - ]] && headers=""
    say "bench: $name: warm-up $WARMUP, then $DURATION"
    WRK_HEADERS="$headers" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" \
        -s "$REPO/bench/wrk-headers.lua" "$url" >/dev/null
    snapshot "$TMP/before-$n.json" "$@"
    WRK_HEADERS="$headers" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency \
        -s "$REPO/bench/wrk-headers.lua" "$url" >"$out"
    snapshot "$TMP/after-$n.json" "$@"
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during '$name'"
    python3 - "$name" "$out" "$TMP/before-$n.json" "$TMP/after-$n.json" "$SERVER_CPU" "$WRK_CPU" >>"$RESULTS" <<'PY'
import json, os, re, sys
name, path, before, after, server_cpu, wrk_cpu = sys.argv[1:7]
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
a, b = json.load(open(before)), json.load(open(after))
def busy(cpu):
    (t0, i0), (t1, i1) = a["cpus"][cpu], b["cpus"][cpu]
    return f"{100 * (1 - (i1 - i0) / max(1, t1 - t0)):.0f}%"
wall = max(1e-9, b["time"] - a["time"])
hz = os.sysconf("SC_CLK_TCK")
procs = ",".join(f"{k}={(b['procs'][k] - a['procs'][k]) / hz / wall:.2f}" for k in a["procs"])
print("\t".join([name, rps, p99, total, non2xx, str(errors),
                 busy("cpu" + server_cpu), busy("cpu" + wrk_cpu), procs or "-"]))
PY
}

log_counts() { # log_counts LOG: "E W P" (ERROR, WARN and panic lines)
    printf '%s %s %s\n' "$(grep -c -E '(^| )ERROR ' "$1" || true)" \
        "$(grep -c -E '(^| )WARN ' "$1" || true)" "$(grep -c 'panicked' "$1" || true)"
}
show_log_problems() { # show_log_problems NAME LOG
    if grep -q -E '(^| )(ERROR|WARN) |panicked' "$2"; then
        say ""
        say "bench: first ERROR/WARN/panic lines of the log of '$1':"
        grep -m 10 -E '(^| )(ERROR|WARN) |panicked' "$2" >&2 || true
    fi
}

GARBAGE="sai_live_$(printf 'A%.0s' $(seq 46))"   # well-formed, fails the checksum
agent_url() { printf '%s/api/v1/Agent?Limit=10' "$1"; }

# =============================================================================
if [[ "$MODE" == default ]]; then
    start_server sqlite "$SERVER_CPU" first
    make_key "$TMP/valid.h" "$TMP/sqlite" bench-local-load write
    # curl and wrk read the credentials from files so they are not on a command line.
    (umask 077 && printf 'X-Api-Key: %s\nX-Org-Id: %s\n' "$GARBAGE" "$ORG" >"$TMP/garbage.h")
    await_key "$TMP/valid.h" "$BASE"
    create_agents "$TMP/valid.h" "$BASE"
    check_cases "$BASE" "200 - /healthz" "200 $TMP/valid.h /api/v1/Me" \
        "401 $TMP/garbage.h /api/v1/Me" "200 $TMP/valid.h /api/v1/Agent?Limit=10"

    BUSY_BEFORE="$(cpu_busy)"
    load "GET /healthz" - "$BASE/healthz"
    load "GET /api/v1/Me (valid key)" "$TMP/valid.h" "$BASE/api/v1/Me"
    load "GET /api/v1/Me (garbage key, 401)" "$TMP/garbage.h" "$BASE/api/v1/Me"
    load "GET /api/v1/Agent?Limit=10 (valid key)" "$TMP/valid.h" "$(agent_url "$BASE")"

    # --- report ----------------------------------------------------------------
    BUSY_AFTER="$(cpu_busy)"
    read -r ERRORS WARNS PANICS < <(log_counts "$TMP/sqlite/server.log")
    LOG_BYTES="$(wc -c <"$TMP/sqlite/server.log")"

    python3 - "$RESULTS" <<PY
import sys
rows = [line.rstrip("\n").split("\t")[:6] for line in open(sys.argv[1]) if line.strip()]
expect_all_non2xx = {2}   # the garbage-key case answers 401 by design

print()
print("siesta load benchmark")
print(f"  source:   $REV")
print(f"  machine:  nproc=$NPROC, server pinned to CPU $SERVER_CPU, wrk pinned to CPU $WRK_CPU")
print(f"  wrk:      taskset -c $WRK_CPU wrk -t1 -c$CONNS -d$DURATION --latency"
      f" -s bench/wrk-headers.lua URL  (X-Api-Key, X-Org-Id from a mode-600 file;"
      f" after a $WARMUP warm-up per case)")
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

    show_log_problems sqlite "$TMP/sqlite/server.log"
    exit 0
fi

# =============================================================================
# --scale-out
BUSY_BEFORE="$(cpu_busy)"

# --- 1. SQLite, as in the default mode -------------------------------------------
start_server sqlite "$SERVER_CPU" first
SQLITE_PID="$SERVER_PID"
make_key "$TMP/sqlite.h" "$TMP/sqlite" bench-local-load write
await_key "$TMP/sqlite.h" "$BASE"
create_agents "$TMP/sqlite.h" "$BASE"
check_cases "$BASE" "200 $TMP/sqlite.h /api/v1/Agent?Limit=10"
load "SQLite" "$TMP/sqlite.h" "$(agent_url "$BASE")" "siesta=$SQLITE_PID"
# An orderly stop (it writes its buffered records), so CPU 0 is the next replica's alone.
stop_pid "$SQLITE_PID"

# --- 2. PostgreSQL + Redis, one replica ---------------------------------------------
DB_PIN=(taskset -c "$WRK_CPU")   # the first placement; pin_db changes it

PG_PORT="$(free_port)"
PG_DIR="$(mktemp -d -t siesta-bench-pg.XXXXXX)"
[[ "$EUID" -eq 0 ]] && chown postgres:postgres "$PG_DIR"
say "bench: starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U siesta >"$TMP/initdb.log" 2>&1 \
    || { tail -n 20 "$TMP/initdb.log" >&2; die "initdb failed"; }
PG_STARTED=1
as_pg "${DB_PIN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w -t 30 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start >/dev/null \
    || { tail -n 20 "$PG_DIR/pg.log" >&2; die "PostgreSQL did not start"; }
PG_PID="$(head -n 1 "$PG_DIR/data/postmaster.pid")"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U siesta siesta_bench || die "createdb failed"
PG_URL="postgres://siesta@127.0.0.1:$PG_PORT/siesta_bench"

REDIS_PORT="$(free_port)"
mkdir -p "$TMP/redis"
say "bench: starting a throwaway Redis on 127.0.0.1:$REDIS_PORT"
"${DB_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$TMP/redis" --pidfile "$TMP/redis/redis.pid" --logfile "$TMP/redis/redis.log" \
    || die "redis-server did not start"
for _ in $(seq 50); do
    [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]] && break
    sleep 0.1
done
[[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]] || die "Redis does not answer"
REDIS_PID="$(cat "$TMP/redis/redis.pid")"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
CLUSTER_ENV=("SIESTA_DATABASE_URL=$PG_URL" "SIESTA_REDIS_URL=$REDIS_URL")
redis_commands() { # "COMMANDS SCRIPTS": commands processed (those scripts call included),
    # and script invocations (EVAL, EVALSHA): round trips of the rate limiter
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info all | tr -d '\r' | awk -F'[:=,]' '
        $1 == "total_commands_processed" { total = $2 }
        $1 == "cmdstat_eval" || $1 == "cmdstat_evalsha" { scripts += $3 }
        END { printf "%d %d\n", total, scripts }'
}

start_server pg-a "$SERVER_CPU" first "${CLUSTER_ENV[@]}"
A_PID="$SERVER_PID"
A_BASE="$BASE"
await_redis "$A_BASE"
make_key "$TMP/pg.h" "$TMP/pg-a" bench-local-load write "${CLUSTER_ENV[@]}"
await_key "$TMP/pg.h" "$A_BASE"
create_agents "$TMP/pg.h" "$A_BASE"
check_cases "$A_BASE" "200 $TMP/pg.h /api/v1/Agent?Limit=10"
# pin_db CPULIST: PostgreSQL (the postmaster, whose affinity new backends inherit, and
# its children) and Redis, every thread, onto CPULIST.
pin_db() {
    local pid
    for pid in "$PG_PID" $(pgrep -P "$PG_PID") "$REDIS_PID"; do
        taskset -a -p -c "$1" "$pid" >/dev/null || die "cannot set the CPU affinity of $pid"
    done
}
REDIS_CMDS_BEFORE="$(redis_commands)"
load "PG + Redis, DB on CPU $WRK_CPU" "$TMP/pg.h" "$(agent_url "$A_BASE")" \
    "siesta=$A_PID" "postgres=$PG_PID+" "redis=$REDIS_PID"
REDIS_CMDS_AFTER="$(redis_commands)"
pin_db "$ALL_CPUS"
load "PG + Redis, DB unpinned" "$TMP/pg.h" "$(agent_url "$A_BASE")" \
    "siesta=$A_PID" "postgres=$PG_PID+" "redis=$REDIS_PID"
REDIS_STILL_OK=$(redis_ok "$A_BASE" && echo yes || echo no)

# --- 3. revocation lag between two replicas ------------------------------------------
start_server pg-b - again "${CLUSTER_ENV[@]}"
B_PID="$SERVER_PID"
B_BASE="$BASE"
await_redis "$B_BASE"
make_key "$TMP/admin.h" "$TMP/pg-a" bench-local-lag admin "${CLUSTER_ENV[@]}"
await_key "$TMP/admin.h" "$A_BASE"
await_key "$TMP/admin.h" "$B_BASE"
say "bench: revocation lag: $TRIALS trials (create on A, use on B, delete on A, poll B)"
python3 "$REPO/bench/revocation_lag.py" --replica-a "$A_BASE" --replica-b "$B_BASE" \
    --admin-headers "$TMP/admin.h" --trials "$TRIALS" --json >"$TMP/lag.json" \
    || die "bench/revocation_lag.py failed"
kill -0 "$A_PID" 2>/dev/null || die "replica A died during the revocation-lag trials"
kill -0 "$B_PID" 2>/dev/null || die "replica B died during the revocation-lag trials"

# --- report --------------------------------------------------------------------
BUSY_AFTER="$(cpu_busy)"
LOGS=""
for name in sqlite pg-a pg-b; do
    read -r e w p < <(log_counts "$TMP/$name/server.log")
    LOGS+="$name: $e ERROR, $w WARN, $p panic lines; "
done

python3 - "$RESULTS" "$TMP/lag.json" <<PY
import json, re, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
lag = json.load(open(sys.argv[2]))
sq, pinned, unpinned = rows
redis_cmds, redis_scripts = (b - a for a, b in zip(map(int, "$REDIS_CMDS_BEFORE".split()),
                                                    map(int, "$REDIS_CMDS_AFTER".split())))

print()
print("siesta load benchmark: scale-out (SQLite against PostgreSQL + Redis)")
print(f"  source:   $REV")
print(f"  machine:  nproc=$NPROC")
print(f"  pinning:  the siesta replica under load on CPU $SERVER_CPU in every case; wrk on CPU $WRK_CPU;")
print(f"            PostgreSQL and Redis (their own processes) first on CPU $WRK_CPU with wrk, so the")
print(f"            replica has CPU $SERVER_CPU to itself as the SQLite server has (the headline), then")
print(f"            unpinned (CPUs $ALL_CPUS), free to share CPU $SERVER_CPU with the replica;")
print(f"            replica B and the revocation-lag poller not pinned")
print(f"  wrk:      taskset -c $WRK_CPU wrk -t1 -c$CONNS -d$DURATION --latency"
      f" -s bench/wrk-headers.lua URL  (after a $WARMUP warm-up per case)")
print(f"  server:   SIESTA_AUTH_FAILURE_LIMIT=1000000000 taskset -c $SERVER_CPU siesta serve"
      f" --listen 127.0.0.1:0  ($AGENTS agents, default info logging to a file)")
print(f"  SQLite:   a fresh file, as in the default mode")
print(f"  PG+Redis: $PG_VERSION (initdb defaults: fsync on), $REDIS_VERSION (no persistence),")
print(f"            both fresh, throwaway, on 127.0.0.1; SIESTA_DATABASE_URL and SIESTA_REDIS_URL set")
print(f"  load key: scope write, rate limit 1000000000/min")
print(f"  idle CPU busy (other processes): before $BUSY_BEFORE; after $BUSY_AFTER")
print()
print("  GET /api/v1/Agent?Limit=10 (valid key)")
w = max(len(r[0]) for r in rows)
head = (f"  {'backend':<{w}}  {'requests/s':>10}  {'p99':>8}  {'requests':>8}  {'non-2xx':>7}"
        f"  {'sock err':>8}  {'CPU $SERVER_CPU':>5}  {'CPU $WRK_CPU':>5}  {'µs CPU/req':>10}  CPU used (cores)")
print(head)
print("  " + "-" * (len(head) - 2 + 28))
warnings = []
for name, rps, p99, total, non2xx, errs, busy_s, busy_w, procs in rows:
    used = [(p.split("=")[0], float(p.split("=")[1])) for p in procs.split(",")] if procs != "-" else []
    per_req = sum(c for _, c in used) / float(rps) * 1e6
    used = ", ".join(f"{k} {c:.2f}" for k, c in used)
    print(f"  {name:<{w}}  {float(rps):>10,.0f}  {p99:>8}  {total:>8}  {non2xx:>7}  {errs:>8}"
          f"  {busy_s:>5}  {busy_w:>5}  {per_req:>10,.0f}  {used}")
    if int(non2xx):
        warnings.append(f"{name}: {non2xx} non-2xx/3xx responses")
    if int(errs):
        warnings.append(f"{name}: {errs} socket errors")
print("  (CPU n: busy share of that CPU during the case; µs CPU/req: CPU time of siesta,")
print("  PostgreSQL and Redis per request, wrk left out)")
print()
ratio = float(pinned[1]) / float(sq[1])
other = float(unpinned[1]) / float(sq[1])
print(f"  PostgreSQL + Redis ÷ SQLite, requests/s:   {ratio:.2f}  (DB on CPU $WRK_CPU)"
      f"   goal ≥ $GOAL: {'met' if ratio >= $GOAL else 'NOT met'}")
print(f"                                              {other:.2f}  (DB unpinned)")
n = int(pinned[3])
print(f"  Redis per request (DB on CPU $WRK_CPU case):     {redis_scripts / n:.2f} script calls (EVALSHA),"
      f" {redis_cmds / n:.2f} commands in all; reachable after the load: $REDIS_STILL_OK")
print()
print(f"  revocation lag, replica A -> replica B, {lag['trials']} trials (a key created on A, used once")
print(f"  on B, deleted on A, B asked on one keep-alive connection until it answers 401; from")
print(f"  the DELETE's response to the first 401):")
print(f"    median {lag['median_ms']:.2f} ms, maximum {lag['max_ms']:.2f} ms"
      f"  (min {lag['min_ms']:.2f} ms, mean {lag['mean_ms']:.2f} ms;"
      f" one round trip to B {lag['poll_rtt_median_ms']:.2f} ms)")
print(f"    B already refused the key at the first request after the DELETE in"
      f" {lag['first_poll_refused']} of {lag['trials']} trials (median {lag['polls_median']:g} request(s) to B a trial)")
print()
print(f"  server logs: $LOGS".rstrip("; "))
if "$REDIS_STILL_OK" != "yes":
    warnings.append("replica A did not report Redis as reachable after the load")
if any(int(x) > 10 for x in re.findall(r"(\d+)%", "$BUSY_BEFORE $BUSY_AFTER")):
    warnings.append("other processes were using the pinned CPUs; the figures are not reliable")
for w_ in warnings:
    print(f"  WARNING: {w_}")
PY

for name in sqlite pg-a pg-b; do show_log_problems "$name" "$TMP/$name/server.log"; done
