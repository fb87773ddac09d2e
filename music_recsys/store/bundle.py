"""A model bundle: everything the serving API needs from one run's best grid point, in one folder.

``$RECSYS_DATA_ROOT/models/<version>/`` holds the user and item factors (float32 ``.npy``), the user and
track ids in index order (the index job's StringIndexer labels), each user's tracks played in train (CSR:
``played_indptr.npy``, ``played_indices.npy``), train listeners per track (``popularity.npy``), an Annoy
index built at the run's measured serving operating point (when one reached the target recall), and
``model.json`` (the model card, with the size of every file). ``write_bundle`` builds it in a temporary
folder, verifies it, then renames it into place, so a half-written bundle is never visible; a bundle
already in place is kept only when its card's ``inputs`` digest matches (a re-run on changed inputs
writes it again). ``verify_bundle`` refuses a bundle whose files are missing, truncated or inconsistent;
``factor_model`` reads what re-scoring a model needs (``music_recsys.evaluation.rescore``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from music_recsys import constants as C
from music_recsys.run_folders import read_json, replace_folder

ARRAYS = ("user_factors", "item_factors", "played_indptr", "played_indices", "popularity")
LABEL_FILES = {"users": "users.parquet", "tracks": "tracks.parquet"}
ANNOY_FILE = "items.ann"
CARD = "model.json"


class BundleError(ValueError):
    """A bundle that cannot be served."""


def models_dir(root: Path) -> Path:
    return root / "models"


def model_version(run_id: str, logical_date: str) -> str:
    """``<logical date>-<run hash>``: sorts by date, stable across retries of the same run."""
    stamp = logical_date[:19].replace("-", "").replace(":", "")
    return f"{stamp}-{hashlib.sha1(run_id.encode()).hexdigest()[:6]}"


def played_csr(train_dir: Path, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's train tracks as CSR (indptr int64, indices int32 sorted per user)."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(train_dir), format="parquet").to_table(columns=[C.USER_IDX, C.ITEM_IDX])
    users = table[C.USER_IDX].to_numpy().astype(np.int64)
    items = table[C.ITEM_IDX].to_numpy().astype(np.int32)
    order = np.lexsort((items, users))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    if len(items) and items.max() >= n_items:
        raise BundleError(f"{train_dir}: track index {items.max()} outside the {n_items} tracks")
    return indptr, items[order]


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / f"{name}.npy", array)


def write_bundle(
    target: Path,
    arrays: dict[str, np.ndarray],
    labels: dict[str, Path],
    card: dict[str, Any],
    annoy: dict[str, Any] | None,
    seed: int,
) -> Path:
    """Write, verify and atomically rename a bundle into ``target``. A valid bundle already there is kept
    when it was made from the same inputs (``card["inputs"]``: a retried publish); otherwise it is replaced."""
    if target.exists():
        try:
            if verify_bundle(target).get("inputs") == card.get("inputs") and card.get("inputs"):
                return target
        except BundleError:
            pass  # a broken bundle in the way: written again below
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in ARRAYS:
            _save(tmp, name, arrays[name])
        for key, source in labels.items():
            shutil.copyfile(source, tmp / LABEL_FILES[key])
        serving = None
        if annoy is not None:
            from music_recsys.evaluation.search import AnnoySearcher

            searcher = AnnoySearcher(arrays["item_factors"], annoy["metric"], annoy["n_trees"], seed, tmp / ANNOY_FILE)
            searcher.close()
            serving = {**annoy, "index": ANNOY_FILE, "build_seconds": searcher.build_seconds}
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        card = {**card, "serving": serving, "files": files}
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str))
        verify_bundle(tmp)
        os.chmod(tmp, 0o755)
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def verify_bundle(folder: Path) -> dict[str, Any]:
    """The model card, after checking every file is there at its recorded size and the shapes agree."""
    card_path = Path(folder) / CARD
    if not card_path.exists():
        raise BundleError(f"{folder}: no {CARD}; not a model bundle (or a half-written one)")
    try:
        card = read_json(card_path)
    except ValueError as exc:
        raise BundleError(f"{card_path}: not valid JSON: {exc}") from exc
    for name, size in card.get("files", {}).items():
        path = Path(folder) / name
        if not path.exists():
            raise BundleError(f"{folder}: {name} is missing")
        if path.stat().st_size != size:
            raise BundleError(f"{folder}: {name} has {path.stat().st_size} bytes, the card says {size} (truncated?)")
    arrays = load_arrays(folder, mmap=True)
    users, items = arrays["user_factors"], arrays["item_factors"]
    n_users, n_items = card["n_users"], card["n_items"]
    checks = [
        (users.shape == (n_users, card["params"]["rank"]), f"user factors {users.shape}"),
        (items.shape == (n_items, card["params"]["rank"]), f"item factors {items.shape}"),
        (arrays["played_indptr"].shape == (n_users + 1,), f"played indptr {arrays['played_indptr'].shape}"),
        (arrays["played_indptr"][-1] == len(arrays["played_indices"]), "played indptr does not end at its indices"),
        (arrays["popularity"].shape == (n_items,), f"popularity {arrays['popularity'].shape}"),
        (len(read_labels(folder, "users")) == n_users, "user ids"),
        (len(read_labels(folder, "tracks")) == n_items, "track ids"),
    ]
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise BundleError(f"{folder}: inconsistent with its card ({n_users} users, {n_items} tracks): {bad}")
    return card


def load_arrays(folder: Path, mmap: bool = False) -> dict[str, np.ndarray]:
    try:
        return {name: np.load(Path(folder) / f"{name}.npy", mmap_mode="r" if mmap else None) for name in ARRAYS}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder}: cannot load arrays: {exc}") from exc


def read_labels(folder: Path, key: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(Path(folder) / LABEL_FILES[key], columns=["id"])["id"].to_pylist()
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder}: cannot read {LABEL_FILES[key]}: {exc}") from exc


def factor_model(folder: Path):
    """A bundle's factors, ids and fold-in settings, for scoring it on another run's data (memory-mapped)."""
    from music_recsys.evaluation.rescore import FactorModel

    card = verify_bundle(folder)
    arrays = load_arrays(folder, mmap=True)
    return FactorModel(
        user_factors=arrays["user_factors"],
        item_factors=arrays["item_factors"],
        user_ids=read_labels(folder, "users"),
        track_ids=read_labels(folder, "tracks"),
        params=card["params"],
    )
