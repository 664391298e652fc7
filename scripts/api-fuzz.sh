#!/usr/bin/env bash
# Property-based fuzzing of sync-api against its own OpenAPI document
# (schemathesis), on a fresh database, with a development HS256 token.
#
#   scripts/api-fuzz.sh            # ~2 minutes at most
#
# Checks: no 5xx (not_a_server_error) and every response matching the
# document (status_code_conformance, content_type_conformance,
# response_schema_conformance). Exits non-zero on any failure.
#
# Needs: cargo, python3 (venv), psql/createdb/dropdb, a PostgreSQL server
# (PGHOST/PGPORT/PGUSER as for psql; default the local socket as postgres).
# Environment: FUZZ_MAX_EXAMPLES (default 25), FUZZ_MAX_TIME (seconds, default
# 120), SCHEMATHESIS_VENV (default ~/.cache/sync-api-fuzz-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGHOST="${PGHOST:-/var/run/postgresql}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
max_examples="${FUZZ_MAX_EXAMPLES:-25}"
max_time="${FUZZ_MAX_TIME:-120}"
venv="${SCHEMATHESIS_VENV:-$HOME/.cache/sync-api-fuzz-venv}"

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'schemathesis>=4,<5'
fi

cargo build --quiet -p sync-api --bin sync-api -p sync-cli --bin sync-migrate
bin=target/debug

db="sync_api_fuzz_$$"
work="$(mktemp -d)"
api_pid=""
cleanup() {
  if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  dropdb --if-exists "$db" 2>/dev/null || true
  psql -qAtX -d postgres -c "DROP ROLE IF EXISTS ${db}_api" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

createdb "$db"
url="postgresql://$PGUSER@/$db?host=$PGHOST&port=$PGPORT"
"$bin/sync-migrate" --database-url "$url" up >/dev/null

org=11111111-1111-4111-8111-111111111111
user=22222222-2222-4222-8222-222222222222
role="${db}_api"
psql -qAtX -v ON_ERROR_STOP=1 -d "$db" \
  -v org="$org" -v usr="$user" -v role="$role" -v db="$db" <<'SQL' >/dev/null
INSERT INTO organization (id, name) VALUES (:'org', 'fuzz org');
INSERT INTO auth.users_extended (id, org_id, email) VALUES (:'usr', :'org', 'fuzz@example.com');
INSERT INTO sync_progress (org_id, sync_id, entity_type, total_items)
  VALUES (:'org', 'fuzz-sync', 'product', 1000000);
CREATE ROLE :"role" LOGIN NOSUPERUSER NOINHERIT NOBYPASSRLS PASSWORD 'x' IN ROLE sync_tenant;
GRANT CONNECT ON DATABASE :"db" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";
GRANT SELECT ON refinery_schema_history TO :"role";
SQL

secret="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
printf '%s' "$secret" >"$work/secret"
issuer="https://fuzz.invalid/auth/v1"
token="$("$bin/sync-api" dev-token --user "$user" --jwt-signing-key-file "$work/secret" \
  --jwt-issuer "$issuer" --ttl-seconds 3600 2>/dev/null)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
DATABASE_URL="postgresql://$role:x@/$db?host=$PGHOST&port=$PGPORT" \
SYNC_API_BIND="127.0.0.1:$port" \
SYNC_API_JWT_HS256_SECRET_FILE="$work/secret" \
SYNC_API_JWT_ISSUER="$issuer" \
RUST_LOG="${RUST_LOG:-warn}" \
  "$bin/sync-api" &
api_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  python3 -c 'import time; time.sleep(0.1)'
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null

"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --request-timeout 10 \
  --workers 1 \
  --seed 1 \
  --suppress-health-check all
