# Spark standalone master / worker / history server / Spark Connect server: the official Apache Spark
# image at the same release as the pinned pyspark, plus what the Python workers of the jobs import
# (numpy, pandas, pyarrow, and music_recsys itself: spark-submit jobs also bring it as --py-files, but
# a Spark Connect server's workers need it installed).
# PySpark needs the same Python minor version on the driver (the Airflow image, PYTHON_VERSION
# there) and on these workers: check `python3 --version` in this image when you change either.
ARG SPARK_IMAGE=apache/spark:4.2.0-scala2.13-java17-python3-ubuntu
FROM ${SPARK_IMAGE}

USER root
# Native BLAS/LAPACK for the ALS fits that executors and the Spark Connect server run: Spark's netlib
# loads libblas.so.3 / liblapack.so.3, which this package provides (docs/benchmarks.md, "Native BLAS").
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas0-pthread \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY requirements.txt constraints.txt /opt/recsys/
RUN python3 -m pip install --no-cache-dir \
      "$(grep -E '^numpy' /opt/recsys/constraints.txt)" \
      "$(grep -E '^pandas' /opt/recsys/constraints.txt)" \
      "$(grep -E '^pyarrow' /opt/recsys/constraints.txt)"
COPY pyproject.toml /opt/recsys/
COPY music_recsys /opt/recsys/music_recsys
RUN python3 -m pip install --no-cache-dir --no-deps /opt/recsys
USER spark
