"""The harness's ``dag.test`` runs: its idle waits are short, nobody else's sleep is touched."""

from __future__ import annotations

import time
import types

from harness.airflow import DAG_TEST_MODULE, quick_polls


def _sleeper(module_name: str):
    """A function whose module is ``module_name`` and that sleeps one second, as dag.test's loop does."""
    module = types.ModuleType(module_name)
    exec("import time\ndef wait():\n    time.sleep(1)\n", module.__dict__)
    return module.wait


def test_only_dag_tests_one_second_waits_are_shortened():
    dag_test_wait, other_wait = _sleeper(DAG_TEST_MODULE), _sleeper("somebody.else")
    real = time.sleep
    with quick_polls(0.01):
        started = time.monotonic()
        dag_test_wait()
        shortened = time.monotonic() - started
        started = time.monotonic()
        other_wait()
        untouched = time.monotonic() - started
    assert shortened < 0.5 and untouched >= 1.0
    assert time.sleep is real  # restored on the way out


def test_dag_tests_loop_lives_where_the_harness_looks():
    import inspect

    from airflow.sdk.definitions import dag

    assert dag.__name__ == DAG_TEST_MODULE and "time.sleep(1)" in inspect.getsource(dag.DAG.test)
