"""docker-compose.yaml is honest: no Docker engine here, so the file is validated instead.

Compose itself (Debian's docker-compose, which needs no engine for ``config``) checks it against the
Compose specification and resolves every reference; on top of that: every referenced service, volume,
build file and mounted folder exists; images are pinned to the versions this project pins; Spark is
reached in client mode; no secret is hard-coded beyond the documented local defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def _compose_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            raise RuntimeError("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
        pytest.skip("Debian's docker-compose is not installed")
    return subprocess.run(
        [tool, "-f", str(path), "--env-file", str(REPO / ".env.example"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_compose_validates_the_file(compose):
    out = _compose_config(REPO / "docker-compose.yaml")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    # Values from the env file are substituted (none of the in-file fallbacks is used for them).
    scheduler = resolved["services"]["airflow-scheduler"]["environment"]
    assert "change-me" in scheduler["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # The env file leaves the Spark connection empty: spark-submit in client mode.
    assert scheduler["AIRFLOW_CONN_SPARK_DEFAULT"] == "spark://spark-master:7077?deploy-mode=client"


def test_one_variable_switches_every_stage_to_spark_connect():
    out = _compose_config(
        REPO / "docker-compose.yaml", {"RECSYS_SPARK_CONNECTION": "spark-connect://spark-connect:15002"}
    )
    assert out.returncode == 0, out.stderr
    uri = yaml.safe_load(out.stdout)["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"]
    from airflow.sdk import Connection

    connection = Connection.from_uri(uri, conn_id="spark_default")
    assert (connection.conn_type, connection.host, connection.port) == ("spark_connect", "spark-connect", 15002)


def _unknown_option(spec: dict) -> None:
    spec["services"]["postgres"]["restartt"] = "always"


def _dangling_dependency(spec: dict) -> None:
    spec["services"]["airflow-scheduler"]["depends_on"] = {"no-such-service": {"condition": "service_healthy"}}


@pytest.mark.parametrize(
    ("break_it", "message"), [(_unknown_option, "restartt"), (_dangling_dependency, "no-such-service")]
)
def test_compose_rejects_a_broken_file(break_it, message):
    """The validator is not a rubber stamp."""
    broken = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    break_it(broken)
    path = REPO / f".compose-broken-{os.getpid()}.yaml"  # same folder: build contexts must still resolve
    try:
        path.write_text(yaml.safe_dump(broken))
        out = _compose_config(path)
    finally:
        path.unlink(missing_ok=True)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def test_services_present(compose):
    services = set(compose["services"])
    assert {
        "postgres",
        "results-db",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "spark-master",
        "spark-worker",
        "spark-history",
        "spark-connect",
        "recsys-api",
    } <= services


def test_every_reference_is_defined(compose):
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on undefined service {dep}"
        for volume in service.get("volumes") or []:
            # "${VAR:-./default}:/target" or "./folder:/target" or "named:/target"
            source = volume[: volume.index("}") + 1] if volume.startswith("${") else volume.split(":")[0]
            if source.startswith(("./", "${")):
                folder = re.sub(r"\$\{[^:}]+:-([^}]+)\}", r"\1", source)
                # ./data is made by `make demo` or by the user; everything else ships with the repo.
                assert (REPO / folder).exists() or folder == "./data", f"{name} mounts missing {folder}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file()


def test_images_match_pinned_versions(compose):
    pins = _pins()
    airflow_dockerfile = (REPO / "docker/airflow.Dockerfile").read_text()
    assert f"ARG AIRFLOW_VERSION={pins['apache-airflow']}" in airflow_dockerfile
    spark_dockerfile = (REPO / "docker/spark.Dockerfile").read_text()
    assert f"apache/spark:{pins['pyspark']}-" in spark_dockerfile
    assert compose["services"]["spark-master"]["image"].endswith(pins["pyspark"])


def _apt_installs(dockerfile: Path) -> set[str]:
    """Packages the image's ``apt-get install`` steps name (continuation lines joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    packages = set()
    for command in re.findall(r"apt-get install ([^&\n]+)", text):
        packages |= {word for word in command.split() if not word.startswith("-")}
    return packages


def test_both_images_have_native_blas_for_spark_als():
    # ALS runs in the driver (Airflow image, client mode) and in executors / the Connect server (Spark image).
    for name in ("airflow", "spark"):
        assert "libopenblas0-pthread" in _apt_installs(REPO / f"docker/{name}.Dockerfile"), name
    assert "openjdk-17-jre-headless" in _apt_installs(REPO / "docker/airflow.Dockerfile")  # the parse works


