"""``music-recsys``: the commands a user runs by hand.

music-recsys generate --out DIR   MSD-like play counts (parquet, MSD TSV or CSV); --preset study: the study's size
music-recsys serve                the champion of the model registry over HTTP
music-recsys models [list]        the model registry; `models promote VERSION` rolls back or forward
music-recsys db upgrade           create or migrate the results store's schema (the one step that changes it)
music-recsys db grant ROLE        let a PostgreSQL role read the store (SELECT only; --promotes: the UI's role)
music-recsys params               the DAG's params (the README table, or --json for the schemas)
music-recsys recommendations export --version V --out FILE   a model's batch recommendations as CSV or parquet
music-recsys check-install        the installation: pyspark's Python files match its jars; which BLAS Spark's ALS gets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from music_recsys.data import generate

    try:
        manifest = generate.main(**{k: v for k, v in vars(args).items() if k not in ("command", "handler")})
    except ValueError as exc:  # a bad size or preset: the message names the flag and the fix
        print(f"music-recsys generate: {exc}", file=sys.stderr)
        return 2
    generate.print_manifest(manifest)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from music_recsys.serving.app import Settings, bundle_locator, create_app, registry_locator
    from music_recsys.serving.auth import read_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        token, source = read_token(args.token_file)  # the token itself is never printed
        if token is None and source != "none":
            logging.getLogger("music_recsys.serving").warning("%s: serving without a token", source)
        locate = bundle_locator(Path(args.bundle)) if args.bundle else registry_locator(args.results_url)
        settings = Settings(
            locate=locate,
            poll_seconds=args.poll_seconds,
            max_body_bytes=args.max_body_bytes,
            body_timeout_seconds=args.body_timeout_seconds,
            token=token,
            access_log=args.access_log,
        ).validate()
    except ValueError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    # uvicorn's own access line carries the raw path (user and track ids): the app writes its own
    # (music_recsys.serving.metrics), by route template.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=args.graceful_seconds,
    )
    return 0


def _db(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from music_recsys.store import schema
    from music_recsys.store.engine import connect_engine
    from music_recsys.store.results import results_url

    url = args.results_url or results_url()
    where = sa.engine.make_url(url).render_as_string(hide_password=True)
    if args.action == "grant":
        if not args.role:
            print("db grant: name the ROLE to give read access to", file=sys.stderr)
            return 2
        statements = schema.reader_grants(args.role, promotes=args.promotes)
        engine = connect_engine(url)
        try:
            if engine.dialect.name != "postgresql":
                print(f"db grant: {where} is not PostgreSQL; roles and grants are PostgreSQL's", file=sys.stderr)
                return 2
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()
        print("\n".join(f"{statement};" for statement in statements))
        return 0
    if args.action == "upgrade":
        done = schema.upgrade(url)
        if done["before"] == done["after"]:
            print(f"results store {where}: at revision {done['after']} (the newest); nothing to do")
        else:
            print(f"results store {where}: upgraded from {done['before'] or 'nothing'} to {done['after']}")
        return 0
    engine = connect_engine(url)
    try:
        with engine.connect() as conn:
            found = schema.current(conn)
    finally:
        engine.dispose()
    head = schema.head()
    state = "the newest" if found == head else f"run `music-recsys db upgrade` for {head}"
    print(f"results store {where}: revision {found or 'none'} ({state})")
    return 0 if found == head else 1


def _models(args: argparse.Namespace) -> int:
    from music_recsys.store import registry
    from music_recsys.store.results import ResultsStore, results_url
    from music_recsys.store.schema import SchemaError

    try:
        store = ResultsStore(args.results_url or results_url())
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with store:
        if args.action == "promote":
            if not args.version:
                print("models promote: name the VERSION to make champion", file=sys.stderr)
                return 2
            before = registry.get(store, args.version)
            try:
                row = registry.promote_manually(store, args.version, args.reason)
            except LookupError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"{row['model_version']} is champion ({row['reason']})")
            if before and before["status"] == registry.AWAITING:
                print(
                    f"note: run {before['run_id']} still asks for this model's approval in Airflow's Required "
                    "Actions; the answer (or its timeout) now changes nothing, and the run's approve_model task "
                    "ends without an error"
                )
            return 0
        rows = registry.all_models(store)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no models registered yet (a DAG run's publish task registers one)")
        return 0
    print(
        f"{'version':<24} {'status':<17} {'k':>5} {'test MAP':>9} {'popularity':>10} {'champion':>9}  "
        f"{'trial':<26} reason"
    )
    for r in rows:
        test_map = f"{r['test_map']:.4f}" if r["test_map"] is not None else "—"
        popularity = f"{r['popularity_test_map']:.4f}" if r["popularity_test_map"] is not None else "—"
        # The champion this model was decided against, re-scored on its data at its k.
        compared = f"{r['compared_test_map']:.4f}" if r.get("compared_test_map") is not None else "—"
        print(
            f"{r['model_version']:<24} {r['status']:<17} {r.get('k') or '—':>5} {test_map:>9} {popularity:>10} "
            f"{compared:>9}  {r['trial_id']:<26} {r['reason']}"
        )
    return 0


def _params(args: argparse.Namespace) -> int:
    from music_recsys.pipeline.config import RunConfig, params_markdown

    if args.json:
        specs = [
            {"name": s.name, "default": s.default, "section": s.section, "description": s.description, **s.schema}
            for s in RunConfig.param_specs()
        ]
        print(json.dumps(specs, indent=2))
    else:
        print(params_markdown())
    return 0


def _check_install(args: argparse.Namespace) -> int:
    from music_recsys.pipeline import install_check

    return install_check.main()


def _recommendations(args: argparse.Namespace) -> int:
    from music_recsys.store import recommendations

    try:
        done = recommendations.export_version(args.version, args.out, args.results_url)
    except recommendations.RecommendationsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{done['rows']:,} recommendations of model {done['version']} written to {done['path']} "
          f"({done['format']}, {done['bytes']:,} bytes)")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    from music_recsys.data import generate as generator

    parser = argparse.ArgumentParser(prog="music-recsys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate", help="generate MSD-like play counts", description=generator.__doc__.split("\n\n")[0]
    )
    generator.add_arguments(generate)
    generate.set_defaults(handler=_generate)

    from music_recsys.serving.limits import DEFAULT_BODY_TIMEOUT_SECONDS, DEFAULT_MAX_BODY_BYTES  # no FastAPI import

    serve = commands.add_parser("serve", help="serve the champion model over HTTP (FastAPI)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=8000, help="TCP port")
    serve.add_argument("--bundle", help="serve this bundle folder instead of the registry's champion")
    serve.add_argument(
        "--results-url", help="SQLAlchemy URL of the results store (default: the recsys_results connection)"
    )
    serve.add_argument(
        "--poll-seconds", type=float, default=10.0, help="how often to ask the registry for a new champion"
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no JSON access-log line per request (route, status, latency, version)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="larger request bodies are refused with 413 while they are read (default 1 MiB)",
    )
    serve.add_argument(
        "--body-timeout-seconds",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_SECONDS,
        help="a request body not received in full by then is refused with 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_SECONDS:g})",
    )
    serve.add_argument(
        "--token-file",
        help="require 'Authorization: Bearer <token>' with the token in this file (default: $RECSYS_API_TOKEN; "
        "neither = open)",
    )
    serve.add_argument(
        "--graceful-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, how long requests in flight may take to finish before the server stops",
    )
    serve.set_defaults(handler=_serve)

    models = commands.add_parser("models", help="the model registry")
    models.add_argument("action", nargs="?", choices=["list", "promote"], default="list")
    models.add_argument("version", nargs="?", help="with promote: the version to make champion")
    models.add_argument("--reason", default="promoted by hand (music-recsys models promote)", help="with promote")
    models.add_argument("--results-url", help="SQLAlchemy URL of the results store")
    models.add_argument("--json", action="store_true", help="every column, as JSON")
    models.set_defaults(handler=_models)

    db = commands.add_parser(
        "db",
        help="the results store's schema: `db upgrade` creates or migrates it (Alembic), `db current` shows it, "
        "`db grant ROLE` lets a role read it without changing it",
    )
    db.add_argument("action", choices=["upgrade", "current", "grant"])
    db.add_argument("role", nargs="?", help="with grant: the PostgreSQL role that may read (SELECT only)")
    db.add_argument(
        "--promotes", action="store_true", help="with grant: also UPDATE on models (the UI's promotions and roll-backs)"
    )
    db.add_argument(
        "--results-url", help="SQLAlchemy URL of the results store (default: the recsys_results connection)"
    )
    db.set_defaults(handler=_db)

    params = commands.add_parser("params", help="the DAG's params: defaults, allowed values, meaning")
    params.add_argument("--json", action="store_true", help="the JSON schemas instead of the table")
    params.set_defaults(handler=_params)

    check = commands.add_parser(
        "check-install",
        help="check the installation (pyspark Python files vs jars) and say which BLAS Spark's ALS gets",
    )
    check.set_defaults(handler=_check_install)

    recommendations = commands.add_parser(
        "recommendations", help="a model's batch recommendations (the DAG's batch_k): export for other teams"
    )
    recommendations.add_argument("action", choices=["export"])
    recommendations.add_argument("--version", required=True, help="the model version, or 'champion'")
    recommendations.add_argument("--out", required=True, help="file to write: .csv, .csv.gz or .parquet")
    recommendations.add_argument("--results-url", help="SQLAlchemy URL of the results store (the registry)")
    recommendations.set_defaults(handler=_recommendations)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
