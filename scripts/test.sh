#!/usr/bin/env bash
# The README's test command (and what .ci/run runs): installs the test
# prerequisites when they are missing, then runs `cargo test --workspace`.
# Extra arguments go to cargo test (e.g. `scripts/test.sh --test harness`);
# SYNC_TEST_INSTALL_ONLY=1 installs and stops (what .ci/run does first).
#
# Needs only Rust and the PostgreSQL server packages. Installs (as root, with
# apt-get) what the tests use beyond them:
#   - pgbouncer: the pooler tests start their own PgBouncer;
#   - postgresql-client (psql, pg_dump): the rollback tests compare schema dumps;
#     its pg_basebackup makes the streaming standby of the replica tests;
#   - chromium, chromium-driver: the dashboard's browser test (dashboard_browser).
# No sudo: throwaway clusters run as the `postgres` user through the process API.
# When something cannot be installed, the tests that need it say SKIPPED (under
# CI, where CI is set, they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

works() { "$@" >/dev/null 2>&1; }
pgbouncer_bin() { command -v pgbouncer 2>/dev/null || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true; }

missing=()
bouncer=$(pgbouncer_bin)
if [ -z "$bouncer" ]; then missing+=(pgbouncer); fi
works psql --version || missing+=(postgresql-client)
works pg_dump --version || missing+=(postgresql-client)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ! works pg_config --bindir && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; }; then
      echo "test.sh: could not install ${missing[*]}; the tests that need it will say SKIPPED" >&2
    fi
  else
    echo "test.sh: missing ${missing[*]} (install as root: apt-get install -y ${missing[*]}); the tests that need it will say SKIPPED" >&2
  fi
fi
bouncer=$(pgbouncer_bin)
if [ -n "$bouncer" ] && ! works "$bouncer" --version; then
  echo "test.sh: $bouncer does not run; the pooler tests will say SKIPPED" >&2
fi

if [ "${SYNC_TEST_INSTALL_ONLY:-}" = 1 ]; then exit 0; fi
exec cargo test --workspace "$@"