def test_airflow_reaches_spark_in_client_mode_and_the_results_db(compose):
    env = compose["x-airflow-common"]["environment"]
    assert (
        env["AIRFLOW_CONN_SPARK_DEFAULT"] == "${RECSYS_SPARK_CONNECTION:-spark://spark-master:7077?deploy-mode=client}"
    )
    assert "@results-db:5432/recsys" in env["AIRFLOW_CONN_RECSYS_RESULTS"]
    assert env["RECSYS_SPARK_DRIVER_HOST"] == compose["services"]["airflow-scheduler"]["hostname"]
    worker = compose["services"]["spark-worker"]["command"]
    assert "spark://spark-master:7077" in worker


def _environments(compose: dict):
    yield compose["x-airflow-common"]["environment"]
    for service in compose["services"].values():
        env = service.get("environment")
        if isinstance(env, dict):
            yield env


def test_secrets_come_from_env_file(compose):
    for env in _environments(compose):
        for key, value in env.items():
            value = str(value)
            if "PASSWORD" in key or "FERNET" in key:
                assert value.startswith("${"), f"hard-coded secret in {key}"
            for password in re.findall(r"://[^:/@]+:([^@]+)@", value):
                assert password.startswith("${"), f"hard-coded password in {key}"
    example = (REPO / ".env.example").read_text()
    for var in ("AIRFLOW_METADATA_PASSWORD", "RECSYS_RESULTS_PASSWORD", "_AIRFLOW_WWW_USER_PASSWORD"):
        assert var in example
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_spark_connect_server_runs_on_the_cluster_with_the_package(compose):
    connect = compose["services"]["spark-connect"]
    command = connect["command"]
    assert command[command.index("--class") + 1] == "org.apache.spark.sql.connect.service.SparkConnectServer"
    assert command[command.index("--master") + 1] == "spark://spark-master:7077"
    assert "spark.connect.grpc.binding.port=15002" in command and any("spark.checkpoint.dir=" in c for c in command)
    dockerfile = (REPO / "docker/spark.Dockerfile").read_text()
    assert "COPY music_recsys /opt/recsys/music_recsys" in dockerfile  # what the Connect server's UDFs import


def test_the_api_serves_the_registry_champion_with_a_healthcheck(compose):
    api = compose["services"]["recsys-api"]
    assert api["command"][:2] == ["music-recsys", "serve"] and "8000:8000" in api["ports"]
    assert api["healthcheck"]["test"][-1] == "http://localhost:8000/healthz"
    assert "@results-db:5432/recsys" in api["environment"]["AIRFLOW_CONN_RECSYS_RESULTS"]
    assert api["environment"]["RECSYS_DATA_ROOT"] == "/opt/recsys/data"
    assert any(v.endswith(":/opt/recsys/data:ro") for v in api["volumes"])  # reads bundles, writes nothing


def test_one_step_owns_the_schema_and_readers_use_read_only_roles(compose):
    """airflow-init migrates the results store before anything else starts and grants the read-only roles;
    the API reads as recsys_reader (SELECT only) and the UI plugin as recsys_ui; only the tasks write."""
    init = compose["services"]["airflow-init"]["command"][-1]
    steps = [line.strip() for line in init.splitlines() if line.strip().startswith("music-recsys")]
    assert steps == [
        "music-recsys db upgrade",
        "music-recsys db grant recsys_reader",
        "music-recsys db grant recsys_ui --promotes",
    ]
    api = compose["services"]["recsys-api"]["environment"]["AIRFLOW_CONN_RECSYS_RESULTS"]
    ui = compose["services"]["airflow-apiserver"]["environment"]["AIRFLOW_CONN_RECSYS_RESULTS"]
    tasks = compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_RECSYS_RESULTS"]
    assert api.startswith("postgres://recsys_reader:") and ui.startswith("postgres://recsys_ui:")
    assert tasks.startswith("postgres://recsys:")
    for service in ("recsys-api", "airflow-apiserver", "airflow-scheduler"):
        assert (
            compose["services"][service]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        )
    roles = (REPO / "docker" / "results-db-roles.sh").read_text()
    assert "CREATE ROLE recsys_reader LOGIN" in roles and "CREATE ROLE recsys_ui LOGIN" in roles
    volume = "./docker/results-db-roles.sh:/docker-entrypoint-initdb.d/10-recsys-roles.sh:ro"
    assert volume in compose["services"]["results-db"]["volumes"]
