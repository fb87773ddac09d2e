"""Per-run report: the seed's grid figure, the honest recall-vs-QPS figure, and a markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_recsys.artifacts import RunLayout, read_json, write_json


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def grid_plot(rows: list[dict], k: int, path: Path) -> Path | None:
    """MAP and precision@k against alpha; one panel per regParam, one line per rank (and transform)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["split"] == "validation" and r["model"] == "als" and r["status"] == "success"]
    if not ok:
        return None
    baseline = next((r for r in rows if r["split"] == "validation" and r["model"] == "popularity"), None)
    regs = sorted({r["reg_param"] for r in ok})
    fig, axes = plt.subplots(2, len(regs), figsize=(4.2 * len(regs), 7), squeeze=False, sharey="row")
    styles = ["-", "--", ":", "-."]
    transforms = sorted({r["transform"] for r in ok})
    for col, reg in enumerate(regs):
        for row_i, (metric, label) in enumerate([("map", "MAP"), ("precision_at_k", f"precision@{k}")]):
            ax = axes[row_i][col]
            for t_i, transform in enumerate(transforms):
                for rank in sorted({r["rank"] for r in ok}):
                    pts = sorted(
                        (r["alpha"], r[metric])
                        for r in ok
                        if r["reg_param"] == reg and r["rank"] == rank and r["transform"] == transform
                    )
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True),
                            styles[t_i % 4],
                            marker="o",
                            label=f"rank {rank}" + (f", {transform}" if len(transforms) > 1 else ""),
                        )
            if baseline:
                ax.axhline(baseline[metric], color="grey", lw=1, label="popularity")
            ax.set_title(f"regParam = {reg:g}")
            ax.set_xlabel("alpha")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ALS grid on validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def search_plot(rows: list[dict], k: int, path: Path) -> Path | None:
    """Recall@k vs queries per second (log), one line per (metric, n_trees); exact baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_k = [r for r in rows if r["k"] == k]
    if not at_k:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for metric, marker in (("dot", "o"), ("angular_ip", "s")):
        for n_trees in sorted({r["n_trees"] for r in at_k if r["metric"] == metric}):
            for reranked in (False, True):
                pts = sorted(
                    (r["recall"], r["qps"])
                    for r in at_k
                    if r["metric"] == metric and r["n_trees"] == n_trees and (r["candidates"] > k) == reranked
                )
                if pts:
                    label = f"annoy {metric}, {n_trees} trees" + (", re-ranked" if reranked else "")
                    ax.plot(*zip(*pts, strict=True), marker=marker, ls=":" if reranked else "-", label=label)
    for metric, color in (("exact", "black"), ("exact_batched", "tab:red")):
        exact = next((r for r in at_k if r["metric"] == metric), None)
        if exact:
            ax.axhline(exact["qps"], color=color, ls="--", label=f"{metric} ({exact['qps']:.0f} q/s)")
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k} (vs exact top-{k})")
    ax.set_ylabel("queries per second (log)")
    ax.set_title("Fast search: Annoy vs exact, same factors, one core")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    plan: dict[str, Any],
    evaluation: dict[str, Any],
    search: dict[str, Any],
    recorded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    layout = RunLayout(plan["run_dir"])
    out = layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluation["rows"]
    k = evaluation["k"]
    ann_rows = read_json(search["rows_path"])
    grid_png = grid_plot(rows, k, out / "als_grid.png")
    search_png = search_plot(ann_rows, max(r["k"] for r in ann_rows), out / "fast_search.png")

    def find(trial_id: str | None, split: str) -> dict | None:
        return next((r for r in rows if r["trial_id"] == trial_id and r["split"] == split), None)

    best_id = evaluation.get("best_trial_id")
    best_val, best_test = find(best_id, "validation"), find(best_id, "test")
    pop_val, pop_test = find("popularity", "validation"), find("popularity", "test")
    op = search["operating_points"][str(max(int(x) for x in search["operating_points"]))]

    lines = [
        f"# music-recsys run `{plan['run_id']}`",
        "",
        f"Recommendations: top {k}, already-played items "
        f"{'excluded' if evaluation['exclude_seen'] else 'kept'}. Best point rule: {evaluation['selection_rule']}.",
        "",
        "## Best point and generalization",
        "",
        "| model | split | MAP | MAP@k | precision@k | NDCG@k | recall@k | users |",
        "|---|---|---|---|---|---|---|---|",
    ]
    test_rows = [r for r in rows if r["split"] == "test"]
    for r in [
        r for r in rows if r["split"] == "validation" and r["trial_id"] in {x["trial_id"] for x in test_rows}
    ] + test_rows:
        lines.append(
            f"| {r['trial_id']} | {r['split']} | {_fmt(r['map'])} | {_fmt(r['map_at_k'])} | "
            f"{_fmt(r['precision_at_k'])} | {_fmt(r['ndcg_at_k'])} | {_fmt(r['recall_at_k'])} | {r['n_users']} |"
        )
    lines += [
        "",
        "## All trials (validation)",
        "",
        "| trial | rank | regParam | alpha | transform | status | MAP | precision@k | NDCG@k | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in rows if r["split"] == "validation"), key=lambda r: -(r["map"] or -1)):
        lines.append(
            f"| {r['trial_id']} | {_fmt(r['rank'])} | {_fmt(r['reg_param'], 3)} | {_fmt(r['alpha'], 3)} | "
            f"{r['transform']} | {r['status']} | {_fmt(r['map'])} | {_fmt(r['precision_at_k'])} | "
            f"{_fmt(r['ndcg_at_k'])} | {_fmt(r['fit_seconds'], 1)} |"
        )
    lines += [
        "",
        "## Fast search",
        "",
        f"Best trial's item factors: {search['n_items']} items, "
        f"{search['n_queries']} validation users as queries; recall against exact top-k by dot product.",
        "",
    ]
    for kk, point in sorted(search["operating_points"].items(), key=lambda x: int(x[0])):
        if point["found"]:
            lines.append(
                f"- k={kk}: fastest Annoy at recall >= {point['target_recall']}: {point['metric']}, "
                f"{point['n_trees']} trees, search_k {point['search_k']}"
                + (f", {point['candidates']} candidates re-ranked" if point["candidates"] > point["k"] else "")
                + f" — recall {point['recall']:.3f}, "
                f"{point['qps']:.0f} q/s, {point['speedup_vs_exact']:.2f}x the single-query exact search "
                f"({point['exact_qps']:.0f} q/s; batched exact {point['exact_batched_qps']:.0f} q/s)"
            )
        else:
            lines.append(
                f"- k={kk}: {point['message']} (best recall {_fmt(point['best_recall'], 3)}); exact "
                f"{point['exact_qps']:.0f} q/s single, {point['exact_batched_qps']:.0f} q/s batched"
            )
    lines.append(
        f"- Better Annoy metric on these factors: {search['better_metric']} (q/s at the target recall "
        f"{search['qps_at_target_by_metric']}, max recall {search['max_recall_by_metric']})"
    )
    lines += ["", "## Figures", ""]
    for png in (grid_png, search_png):
        if png:
            lines.append(f"![{png.stem}]({png.name})")
    report_md = out / "report.md"
    report_md.write_text("\n".join(lines) + "\n")
    summary = {
        "run_id": plan["run_id"],
        "run_dir": plan["run_dir"],
        "best_trial_id": best_id,
        "best_validation": {m: best_val[m] for m in ("map", "precision_at_k", "ndcg_at_k")} if best_val else None,
        "best_test": {m: best_test[m] for m in ("map", "precision_at_k", "ndcg_at_k")} if best_test else None,
        "popularity_validation": {m: pop_val[m] for m in ("map", "precision_at_k", "ndcg_at_k")} if pop_val else None,
        "popularity_test": {m: pop_test[m] for m in ("map", "precision_at_k", "ndcg_at_k")} if pop_test else None,
        "fast_search": op,
        "report": str(report_md),
        "plots": [str(p) for p in (grid_png, search_png) if p],
        "recorded": recorded,
    }
    write_json(out / "summary.json", summary)
    return summary
