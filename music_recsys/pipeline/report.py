"""Per-run report: the study's grid figure, metrics per user segment, the honest recall-vs-QPS figure,
the data check against the last good run, the model that was published, and a markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_recsys import constants as C
from music_recsys.data.drift import PROFILE_FIGURES
from music_recsys.evaluation.catalogue import (
    ALL_METRIC_NAMES,
    METRIC_BY_NAME,
    SEGMENT_METRIC_NAMES,
    SELECTION_METRICS,
    format_value,
    lower_is_better,
)
from music_recsys.pipeline.search import search_summary
from music_recsys.run_folders import RunLayout, read_json, write_json


def _metric_header(names: tuple[str, ...], k: int | None = None) -> str:
    return " | ".join(METRIC_BY_NAME[name].label_at(k) for name in names)


def _metric_cells(row: dict[str, Any], names: tuple[str, ...]) -> str:
    # Metrics that describe the lists (coverage, popularity) are shares read to 3 places; accuracy to 4.
    return " | ".join(format_value(row[name], 4 if METRIC_BY_NAME[name].accuracy else 3) for name in names)


def _by_selection_metric(row: dict[str, Any], metric: str) -> tuple[bool, float]:
    """Sort key: best first by ``metric`` in its direction, rows without a value last."""
    value = row[metric]
    if value is None:
        return True, 0.0
    return False, value if lower_is_better(metric) else -value


def grid_plot(rows: list[dict], k: int, path: Path) -> Path | None:
    """MAP and precision@k against alpha; one panel per regParam, one line per rank (and transform)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["split"] == "validation" and r["model"] == "als" and r["status"] == "success"]
    if not ok:
        return None
    baseline = next((r for r in rows if r["split"] == "validation" and r["trial_id"] == C.POPULARITY_TRIAL_ID), None)
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


