"""Real data: MovieLens-100K (ratings as a play-count proxy) through the whole DAG; ALS vs popularity.

MovieLens-100K ships inside the ``recbole`` wheel on PyPI; this script fetches the wheel without its
dependencies (``pip download --no-deps``), converts ``ml-100k.inter`` to the study's schema (user_id,
count = rating 1..5, track_id = item), splits it the study's way (hold-out users half validation, half
test, each keeping part of its history in train), runs DAG ``music_recsys`` on it once per
``--nonnegative`` setting (the NNLS solves of the study, or Spark's unconstrained default) and appends the
figures to ``bench/RESULTS.md``: MAP, MPR, graded NDCG and coverage of the best point and of popularity.

    .venv/bin/python bench/movielens.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.results import append_section  # noqa: E402
from harness.airflow import run_dag_summary  # noqa: E402
from harness.demo import demo_env  # noqa: E402
from music_recsys import constants as C  # noqa: E402
from music_recsys.data.sampling import assign_splits  # noqa: E402
from music_recsys.data.writers import write_split  # noqa: E402

RECBOLE = "recbole==1.2.1"
INTER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def fetch_ml100k(cache: Path) -> list[str]:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("recbole-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), RECBOLE], check=True
        )
        wheels = sorted(cache.glob("recbole-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read(INTER).decode("utf-8").splitlines()


def ml100k_splits(lines: list[str], holdout_users: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``ml-100k.inter`` in the study's schema (count = rating), split the study's way: columns per split."""
    header = lines[0].split("\t")
    assert header[:3] == ["user_id:token", "item_id:token", "rating:float"], header
    rows = [line.split("\t") for line in lines[1:] if line]
    users = np.array([r[0] for r in rows])
    items = np.array([r[1] for r in rows])
    ratings = np.array([int(float(r[2])) for r in rows], dtype=np.int64)
    user_names, user_of_row = np.unique(users, return_inverse=True)
    split = assign_splits(user_of_row, len(user_names), holdout_users, 0.5, np.random.default_rng(seed))
    return {
        name: {C.USER_ID: users[split == code], C.COUNT: ratings[split == code], C.TRACK_ID: items[split == code]}
        for code, name in enumerate(C.SPLITS)
    }


def convert(lines: list[str], out: Path, holdout_users: int, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for name, columns in ml100k_splits(lines, holdout_users, seed).items():
        write_split(columns, out / name, "parquet")
        stats[name] = {"rows": len(columns[C.USER_ID]), "users": int(len(np.unique(columns[C.USER_ID])))}
    return stats


def main(
    ranks: list[int],
    reg_params: list[float],
    alphas: list[float],
    k: int,
    seed: int,
    nonnegative: list[str],
    write: bool,
) -> None:
    env = demo_env()
    os.environ.update(env)
    root = Path(env["RECSYS_DATA_ROOT"])
    stats = convert(fetch_ml100k(root / "cache"), root / "movielens", holdout_users=200, seed=seed)
    print(json.dumps(stats))
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    lines, run_ids = [], []
    for setting in nonnegative:
        conf = {
            "train_path": "movielens/train.parquet",
            "validation_path": "movielens/validation.parquet",
            "test_path": "movielens/test.parquet",
            "ranks": ranks,
            "reg_params": reg_params,
            "alphas": alphas,
            "transforms": ["none", "log1p"],
            "k": k,
            "seed": seed,
            "nonnegative": setting == "true",
            "annoy_trees": [1, 5, 10],
            "annoy_search_k": [100, 1000, 10000],
            "on_data_drift": "warn",  # the same data twice is no drift; a first run has nothing to compare
            "promote": False,
        }
        summary = run_dag_summary(conf)
        run_ids.append(summary["run_id"])
        bv, pv = summary["best_validation"], summary["popularity_validation"]
        bt, pt = summary["best_test"], summary["popularity_test"]
        lines.append(
            f"| {setting} | {summary['best_trial_id']} | {bv['map']:.4f} | {pv['map']:.4f} | "
            f"{bv['map'] / pv['map']:.2f}x | {bt['map']:.4f} | {pt['map']:.4f} | {bt['map'] / pt['map']:.2f}x | "
            f"{bt['mpr']:.4f} / {pt['mpr']:.4f} | {bt['ndcg_graded_at_k']:.4f} / {pt['ndcg_graded_at_k']:.4f} | "
            f"{bt['coverage_at_k']:.3f} / {pt['coverage_at_k']:.3f} |"
        )
        print(lines[-1], flush=True)
    table = (
        "| nonnegative | best point | val MAP | popularity val MAP | ratio | test MAP | popularity test MAP | ratio | "
        "test MPR best / popularity | test graded NDCG@k best / popularity | test coverage@k best / popularity |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(lines)
    )
    print(table)
    if write:
        append_section(
            "Real data: best ALS vs popularity",
            f"MovieLens-100K, train / validation / test rows {stats['train']['rows']:,} / "
            f"{stats['validation']['rows']:,} / {stats['test']['rows']:,}; DAG runs {', '.join(run_ids)}; "
            f"grid ranks {ranks} × regParam {reg_params} × alpha {alphas} × transforms [none, log1p]; "
            f"k = {k}; played items excluded; ratings used as counts; best point by validation MAP.\n\n" + table + "\n",
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[10, 20], help="ALS ranks")
    p.add_argument("--reg-params", type=float, nargs="+", default=[0.1, 1.0], help="ALS regParam values")
    p.add_argument("--alphas", type=float, nargs="+", default=[1.0, 10.0], help="ALS alpha values")
    p.add_argument("--k", type=int, default=100, help="recommendations per user")
    p.add_argument("--seed", type=int, default=0, help="split and model seed")
    p.add_argument(
        "--nonnegative",
        nargs="+",
        choices=["true", "false"],
        default=["true", "false"],
        help="ALS solves to run: NNLS (true) and/or unconstrained (false)",
    )
    p.add_argument("--no-write", dest="write", action="store_false", help="do not append to bench/RESULTS.md")
    main(**vars(p.parse_args()))
