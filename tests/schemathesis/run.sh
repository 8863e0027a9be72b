#!/usr/bin/env bash
# Property-based tests of the API against its own OpenAPI document: starts the server on a
# fresh SQLite database, seeds one of each resource, and runs schemathesis with every check
# on and valid credentials. Exits non-zero on any failure.
#
# Needs the siesta binary (SIESTA_BIN, default target/debug/siesta) and schemathesis on PATH.
# SIESTA_SERVER_LOG names a file to keep the server's log in.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${SIESTA_BIN:-$root/target/debug/siesta}"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ -n "${SIESTA_SERVER_LOG:-}" ]; then cp "$work/stderr" "$SIESTA_SERVER_LOG"; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Limits high enough that the run measures the contract, not the rate limiter. The output
# files exist before the server starts: the background job opens them only once it runs.
cd "$work"
: >"$work/stdout"
: >"$work/stderr"
"$bin" serve --listen 127.0.0.1:0 --rate-limit 100000000 --auth-failure-limit 100000000 \
  >"$work/stdout" 2>"$work/stderr" &
server=$!

base="" key="" org=""
for _ in $(seq 1 100); do
  kill -0 "$server" 2>/dev/null || break
  base="$(sed -n 's/^listening on //p' "$work/stdout")"
  key="$(sed -n 's/^ *X-Api-Key: *//p' "$work/stdout")"
  org="$(sed -n 's/^ *X-Org-Id: *//p' "$work/stdout")"
  [ -n "$base" ] && [ -n "$key" ] && [ -n "$org" ] && break
  sleep 0.1
done
if [ -z "$base" ] || [ -z "$key" ]; then
  echo "the server did not start:" >&2; cat "$work/stderr" >&2; exit 1
fi

api() { # METHOD PATH [JSON] -> prints the response body
  curl -sS --fail-with-body -X "$1" "$base/api/v1$2" -H "X-Api-Key: $key" -H "X-Org-Id: $org" \
    ${3:+-H "Content-Type: application/json" --data "$3"}
}
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

# One of each resource, so that operations on an existing id are tested too.
export SIESTA_AGENT_ID SIESTA_WORKSPACE_ID SIESTA_TASK_ID SIESTA_COLLECTION_ID \
  SIESTA_CONVERSATION_ID SIESTA_KEY_ID SIESTA_FILE_ID SIESTA_CONNECTION_ID
SIESTA_AGENT_ID="$(api POST /Agent '{"name":"Seeded agent","instructions":"Answer briefly."}' | id_of)"
SIESTA_WORKSPACE_ID="$(api POST /TaskWorkspace '{"name":"Seeded workspace"}' | id_of)"
SIESTA_TASK_ID="$(api POST /Task "{\"title\":\"Seeded task\",\"workspaceId\":\"$SIESTA_WORKSPACE_ID\"}" | id_of)"
SIESTA_COLLECTION_ID="$(api POST /DataSourceCollection '{"name":"Seeded collection"}' | id_of)"
SIESTA_CONVERSATION_ID="$(api POST "/Agent/$SIESTA_AGENT_ID/response" '{"message":"Hello"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["conversationId"])')"
SIESTA_KEY_ID="$(api POST /ApiKey '{"name":"seeded-test-key","scope":"read"}' | id_of)"
printf 'seeded file\n' >"$work/seed.txt"
SIESTA_FILE_ID="$(curl -sS --fail-with-body "$base/api/v1/File" -H "X-Api-Key: $key" -H "X-Org-Id: $org" \
  -F "file=@$work/seed.txt;type=text/plain" | id_of)"
SIESTA_CONNECTION_ID="$(api POST /Connection '{"type":"slack","name":"Seeded connection"}' | id_of)"

st() { # CONFIG PHASES
  schemathesis --config-file "$here/$1" run "$base/openapi.json" --url "$base" --phases "$2" \
    --header "X-Api-Key: $key" --header "X-Org-Id: $org"
}
failed=0
echo "== examples, coverage and fuzzing, on the seeded objects"
st seeded.toml examples,coverage,fuzzing || failed=1
echo "== stateful: create, then follow the links"
st stateful.toml stateful || failed=1
exit "$failed"