def segment_plot(segments: list[dict], best_id: str, split: str, path: Path) -> Path | None:
    """MAP and MPR per user segment (train history length): the best point against popularity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = {
        trial: sorted(
            (s for s in segments if s["trial_id"] == trial and s["split"] == split), key=lambda s: s["segment"]
        )
        for trial in (best_id, C.POPULARITY_TRIAL_ID)
    }
    if not all(picked.values()):
        return None
    labels = [segment_label(s) for s in picked[best_id]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for ax, metric in zip(axes, ("map", "mpr"), strict=True):
        title = f"{METRIC_BY_NAME[metric].label} ({METRIC_BY_NAME[metric].direction} is better)"
        for i, (trial, color) in enumerate(((best_id, "tab:blue"), (C.POPULARITY_TRIAL_ID, "tab:grey"))):
            xs = [x + (i - 0.5) * width for x in range(len(picked[trial]))]
            ax.bar(xs, [s[metric] or 0.0 for s in picked[trial]], width, label=trial, color=color)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"By listener history ({split})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def segment_label(segment: dict) -> str:
    high = segment["max_history"]
    span = f"{segment['min_history']}-{high}" if high is not None else f">={segment['min_history']}"
    return f"{segment['name']} ({span} tracks)"


def search_figure(rows: list[dict], k: int):
    """The figure ``search_plot`` saves (None when no row is at ``k``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at_k = [r for r in rows if r["k"] == k]
    if not at_k:
        return None
    fig, ax = plt.subplots(figsize=(10, 5))
    for metric, marker in (("dot", "o"), ("angular_ip", "s")):
        for n_trees in sorted({r["n_trees"] for r in at_k if r["metric"] == metric}):
            for reranked in (False, True):
                pts = sorted(
                    (r["recall"], r["qps"])
                    for r in at_k
                    if r["metric"] == metric and r["n_trees"] == n_trees and (r["candidates"] > k) == reranked
                )
                if pts:
                    label = f"annoy {metric}, {n_trees} tree{'s' if n_trees != 1 else ''}" + (
                        ", re-ranked" if reranked else ""
                    )
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
    # A dozen lines or more: the legend goes beside the axes, where it covers none of them.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def search_plot(rows: list[dict], k: int, path: Path) -> Path | None:
    """Recall@k vs queries per second (log), one line per (metric, n_trees); exact baselines as lines."""
    import matplotlib.pyplot as plt

    fig = search_figure(rows, k)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def search_progress_plot(search: dict[str, Any], path: Path) -> Path | None:
    """Adaptive search: each trial's validation score against cumulative fit seconds (one mark per trial,
    one marker per round) and the best score so far as a step line; the chosen point circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = search["trials"]
    if not trials:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cumulative, xs, best, best_line = 0.0, [], None, []
    for t in trials:
        cumulative += t["fit_seconds"] or 0.0
        xs.append(cumulative)
        if t["value"] is not None:
            best = t["value"] if best is None else max(best, t["value"])
        best_line.append(best)
    markers = {1: "o", 2: "s"}
    fidelity = {r["round"]: r["fidelity"] for r in search["rounds"]}
    for round_no in sorted(fidelity):
        pts = [(x, t["value"]) for x, t in zip(xs, trials, strict=True) if t["round"] == round_no]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            label = f"round {round_no} (fidelity {fidelity[round_no]:g})"
            ax.scatter(*zip(*pts, strict=True), marker=markers.get(round_no, "D"), label=label, alpha=0.8)
    ax.step(xs, [b if b is not None else float("nan") for b in best_line], where="post", color="black", lw=1,
            label="best so far")  # fmt: skip
    chosen = [(x, t["value"]) for x, t in zip(xs, trials, strict=True) if t["trial_id"] == search["chosen"]]
    if chosen:
        ax.scatter(*chosen[0], s=160, facecolors="none", edgecolors="red", label=f"chosen: {search['chosen']}")
    ax.set_xlabel("cumulative fit seconds")
    ax.set_ylabel(f"validation {search['metric']} (screening rounds: on their share of the users)")
    ax.set_title("Adaptive search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _search_lines(search: dict[str, Any] | None, png: Path | None) -> list[str]:
    if not search:
        return []
    lines = [
        "## Adaptive search",
        "",
        f"Budget {search['budget_seconds'] / 60:.1f} min; chosen point: **{search['chosen']}** (on validation, "
        "full data). Screening rounds fit on the validation users and a share of the others and score "
        "themselves; the last round fits the best on the full data.",
        "",
        f"| round | fidelity | fits | fit s | best validation {search['metric']} | budget left when planned s | "
        "planned s per fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in search["rounds"]:
        lines.append(
            f"| {r['round']} | {r['fidelity']:g} | {r['fits']} | {r['fit_seconds']:.1f} | {format_value(r['best'])} | "
            f"{r['remaining_seconds']:.0f} | {r['seconds_per_fit_planned']:.1f} |"
        )
    if png:
        lines += ["", f"Best so far against cumulative fit seconds, one mark per trial: `{png.name}` (Figures)."]
    return [*lines, ""]


def _data_check_lines(data_check: dict[str, Any] | None) -> list[str]:
    if not data_check:
        return []
    lines = ["## Data check", "", data_check["message"].split("\n")[0], ""]
    before = data_check.get("baseline_profiles") or {}
    head = "| split | " + " | ".join(PROFILE_FIGURES) + " |"
    lines += [head, "|---" * (len(PROFILE_FIGURES) + 1) + "|"]
    for split, profile in data_check["profiles"].items():
        lines.append(f"| {split} | " + " | ".join(format_value(profile[f], 3) for f in PROFILE_FIGURES) + " |")
        if split in before:
            lines.append(
                f"| {split}, run {data_check['baseline_run_id']} | "
                + " | ".join(format_value(before[split][f], 3) for f in PROFILE_FIGURES)
                + " |"
            )
    train = (data_check.get("changes") or {}).get("train") or {}
    if train.get("new_user_share") is not None:
        lines += [
            "",
            f"New in train since that run: {train['new_user_share']:.1%} of users, "
            f"{train['new_track_share']:.1%} of tracks.",
        ]
    if data_check["violations"]:
        lines += ["", "Crossed a threshold:", "", "```", data_check["message"].split("\n", 1)[1], "```"]
    return [*lines, ""]


def _publication_lines(publication: dict[str, Any] | None) -> list[str]:
    if not publication:
        return []
    lines = [
        "## Model",
        "",
        f"Bundle `{publication['version']}` ({publication['path']}): **{publication['status']}** — "
        f"{publication['reason']}.",
        "",
    ]
    comparison = publication.get("comparison") or {}
    if comparison.get("how") == "rescored":
        k = comparison.get("k")
        lines += [
            f"Compared like for like: champion `{comparison['champion']}` re-scored on this run's data at k={k}.",
            "",
            f"| split | champion {METRIC_BY_NAME['map'].label_at(k)} | {METRIC_BY_NAME['precision_at_k'].label_at(k)} "
            f"| {METRIC_BY_NAME['ndcg_at_k'].label_at(k)} | users folded in |",
            "|---|---|---|---|---|",
        ]
        for split, m in comparison.get("metrics", {}).items():
            lines.append(
                f"| {split} | {format_value(m.get('map'))} | {format_value(m.get('precision_at_k'))} "
                f"| {format_value(m.get('ndcg_at_k'))} | {m.get('n_folded_in', 0)} |"
            )
        lines.append("")
    elif comparison.get("champion"):
        lines += [f"Not re-scored against champion `{comparison['champion']}`: {comparison.get('note')}.", ""]
    return lines


def write_report(
    plan: dict[str, Any],
    evaluation: dict[str, Any],
    search: dict[str, Any],
    recorded: dict[str, Any] | None = None,
    data_check: dict[str, Any] | None = None,
    publication: dict[str, Any] | None = None,
) -> dict[str, Any]:
    layout = RunLayout(plan["run_dir"])
    out = layout.report_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluation["rows"]
    k = evaluation["k"]
    ann_rows = read_json(search["rows_path"])
    best_id = evaluation.get("best_trial_id")
    segments_png = segment_plot(evaluation["segments"], best_id, "test", out / "segments.png")
    search_png = search_plot(ann_rows, max(r["k"] for r in ann_rows), out / "fast_search.png")
    adaptive = search_summary(plan["run_dir"], evaluation)
    progress_png = search_progress_plot(adaptive, out / "adaptive_search.png") if adaptive else None
    # The grid figure's panels (one per regParam, a line per rank) only make sense for a grid.
    grid_png = None if adaptive else grid_plot(rows, k, out / "als_grid.png")

    def find(trial_id: str | None, split: str) -> dict | None:
        return next((r for r in rows if r["trial_id"] == trial_id and r["split"] == split), None)

    best_val, best_test = find(best_id, "validation"), find(best_id, "test")
    pop_val, pop_test = find(C.POPULARITY_TRIAL_ID, "validation"), find(C.POPULARITY_TRIAL_ID, "test")
    op = search["operating_points"][str(max(int(x) for x in search["operating_points"]))]

    lines = [
        f"# music-recsys run `{plan['run_id']}`",
        "",
        f"Recommendations: top {k}, already-played items "
        f"{'excluded' if evaluation['exclude_seen'] else 'kept'}. Best point rule: {evaluation['selection_rule']}.",
        "",
        *_data_check_lines(data_check),
        *_publication_lines(publication),
        *_search_lines(adaptive, progress_png),
        "## Best point and generalization",
        "",
        f"| model | split | {_metric_header(ALL_METRIC_NAMES, k)} | users |",
        "|---" * (len(ALL_METRIC_NAMES) + 3) + "|",
    ]
    test_rows = [r for r in rows if r["split"] == "test"]
    for r in [
        r for r in rows if r["split"] == "validation" and r["trial_id"] in {x["trial_id"] for x in test_rows}
    ] + test_rows:
        lines.append(f"| {r['trial_id']} | {r['split']} | {_metric_cells(r, ALL_METRIC_NAMES)} | {r['n_users']} |")
    by_segment = [
        s for s in evaluation["segments"] if s["split"] == "test" and s["trial_id"] in (best_id, C.POPULARITY_TRIAL_ID)
    ]
    if by_segment:
        lines += [
            "",
            "## By listener history (test)",
            "",
            "Users split into equal-share segments by the number of tracks they played in train.",
            "",
            f"| model | segment | users | {_metric_header(SEGMENT_METRIC_NAMES, k)} |",
            "|---" * (len(SEGMENT_METRIC_NAMES) + 3) + "|",
        ]
        for seg in sorted(by_segment, key=lambda s: (s["trial_id"] != best_id, s["segment"])):
            lines.append(
                f"| {seg['trial_id']} | {segment_label(seg)} | {seg['n_users']} | "
                f"{_metric_cells(seg, SEGMENT_METRIC_NAMES)} |"
            )
    lines += [
        "",
        "## All trials (validation)",
        "",
        f"Best first by {evaluation['selection_metric']}, the run's selection metric.",
        "",
        f"| trial | rank | regParam | alpha | transform | status | {_metric_header(SELECTION_METRICS, k)} | fit s |",
        "|---" * (len(SELECTION_METRICS) + 7) + "|",
    ]
    validation_rows = (r for r in rows if r["split"] == "validation")
    for r in sorted(validation_rows, key=lambda r: _by_selection_metric(r, evaluation["selection_metric"])):
        lines.append(
            f"| {r['trial_id']} | {format_value(r['rank'])} | {format_value(r['reg_param'], 3)} | "
            f"{format_value(r['alpha'], 3)} | "
            f"{r['transform']} | {r['status']} | {_metric_cells(r, SELECTION_METRICS)} | "
            f"{format_value(r['fit_seconds'], 1)} |"
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
                f"- k={kk}: {point['message']} (best recall {format_value(point['best_recall'], 3)}); exact "
                f"{point['exact_qps']:.0f} q/s single, {point['exact_batched_qps']:.0f} q/s batched"
            )
    lines.append(
        f"- Better Annoy metric on these factors: {search['better_metric']} (q/s at the target recall "
        f"{search['qps_at_target_by_metric']}, max recall {search['max_recall_by_metric']})"
    )
    plots = [p for p in (grid_png, progress_png, segments_png, search_png) if p]
    lines += ["", "## Figures", "", *(f"![{png.stem}]({png.name})" for png in plots)]
    report_md = out / "report.md"
    report_md.write_text("\n".join(lines) + "\n")
    headline = ALL_METRIC_NAMES
    summary = {
        "run_id": plan["run_id"],
        "run_dir": plan["run_dir"],
        "best_trial_id": best_id,
        "selection_metric": evaluation["selection_metric"],
        "best_validation": {m: best_val[m] for m in headline} if best_val else None,
        "best_test": {m: best_test[m] for m in headline} if best_test else None,
        "popularity_validation": {m: pop_val[m] for m in headline} if pop_val else None,
        "popularity_test": {m: pop_test[m] for m in headline} if pop_test else None,
        "fast_search": op,
        "data_check": (data_check or {}).get("verdict"),
        "model": publication,
        "report": str(report_md),
        "plots": [str(p) for p in plots],
        "recorded": recorded,
        "adaptive_search": adaptive,
    }
    write_json(out / "summary.json", summary)
    return summary
