"""``make demo`` (``python -m harness.demo``): a small MSD-like data set, the whole DAG, one served request.

Embedded default: Spark ``local[*]`` through spark-submit, results and the model registry in SQLite under
the data root, Airflow's own SQLite metadata DB under ``AIRFLOW_HOME``; ``airflow dags test`` runs every
task in one process. Then the champion is served on a free local port and asked for one user's
recommendations, and the answer is printed with the request that produced it. Runs from a checkout
(it needs the repository's ``dags/`` and ``jobs/``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from music_recsys.data.generate import GeneratorConfig

REPO = Path(__file__).resolve().parents[1]
# The demo's data set is the generator's default size (``music-recsys generate`` without size flags).
DEMO_USERS, DEMO_ITEMS = GeneratorConfig.users, GeneratorConfig.items

# A grid small enough for a few minutes on two cores, still showing every stage and both transforms;
# four grid points per fit task: two mapped fit tasks, each one Spark start for four fits.
DEMO_CONF = {
    "train_path": "msd_like/train.parquet",
    "validation_path": "msd_like/validation.parquet",
    "test_path": "msd_like/test.parquet",
    "ranks": [10, 20],
    "reg_params": [0.1],
    "alphas": [1.0, 10.0],
    "transforms": ["none", "log1p"],
    "k": 100,
    "annoy_trees": [1, 5, 10],
    "annoy_search_k": [10, 100, 1000, 10000],
    "fits_per_task": 4,
}


def demo_env() -> dict[str, str]:
    """An embedded Airflow: metadata DB and data under this checkout, its DAGs, local Spark."""
    env = dict(os.environ)
    env.setdefault("RECSYS_DATA_ROOT", str(REPO / "data"))
    env.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[*]"}))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def demo_data(root: Path, users: int = DEMO_USERS, items: int = DEMO_ITEMS) -> Path:
    """The demo's MSD-like data set under ``root``, generated unless it is there already."""
    data = root / "msd_like"
    if not (data / "manifest.json").exists():
        print(f"generating an MSD-like data set ({users} users, {items} tracks) in {data}")
        from music_recsys.data import generate

        generate.main(out=str(data), users=users, items=items)
    return data


def airflow(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "airflow"), *args], env=env, **kwargs)


def run_dag(conf: dict, env: dict[str, str], log_path: Path) -> Path:
    """``airflow dags test`` with ``conf`` at a fresh logical date; the run's directory."""
    logical_date = datetime.now(UTC).replace(microsecond=0)
    with open(log_path, "w") as log:
        child = airflow(
            "dags", "test", "music_recsys", logical_date.isoformat(), "-c", json.dumps(conf), env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    # The run is the one whose plan has this logical date (prepare records it).
    mine = [
        plan.parent
        for plan in (Path(env["RECSYS_DATA_ROOT"]) / "runs").glob("*/plan.json")
        if datetime.fromisoformat(json.loads(plan.read_text())["logical_date"]) == logical_date
    ]
    if child.returncode != 0 or len(mine) != 1 or not (mine[0] / "report" / "summary.json").exists():
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"the DAG run failed; the end of {log_path}:\n{tail}")
    return mine[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(env: dict[str, str], summary: dict) -> str:
    """Serve the champion on a free port, ask for one validation user's top 5, stop the server."""
    import pyarrow.parquet as pq

    user = pq.read_table(Path(summary["run_dir"]) / "ingest" / "validation", columns=["user_id"])["user_id"][0]
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "music-recsys"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/users/{user}/recommendations?k=5"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    return f"(the API did not come up on port {port}; try `make serve`)"
                time.sleep(0.3)
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
    finally:
        server.terminate()
        server.wait(timeout=10)
    items = "\n".join(f"    {i['track_id']}  {i['score']:.4f}" for i in answer["items"])
    return f"$ curl '{url}'\n  model {answer['model_version']}, user {answer['user_id']}:\n{items}"


def print_summary(summary: dict, seconds: float, request: str) -> None:
    bv, pv, bt = summary["best_validation"], summary["popularity_validation"], summary["best_test"]
    op, model = summary["fast_search"], summary["model"]
    print("\n" + "=" * 72)
    print(f"music-recsys demo: the DAG finished in {seconds:.0f} s — run {summary['run_id']}")
    print(f"best grid point: {summary['best_trial_id']} (by validation {summary['selection_metric']})")
    print(f"  validation MAP {bv['map']:.4f}  NDCG@k {bv['ndcg_at_k']:.4f}  MPR {bv['mpr']:.4f}")
    print(f"  popularity MAP {pv['map']:.4f}  ({bv['map'] / pv['map']:.2f}x)  MPR {pv['mpr']:.4f}")
    if bt:
        print(f"  test MAP {bt['map']:.4f}  (popularity {summary['popularity_test']['map']:.4f})")
    if op.get("found"):
        print(
            f"Annoy at recall@{op['k']} >= {op['target_recall']}: {op['metric']} {op['n_trees']} trees "
            f"search_k {op['search_k']} ({op['candidates']} candidates): recall {op['recall']:.3f}, "
            f"{op['speedup_vs_exact']:.2f}x exact single-query ({op['exact_qps']:.0f} q/s)"
        )
    else:
        print(f"Annoy: {op['message']}; exact single-query {op['exact_qps']:.0f} q/s")
    print(f"model {model['version']}: {model['status']} — {model['reason']}")
    print(f"artifacts: {summary['run_dir']}")
    print(f"report:    {summary['report']}")
    for plot in summary["plots"]:
        print(f"plot:      {plot}")
    recorded = summary["recorded"]
    print(
        f"results:   {recorded['store']} "
        f"(als_trials {recorded['als_trials']} rows, ann_trials {recorded['ann_trials']})"
    )
    print(f"bundle:    {model['path']}")
    print(request)
    print("serve it:  make serve   (or: .venv/bin/music-recsys serve --port 8000)")
    print("=" * 72)


def main(users: int = DEMO_USERS, items: int = DEMO_ITEMS) -> int:
    env = demo_env()
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    demo_data(root, users, items)
    print(f"preparing Airflow's metadata DB in {env['AIRFLOW_HOME']}")
    airflow("db", "migrate", env=env, check=True, stdout=subprocess.DEVNULL)
    log_path = root / "demo.log"
    grid = 1
    for key in ("ranks", "reg_params", "alphas", "transforms"):
        grid *= len(DEMO_CONF[key])
    print(f"running DAG music_recsys ({grid} grid points, Spark local[*]); task logs: {log_path}")
    started = time.perf_counter()
    try:
        run = run_dag(DEMO_CONF, env, log_path)
    except RuntimeError as exc:
        print(exc)
        return 1
    seconds = time.perf_counter() - started
    summary = json.loads((run / "report" / "summary.json").read_text())
    print_summary(summary, seconds, one_request(env, summary))
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=DEMO_USERS, help="users in the generated data set")
    parser.add_argument("--items", type=int, default=DEMO_ITEMS, help="tracks in the generated data set")
    raise SystemExit(main(**vars(parser.parse_args())))
