#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
# the roles docs/deployment.md ("PostgreSQL") asks for. The service connects as a role that is
# not the owner, not a superuser and has no BYPASSRLS, so row-level security binds it; Heimdex
# refuses to start in production otherwise.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$DB_OWNER_PASSWORD" \
    -v app_password="$DB_APP_PASSWORD" <<'SQL'
CREATE ROLE heimdex_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
    PASSWORD :'owner_password';
CREATE DATABASE heimdex OWNER heimdex_owner;
CREATE ROLE heimdex_app NOLOGIN;
CREATE ROLE heimdex LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE IN ROLE heimdex_app
    PASSWORD :'app_password';
SQL
