#!/usr/bin/env bash
# A PostgreSQL server for the export tests, on 127.0.0.1 only.
#
#   eval "$(scripts/ci-postgres.sh)"      # sets EDGE_SCREEN_TEST_PG
#
# Installs the distribution's postgresql package if it is missing, creates (once) a dedicated cluster
# "edgescreen" so the machine's own cluster is left alone, starts it, and creates a role that may create
# databases (each test makes and drops its own). Safe to run again: every step checks first.
# stdout carries only the export line; progress goes to stderr.
set -euo pipefail

PORT="${EDGE_SCREEN_PG_PORT:-54329}"
CLUSTER=edgescreen
ROLE=edge_screen
PASSWORD="${EDGE_SCREEN_PG_PASSWORD:-edge_screen}"  # a loopback-only throwaway server
DB=edge_screen

log() { echo "ci-postgres: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if ! command -v pg_createcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing postgresql from apt"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
cluster_field() {  # $1: column of pg_lsclusters (3 port, 4 status) for our cluster, empty if none
    pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" -v f="$1" '$1 == v && $2 == c { print $f }'
}

if [ -z "$(cluster_field 2)" ]; then
    log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
    as_root pg_createcluster "$VERSION" "$CLUSTER" -p "$PORT" >&2
fi
PORT="$(cluster_field 3)"  # an existing cluster keeps the port it was created with
# Loopback only, re-asserted on every run through Debian's conf.d, which postgresql.conf includes last.
CONF_D="/etc/postgresql/$VERSION/$CLUSTER/conf.d"
WANT="listen_addresses = '127.0.0.1'"
if [ "$(cat "$CONF_D/edge-screen.conf" 2>/dev/null)" != "$WANT" ]; then
    echo "$WANT" | as_root tee "$CONF_D/edge-screen.conf" >/dev/null
    as_root chown postgres:postgres "$CONF_D/edge-screen.conf"
    [ "$(cluster_field 4)" != "online" ] || as_root pg_ctlcluster "$VERSION" "$CLUSTER" restart >&2
fi
if [ "$(cluster_field 4)" != "online" ]; then
    log "starting cluster $VERSION/$CLUSTER"
    as_root pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi

for _ in $(seq 1 120); do  # a fresh cluster takes a moment to accept connections
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { log "server on 127.0.0.1:$PORT did not come up"; exit 1; }

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$PORT" -d postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    log "creating role $ROLE"
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >&2
else
    psql_admin -c "ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >&2
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    log "creating database $DB"
    psql_admin -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi

echo "export EDGE_SCREEN_TEST_PG=postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
