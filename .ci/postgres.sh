#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the scale-out test (Debian's package).
# Usage: source .ci/postgres.sh && start_postgres   -> exports MOBILENAS_TEST_POSTGRES_URL
#        stop_postgres                               -> stops it and removes its data
PG_PORT=${PG_PORT:-55432}

start_postgres() {
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "installing postgresql (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  PGDATA=$(mktemp -d /tmp/mobilenas-pg.XXXXXX) &&
    chown postgres "$PGDATA" &&
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null &&
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
      -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1" start >/dev/null &&
    runuser -u postgres -- "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" mobilenas || return 1
  export MOBILENAS_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/mobilenas"
  echo "PostgreSQL running: $MOBILENAS_TEST_POSTGRES_URL"
}

stop_postgres() {
  [ -n "${PGDATA:-}" ] || return 0
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
  rm -rf "$PGDATA"
}
