#!/usr/bin/env bash
# Adopts the deployed-0024 fixture (another team's 0024, a year of rows, no
# history) at a realistic scale with the `sync-migrate` binary, end to end:
# report (exit 1 without --allow-not-valid), --apply, second --apply (no-op),
# up (moves the catch-all's backlog), verify, the spec's examples and the old
# writers afterwards, and every pre-existing row unchanged (count + md5 per table).
#
#   scripts/adopt-fixture.sh [scale]     # default 200 (2,600 syncs, 8,500 log rows)
#
# Needs: cargo, psql/createdb/dropdb, a PostgreSQL server (PGHOST/PGPORT/PGUSER
# as for psql; default the local socket as postgres). Drops its database on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PGHOST="${PGHOST:-/var/run/postgresql}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
SCALE="${1:-200}"
DB="adopt_fixture_$(date +%s)_$$"
export PGDATABASE="$DB"
FX=tests/fixtures/deployed-0024
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
trap 'dropdb --if-exists "$DB"' EXIT

cargo build --quiet -p sync-cli --bin sync-migrate
bin=target/debug/sync-migrate

createdb "$DB"
"${PSQL[@]}" -v scale="$SCALE" -f $FX/00_platform.sql -f $FX/10_migration_0024.sql \
  -f $FX/20_year_of_rows.sql -f $FX/50_more_variations.sql

sums() {
  "${PSQL[@]}" -At <<'SQL'
SET TimeZone = 'UTC';
SELECT t, n, h FROM (
  SELECT 'cache' AS t, count(*) AS n, md5(string_agg(x, '|' ORDER BY x)) AS h FROM (
    SELECT (jsonb_strip_nulls(to_jsonb(c)) || jsonb_build_object('updated_at', (to_jsonb(c) ->> 'updated_at')::timestamptz::timestamp))::text AS x
      FROM sync_preview_cache c WHERE sync_id NOT LIKE 'replay-%') s
  UNION ALL SELECT 'progress', count(*), md5(string_agg(jsonb_strip_nulls(to_jsonb(p))::text, '|' ORDER BY jsonb_strip_nulls(to_jsonb(p))::text))
    FROM sync_progress p WHERE sync_id NOT LIKE 'replay-%'
  UNION ALL SELECT 'log', count(*), md5(string_agg(jsonb_strip_nulls(to_jsonb(l))::text, '|' ORDER BY jsonb_strip_nulls(to_jsonb(l))::text))
    FROM sync_activity_log l WHERE coalesce(sync_id, '') NOT LIKE 'replay-%') q ORDER BY t;
SQL
}
before=$(sums)

echo "== adopt (report; exit 1 expected: the fixture's rows break two of our constraints)"
if "$bin" adopt > /tmp/adopt-report.$$ 2>&1; then
  echo "FAIL: adopt exited 0"; cat /tmp/adopt-report.$$; exit 1
fi
grep -c BLOCKING /tmp/adopt-report.$$ | sed 's/^/blocking rows: /'
rm -f /tmp/adopt-report.$$
echo "== adopt --apply --allow-not-valid"
time "$bin" adopt --apply --allow-not-valid | tail -4
echo "== second adopt --apply (no-op)"
"$bin" adopt --apply --allow-not-valid | grep -q "already adopted"
echo "== up"
time "$bin" up | tail -2
"$bin" verify
"${PSQL[@]}" -v sync_id=replay-after -f $FX/30_old_writers.sql > /dev/null
"${PSQL[@]}" -f $FX/40_spec_examples.sql > /dev/null
after=$(sums)
if [ "$before" != "$after" ]; then
  echo "FAIL: pre-existing rows changed"; diff <(echo "$before") <(echo "$after"); exit 1
fi
echo "PASS: adopted, up, verify, old writers, spec examples; rows unchanged:"
echo "$after" | cut -d'|' -f1,2
