#!/bin/bash
# Entrypoint of the offline-built postgres:<major> images (see
# scripts/test-prereqs.sh). It is installed as /usr/local/bin/docker-entrypoint.sh
# and behaves like the official `postgres` image as far as our tests need,
# in particular testcontainers-modules' `Postgres`:
#
#   env   POSTGRES_USER      superuser name            (default: postgres)
#         POSTGRES_PASSWORD  its password              (required unless trust)
#         POSTGRES_DB        database to create        (default: $POSTGRES_USER)
#         POSTGRES_HOST_AUTH_METHOD  auth for TCP      (default: scram-sha-256)
#         POSTGRES_INITDB_ARGS       extra initdb args (word-split)
#         PGDATA             data directory            (default: /var/lib/postgresql/data)
#   args  `postgres [opts]`, or just `[opts]` when the first one starts with
#         "-" (testcontainers passes `-c fsync=off`); any other command is
#         exec'd as is (e.g. `bash` to poke around).
#   files /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sh run once, on the
#         first start with an empty data directory.
#
# Readiness contract: testcontainers waits for "database system is ready to
# accept connections" on stdout AND on stderr. On first start a temporary
# server (unix socket only) is started with pg_ctl, whose server log goes to
# stdout; once the database and init scripts are done it is stopped and the
# real server is exec'd, logging to stderr. So stderr only says "ready" when
# the final server really accepts TCP connections. A restart with an existing
# data directory skips initialisation (stdout keeps the earlier line).
set -Eeuo pipefail

# --- arguments -----------------------------------------------------------
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi
shift # what is left are options for the postgres server
for arg in "$@"; do
    case "$arg" in
    -V | --version | -'?' | --help | --describe-config | -C)
        exec postgres "$@" ;; # just asking: no cluster needed
    esac
done

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:=}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${POSTGRES_INITDB_ARGS:=}"
export PGDATA
SOCKET_DIR=/var/run/postgresql

say() { printf '%s: %s\n' "${0##*/}" "$*"; }
fail() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

# --- as root: fix ownership, then re-exec as the postgres user -------------
# PGDATA may be a fresh docker volume (owned by root) or a bind mount.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" "$SOCKET_DIR"
    chown postgres:postgres "$SOCKET_DIR"
    chmod 3777 "$SOCKET_DIR"
    # Only touch what is not ours yet, so restarts on big volumes stay quick.
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 0700 "$PGDATA"
    # setpriv (util-linux) swaps uid/gid/groups and execs in place, so the
    # server ends up as PID 1 and receives docker's stop signal directly.
    HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups \
        "${BASH_SOURCE[0]}" postgres "$@"
fi

# --- first start: create the cluster -------------------------------------
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        fail "POSTGRES_PASSWORD is not set: set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow passwordless connections"
    fi

    say "initialising a new cluster in $PGDATA (user \"$POSTGRES_USER\", database \"$POSTGRES_DB\")"
    initdb_args=(--username="$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8
        --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD")
    # A server started with fsync=off (testcontainers' default) gives up
    # durability anyway; skip initdb's final sync too (~1.5 s of start-up).
    for arg in "$@"; do
        case "$arg" in
        *fsync=off | *fsync=false | *fsync=0 | *fsync=no) initdb_args+=(--no-sync) && break ;;
        esac
    done
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is meant to be split
    if [ -n "$POSTGRES_PASSWORD" ]; then
        # Through a pipe, so the password appears neither in argv nor on disk.
        # (The <(...) must sit on initdb's own command line: bash closes it
        # when the command that created it ends.) With --auth-host=scram-sha-256,
        # PostgreSQL 13's initdb also sets password_encryption = scram-sha-256,
        # so the stored hash is SCRAM there too.
        initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
    else
        initdb "${initdb_args[@]}" $POSTGRES_INITDB_ARGS
    fi

    # Trust on the local socket (used below and by `docker exec psql`),
    # password auth for TCP from anywhere: clients come in via docker's NAT.
    cat >"$PGDATA/pg_hba.conf" <<EOF
# TYPE  DATABASE     USER  ADDRESS  METHOD   (written by docker-entrypoint.sh)
local   all          all            trust
local   replication  all            trust
host    all          all   all      $POSTGRES_HOST_AUTH_METHOD
host    replication  all   all      $POSTGRES_HOST_AUTH_METHOD
EOF
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    # Temporary server: unix socket only (nobody can connect over TCP before
    # the setup is done) and no log file, so its log goes to our stdout.
    temp_opts=("$@" -c listen_addresses= -p 5432)
    pg_ctl -D "$PGDATA" -w -t 120 -o "$(printf '%q ' "${temp_opts[@]}")" start

    psql_run=(psql -v ON_ERROR_STOP=1 --no-psqlrc --host "$SOCKET_DIR" --port 5432
        --username "$POSTGRES_USER")
    if [ "$POSTGRES_DB" != postgres ]; then
        # :"db" makes psql quote the name as an identifier.
        "${psql_run[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi

    # Init scripts, in name order, against $POSTGRES_DB (like the official image).
    export PGHOST="$SOCKET_DIR" PGPORT=5432 PGUSER="$POSTGRES_USER" PGDATABASE="$POSTGRES_DB"
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
        *.sql)
            say "running $f"
            "${psql_run[@]}" --dbname "$POSTGRES_DB" -f "$f"
            ;;
        *.sql.gz)
            say "running $f"
            gzip -dc "$f" | "${psql_run[@]}" --dbname "$POSTGRES_DB"
            ;;
        *.sh)
            say "running $f"
            bash "$f"
            ;;
        *) say "ignoring $f (not .sql, .sql.gz or .sh)" ;;
        esac
    done
    shopt -u nullglob
    unset PGHOST PGPORT PGUSER PGDATABASE

    pg_ctl -D "$PGDATA" -m fast -w -t 120 stop
    say "initialisation complete; starting the server"
fi

# The real server: PID 1, logs to stderr, listens on all addresses (postgresql.conf).
exec postgres "$@"
