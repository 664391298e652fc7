#!/usr/bin/env bash
# One-off measurement (not a test): ensure moving N rows (default 1M) out of
# `future`, against INSERT … SELECT of the same rows into a plain table with the
# same indexes. Needs a local PostgreSQL (psql) and a built sync-migrate binary.
# Usage: bench/ensure_1m.sh [rows] [path/to/sync-migrate]
set -euo pipefail
ROWS=${1:-1000000}
BIN=${2:-${CARGO_TARGET_DIR:-target}/release/sync-migrate}
DB=bench_partitions_$$
HERE=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 -U postgres -d "$DB" "$@"; }
createdb -U postgres "$DB"
trap 'dropdb -U postgres --force "$DB"' EXIT
psql -f "$HERE/migrations/V0001__prerequisites.sql" -f "$HERE/migrations/V0024__sync_preview_progress_logs.sql"
psql <<SQL
INSERT INTO organization (id, name) SELECT gen_random_uuid(), 'org ' || i FROM generate_series(1, 20) i;
INSERT INTO auth.users_extended (id, org_id) SELECT gen_random_uuid(), id FROM organization;
-- Rows spread evenly from 2026-03 to 2027-06 (the last months stay in the catch-all).
INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, record_count, user_id, created_at)
SELECT o.id, 'sync-' || (i % 5000), (enum_range(NULL::sync_entity_type))[1 + i % 16],
       'record_update', CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END::sync_status_type,
       i % 100, CASE WHEN i % 3 = 0 THEN u.id END,
       '2026-03-01'::timestamptz + (i::float8 / $ROWS) * interval '487 days'
  FROM generate_series(1, $ROWS) i
  JOIN LATERAL (SELECT id FROM organization ORDER BY id OFFSET i % 20 LIMIT 1) o ON true
  JOIN auth.users_extended u ON u.org_id = o.id;
VACUUM ANALYZE sync_activity_log;
SQL
echo "rows in future: $(psql -Atc 'SELECT count(*) FROM sync_activity_log_future')"
psql -c "CHECKPOINT"
echo "--- baseline: INSERT … SELECT into a plain table with the same indexes (no FKs)"
psql <<'SQL'
CREATE TABLE plain_copy (LIKE sync_activity_log INCLUDING ALL);
\timing on
INSERT INTO plain_copy SELECT * FROM sync_activity_log_future;
\timing off
DROP TABLE plain_copy;
CHECKPOINT;
SQL
echo "--- ensure"
# Log each statement of ensure that takes more than 200 ms (phase breakdown).
psql -c "ALTER DATABASE $DB SET log_min_duration_statement = 200"
LOG=/var/log/postgresql/postgresql-15-main.log
LOG_FROM=$( [ -r "$LOG" ] && wc -l < "$LOG" || echo 0)
start=$(date +%s.%N)
"$BIN" --database-url "postgresql://postgres@/$DB?host=/var/run/postgresql" --json partitions ensure --months-ahead 3
end=$(date +%s.%N)
echo "ensure wall time: $(echo "$end - $start" | bc) s"
echo "rows after: $(psql -Atc 'SELECT count(*) FROM sync_activity_log')"
if [ -r "$LOG" ]; then
  echo "--- statements of ensure over 200 ms (server log)"
  tail -n +"$((LOG_FROM + 1))" "$LOG" | grep -F "duration:" | grep -F "$DB" || tail -n +"$((LOG_FROM + 1))" "$LOG" | grep -F "duration:" | cut -c1-220
fi
