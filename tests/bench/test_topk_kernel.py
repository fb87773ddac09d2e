"""bench/topk_kernel.py: the kernel before and after answer the same lists, and the report carries both
timings and their ratio. The "before" here is a plain full sort (not the git history, which a shallow
clone lacks); the script itself reads the old kernel from git."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bench import topk_kernel


def _full_sort_top(scores: np.ndarray, k: int, exclude) -> np.ndarray:
    scores = scores.astype(np.float64)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))  # best first, ties by index
    return order[: min(k, int(np.isfinite(scores).sum()))]


def _reference():
    def top_k_blocks(users, items, k, exclude):
        scores = users @ items.T
        tops = [_full_sort_top(row, k, ex) for row, ex in zip(scores, exclude, strict=True)]
        return [SimpleNamespace(top=tops)]

    def top_k_one(items, query, k, exclude):
        return _full_sort_top(items @ query, k, exclude), None

    return SimpleNamespace(top_k_blocks=top_k_blocks, top_k_one=top_k_one)


def test_a_small_run_compares_the_same_lists_before_and_after(capsys):
    args = topk_kernel.parse_args(["--items", "3000", "--k", "5", "40", "--users", "60", "--queries", "20",
                                   "--repeats", "1", "--no-write"])  # fmt: skip
    assert topk_kernel.main(args, before=_reference()) == 0  # 1 when any list differs
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3,000 |")]
    assert len(table) == 4 and all(line.endswith("| yes |") for line in table)


def test_a_kernel_that_answers_otherwise_is_reported(capsys):
    wrong = _reference()
    right = wrong.top_k_one
    wrong.top_k_one = lambda items, query, k, exclude: (right(items, query, k, exclude)[0][::-1], None)
    args = topk_kernel.parse_args(["--items", "2000", "--k", "5", "--users", "30", "--queries", "10",
                                   "--repeats", "1", "--no-write"])  # fmt: skip
    assert topk_kernel.main(args, before=wrong) == 1
    assert "| NO |" in capsys.readouterr().out
