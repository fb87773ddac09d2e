# Airflow image for music-recsys: the official Airflow 3 image plus Java (spark-submit runs the Spark
# driver in client mode inside the Airflow worker) and this project's pinned requirements.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

USER root
# libopenblas0-pthread: the libblas.so.3 / liblapack.so.3 Spark's netlib loads for the ALS fits of the
# drivers run here (docs/benchmarks.md, "Native BLAS"); without it Spark falls back to its Java BLAS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps libopenblas0-pthread \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt /opt/recsys/
RUN pip install --no-cache-dir -r /opt/recsys/requirements.txt -c /opt/recsys/constraints.txt
COPY --chown=airflow:root pyproject.toml /opt/recsys/
COPY --chown=airflow:root music_recsys /opt/recsys/music_recsys
RUN pip install --no-cache-dir --no-deps /opt/recsys \
 && cd /opt/recsys && python -m zipfile -c /opt/recsys/music_recsys.zip music_recsys \
 && python -m music_recsys.pipeline.install_check
