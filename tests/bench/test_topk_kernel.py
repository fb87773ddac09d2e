"""bench/topk_kernel.py: the kernel before (read from git) and after answer the same lists, and the report
carries both timings and their ratio."""

from __future__ import annotations

from bench import topk_kernel


def test_a_small_run_compares_the_same_lists_before_and_after(capsys):
    args = topk_kernel.parse_args(["--items", "3000", "--k", "5", "40", "--users", "60", "--queries", "20",
                                   "--repeats", "1", "--no-write"])  # fmt: skip
    assert topk_kernel.main(args) == 0  # 1 when any list differs
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3,000 |")]
    assert len(table) == 4 and all(line.endswith("| yes |") for line in table)
    before = topk_kernel.module_at(topk_kernel.BEFORE)  # the argpartition cut, not today's module
    assert not hasattr(before, "_floors") and hasattr(topk_kernel.after, "_floors")
