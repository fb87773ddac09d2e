#!/usr/bin/env bash
# Runs once, when the results database is first created (postgres image: /docker-entrypoint-initdb.d):
# the login roles the serving API and the UI read the store with. Their grants are given by
# `music-recsys db grant` in airflow-init, after `music-recsys db upgrade` has made the tables
# (docs/results-store.md, "Read-only roles").
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE recsys_reader LOGIN PASSWORD '${RECSYS_RESULTS_READER_PASSWORD}';
CREATE ROLE recsys_ui LOGIN PASSWORD '${RECSYS_RESULTS_UI_PASSWORD}';
SQL
