"""The harness's ``dag.test`` runs: its idle waits are short, nobody else's sleep is touched."""

from __future__ import annotations

import time
import types

from harness.airflow import DAG_TEST_MODULE, quick_polls, remembered_param_checks


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


def test_a_param_check_that_passed_is_remembered_and_a_failing_one_always_runs():
    import jsonschema
    import pytest

    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "integer", "minimum": 1}
    real, calls = jsonschema.validate, []

    def counting(instance, schema, *args, **kwargs):
        calls.append(instance)
        return real(instance, schema, *args, **kwargs)

    jsonschema.validate = counting
    try:
        with remembered_param_checks():
            for _ in range(3):
                jsonschema.validate(5, schema)
                with pytest.raises(jsonschema.ValidationError, match="less than the minimum of 1"):
                    jsonschema.validate(0, schema)
            with pytest.raises(jsonschema.ValidationError):  # another schema is another check
                jsonschema.validate(5, {**schema, "minimum": 6})
            array = {"$schema": schema["$schema"], "type": "array"}
            jsonschema.validate([1], array)
            with pytest.raises(jsonschema.ValidationError):  # a tuple is not a JSON array, though it dumps as one
                jsonschema.validate((1,), array)
        assert jsonschema.validate is counting  # restored on the way out
    finally:
        jsonschema.validate = real
    assert calls == [5, 0, 0, 0, 5, [1], (1,)]


def test_airflow_checks_params_through_the_function_the_harness_remembers():
    import inspect

    from airflow.sdk.definitions.param import Param

    assert "from jsonschema import FormatChecker, validate" in inspect.getsource(Param.resolve)
