"""Column names, defaults and seeds shared by the DAG, the jobs and the tests."""

from __future__ import annotations

# Raw interaction schema (the study's parquet schema).
USER_ID = "user_id"
TRACK_ID = "track_id"
COUNT = "count"
RAW_COLUMNS = (USER_ID, COUNT, TRACK_ID)

# Indexed schema written by the index job and read by fit / evaluate.
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
RATING = "rating"

SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")

# Grid transforms: how play counts become ALS confidences.
TRANSFORMS = ("none", "log1p", "drop", "log1p_drop")

DEFAULT_SEED = 42
DEFAULT_K = 500
SERVING_K = 50
DEFAULT_MAX_ITER = 10
DEFAULT_DROP_THRESHOLD = 1
# Unconstrained (Cholesky) solves, Spark's default: they scored a higher MAP and fit faster than the
# study's NNLS on MovieLens-100K and on the synthetic set (bench/RESULTS.md).
DEFAULT_NONNEGATIVE = False

# The origin study's grid (its figures of MAP by rank, regParam and alpha): rank x regParam x alpha.
DEFAULT_RANKS = (5, 10, 20)
DEFAULT_REG_PARAMS = (0.1, 1.0, 10.0)
DEFAULT_ALPHAS = (1.0, 5.0, 10.0)
DEFAULT_TRANSFORMS = ("none", "log1p")

# Adaptive search (music_recsys.pipeline.search): the space Optuna's TPE sampler proposes from (rank, regParam
# and alpha log-uniform), the cheaper screening rounds before the final full-data round, and the share of
# non-hold-out train users each screening round fits on (hold-out users are always kept: they are scored).
SEARCH_MODES = ("grid", "adaptive")
SEARCH_RANK = (8, 256)
SEARCH_REG_PARAM = (0.01, 10.0)
SEARCH_ALPHA = (0.1, 100.0)
SEARCH_MAX_ITER = (5, 20)
SCREEN_ROUNDS = 2
SCREEN_FRACTIONS = (0.25, 0.5)
# Successive halving: each round keeps about 1/SEARCH_ETA of the previous round's points.
SEARCH_ETA = 3

DEFAULT_ANNOY_TREES = (1, 5, 10, 30)
DEFAULT_ANNOY_SEARCH_K = (100, 500, 1000, 5000, 10000, 50000, 100000, 500000)

POPULARITY_TRIAL_ID = "popularity"

# Results store.
RESULTS_CONN_ID = "recsys_results"
SQLITE_RESULTS_FILE = "results.sqlite"

# The DAG's human-in-the-loop task that asks a person to approve a model (param ``require_approval``); the
# UI links a waiting model to this task's Required Action.
APPROVAL_TASK_ID = "approve_model"
