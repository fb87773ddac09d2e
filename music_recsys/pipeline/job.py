"""What every Spark job in ``jobs/`` shares: how it runs, and how a failure is told to the task.

A job module defines ``run(spark, ..., result)`` (writes its JSON result at ``result``) and
``parse_args(argv)``, and ends with ``if __name__ == "__main__": job.main(run, parse_args)``. The same
``run`` is called under spark-submit (``main``) and in the task process against a Spark Connect session
(``SparkJobOperator``), through ``execute``.

A failure caused by the job's input or params (``InputError``: too many invalid rows, missing columns,
no training rows after a transform) cannot succeed on a retry. ``execute`` writes it into the result
file as ``{"status": "failed", "retryable": false, ...}``, which the operator turns into a task failure
without retries; any other exception (a killed executor, a lost server) keeps the task's retries.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from music_recsys.errors import InputError
from music_recsys.run_folders import write_json

__all__ = ["InputError", "execute", "failure_result", "load_job", "main"]


def failure_result(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "failed",
        "retryable": not isinstance(exc, InputError),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
    }


def execute(run: Callable[..., dict], spark: Any, kwargs: dict[str, Any]) -> dict:
    """``run(spark, **kwargs)``; on an ``InputError`` the result file says the failure is not retryable."""
    try:
        return run(spark, **kwargs)
    except InputError as exc:
        write_json(kwargs["result"], failure_result(exc))
        raise


def main(run: Callable[..., dict], parse_args: Callable[[list[str] | None], argparse.Namespace]) -> None:
    """Command-line entry of a job: parse, run in the session spark-submit made (or a local one), stop."""
    from music_recsys.pipeline.spark import get_spark

    kwargs = vars(parse_args(None))
    spark = get_spark(f"music_recsys.{Path(sys.argv[0]).stem}")
    try:
        execute(run, spark, kwargs)
    except InputError as exc:
        # One line a person can act on, not a traceback; the exit status fails the spark-submit.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        spark.stop()


def load_job(application: str | Path) -> ModuleType:
    """Import a ``jobs/*.py`` application as a module; its functions pickle by value for Spark workers."""
    from pyspark import cloudpickle

    path = Path(application)
    spec = importlib.util.spec_from_file_location(f"music_recsys_jobs_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{application}: not a Python job file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)  # a Spark Connect server cannot import it by name
    return module
