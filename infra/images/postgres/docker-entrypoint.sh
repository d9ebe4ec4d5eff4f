#!/bin/sh
# Initialise the cluster on first start (password from a file, never the environment), then run
# PostgreSQL in the foreground. Same variables as the official image's entrypoint.
set -eu

: "${PGDATA:?PGDATA must be set}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
        echo "docker-entrypoint: POSTGRES_PASSWORD_FILE must name a readable file" >&2
        exit 1
    fi
    install -d -m 0700 "$PGDATA"
    initdb --username="$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" \
           --auth-local=scram-sha-256 --auth-host=scram-sha-256 \
           --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/var/run/postgresql'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != "postgres" ]; then
        PGPASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")" ; export PGPASSWORD
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
             -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" >/dev/null
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
        unset PGPASSWORD
    fi
    echo "docker-entrypoint: initialised database $POSTGRES_DB for $POSTGRES_USER"
fi

exec postgres -D "$PGDATA"
