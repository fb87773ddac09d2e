"""The installed pyspark's Python files and jars are the same Spark release (pyspark-client trap)."""

from __future__ import annotations

import pyspark

from music_recsys.pipeline.install_check import check_spark_versions, spark_jar_version


def test_pyspark_python_matches_the_jars():
    assert pyspark.__version__ == spark_jar_version()
    assert check_spark_versions().startswith("4.")


def test_pandas_is_below_3_for_pyspark():
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3
