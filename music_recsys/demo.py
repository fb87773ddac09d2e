"""``make demo``: generate a small MSD-like data set and run the whole DAG on the embedded default.

Embedded default: Spark ``local[*]`` through spark-submit, results in SQLite under the data root,
Airflow's own SQLite metadata DB under ``AIRFLOW_HOME``; ``dag.test()`` runs every task in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A grid small enough for a few minutes on two cores, still showing every stage and both transforms.
DEMO_CONF = {
    "train_path": "msd_like/train.parquet",
    "validation_path": "msd_like/validation.parquet",
    "test_path": "msd_like/test.parquet",
    "ranks": [10, 20],
    "reg_params": [0.1],
    "alphas": [1.0, 10.0],
    "transforms": ["none", "log1p"],
    "k": 100,
    "sample_fraction": 1.0,
    "annoy_trees": [1, 5, 10],
    "annoy_search_k": [10, 100, 1000, 10000],
}


def airflow_env() -> dict[str, str]:
    """Environment for an embedded Airflow: local metadata DB, this repo's DAGs, local Spark."""
    env = dict(os.environ)
    env.setdefault("RECSYS_DATA_ROOT", str(REPO / "data"))
    env.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[*]"}))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_dag(conf: dict, run_id_hint: str = "demo") -> dict:
    """Run DAG music_recsys once with ``conf`` in this process; return the report summary."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("music_recsys")
    dagrun = dag.test(run_conf=conf)
    if str(dagrun.state) not in ("success", "DagRunState.SUCCESS"):
        raise RuntimeError(f"DAG run {dagrun.run_id} ended {dagrun.state}; see the task logs above")
    from music_recsys.config import run_dir

    summary_path = run_dir(dagrun.run_id) / "report" / "summary.json"
    return json.loads(summary_path.read_text())


def print_summary(summary: dict, seconds: float) -> None:
    bv, pv, bt = summary["best_validation"], summary["popularity_validation"], summary["best_test"]
    op = summary["fast_search"]
    print("\n" + "=" * 72)
    print(f"music-recsys demo finished in {seconds:.0f} s — run {summary['run_id']}")
    print(f"best grid point: {summary['best_trial_id']}")
    print(f"  validation MAP {bv['map']:.4f}  precision@k {bv['precision_at_k']:.4f}  NDCG@k {bv['ndcg_at_k']:.4f}")
    print(f"  popularity MAP {pv['map']:.4f}  ({bv['map'] / pv['map']:.2f}x)" if pv["map"] else "")
    if bt:
        print(f"  test MAP {bt['map']:.4f}  (popularity {summary['popularity_test']['map']:.4f})")
    if op.get("found"):
        print(
            f"Annoy at recall@{op['k']} >= {op['target_recall']}: {op['metric']} {op['n_trees']} trees "
            f"search_k {op['search_k']} ({op['candidates']} candidates): recall {op['recall']:.3f}, "
            f"p50 {op['p50_ms']:.3f} ms, "
            f"{op['speedup_vs_exact']:.2f}x exact single-query ({op['exact_qps']:.0f} q/s)"
        )
    else:
        print(f"Annoy: {op['message']}; exact single-query {op['exact_qps']:.0f} q/s")
    print(f"artifacts: {summary['run_dir']}")
    print(f"report:    {summary['report']}")
    for plot in summary["plots"]:
        print(f"plot:      {plot}")
    print(
        f"results:   {summary['recorded']['store']} (tables als_trials, ann_trials; "
        f"{summary['recorded']['als_trials']} + {summary['recorded']['ann_trials']} rows)"
    )
    print("=" * 72)


def main(users: int, items: int, run_only: bool = False) -> int:
    env = airflow_env()
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    pointer = root / "demo_summary.json"
    if run_only:
        # Child process: run the DAG (its task logs go to the log file) and leave the summary behind.
        pointer.write_text(json.dumps(run_dag(DEMO_CONF), indent=2))
        return 0
    data = root / "msd_like"
    if not (data / "manifest.json").exists():
        print(f"generating an MSD-like data set ({users} users, {items} tracks) in {data}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "music_recsys.datagen",
                "--out",
                str(data),
                "--users",
                str(users),
                "--items",
                str(items),
            ],
            check=True,
            env=env,
        )
    print(f"preparing Airflow's metadata DB in {env['AIRFLOW_HOME']}")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    log_path = root / "demo.log"
    grid = 1
    for key in ("ranks", "reg_params", "alphas", "transforms"):
        grid *= len(DEMO_CONF[key])
    print(f"running DAG music_recsys ({grid} grid points, Spark local[*]); task logs: {log_path}")
    pointer.unlink(missing_ok=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.run(
            [sys.executable, "-m", "music_recsys.demo", "--run-only"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if child.returncode != 0 or not pointer.exists():
        print(f"the DAG run failed; the end of {log_path}:")
        print("".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:]))
        return 1
    print_summary(json.loads(pointer.read_text()), time.perf_counter() - started)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=3000, help="users in the generated data set")
    p.add_argument("--items", type=int, default=1500, help="tracks in the generated data set")
    p.add_argument("--run-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main(**vars(parse_args())))
