# ruff: noqa: E501  (markup lines: wrapping them would change the rendered whitespace, not the readability)
"""The pages' Jinja2 templates, kept in the package as strings so an installed wheel needs no package data.
Autoescaping is on: every value from the store or a request is escaped; only the figure SVG the app drew
itself and the report markdown rendered with raw HTML disabled are marked safe."""

from __future__ import annotations

from typing import Any

import jinja2

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}Recommender{% endblock %} · music-recsys</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem 1.6rem; color: #1f2933;
        font-size: 14px; }
 h1 { font-size: 1.45rem; margin: 0 0 .6rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
 table { border-collapse: collapse; margin: .4rem 0 1rem; } th, td { border: 1px solid #d9dee3;
        padding: .25rem .5rem; text-align: left; vertical-align: top; }
 th { background: #f3f5f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .card { border: 1px solid #cbd2d9; border-radius: 6px; padding: .8rem 1rem; max-width: 70rem; background: #fbfcfd; }
 .status-champion { color: #137333; font-weight: 600; } .status-rejected { color: #b3261e; }
 .status-candidate { color: #b06000; } .status-retired { color: #52606d; }
 .verdict-drift { color: #b3261e; font-weight: 600; } .verdict-pass, .verdict-first_run { color: #137333; }
 .note { color: #52606d; } .flash { background: #e6f4ea; border: 1px solid #137333; padding: .5rem .8rem; }
 button, .button { background: #017cee; color: white; border: 0; border-radius: 4px; padding: .3rem .7rem;
        cursor: pointer; text-decoration: none; font-size: .9rem; }
 a.button.secondary, button.secondary { background: #52606d; }
 nav { margin-bottom: 1rem; } nav a { margin-right: 1rem; }
 img.plot { max-width: 100%; border: 1px solid #e4e7eb; margin: .3rem 0; }
 details { margin: .5rem 0; } .md table { font-size: .9em; }
 /* A wide table scrolls inside its own box, never the page (the Airflow UI's frame): 1280 px screens. */
 .table-wrap { max-width: 100%; overflow-x: auto; margin: .4rem 0 1rem; } .table-wrap > table { margin: 0; }
 td.text { min-width: 12rem; max-width: 26rem; overflow-wrap: anywhere; } td.nowrap, th.nowrap { white-space: nowrap; }
 a.button, button { white-space: nowrap; display: inline-block; }
 pre { max-width: 100%; overflow-x: auto; }
 .pending { border-color: #b06000; background: #fff8ec; } .status-awaiting_approval { color: #b06000; font-weight: 600; }
 dl.failure dt { font-weight: 600; margin-top: .4rem; } dl.failure dd { margin-left: 1rem; white-space: pre-wrap; }
</style></head>
<body><nav><a href="{{ base }}/">Recommender overview</a>{% block nav %}{% endblock %}</nav>
{% block body %}{% endblock %}
<script>
// The Airflow UI shows these pages in a sandboxed frame that may not navigate the whole window (no
// allow-top-navigation): a link to one of Airflow's own pages asks Airflow's router to go there instead,
// by pushing the URL on the window's history (same origin) and telling the router, as a Back would.
document.addEventListener("click", function (event) {
  var link = event.target.closest("a[data-airflow-page]");
  if (!link || window.top === window) return;
  try {
    window.top.history.pushState(null, "", link.href);
    window.top.dispatchEvent(new PopStateEvent("popstate", { state: null }));
    event.preventDefault();
  } catch (error) { /* not the Airflow UI around this page: the link's own target="_top" data-airflow-page */ }
});
</script>
</body></html>
"""

STATUS = """<span class="status-{{ status }}">{{ status }}</span>"""

FAILURE = """<div class="card pending" id="failure"><p><strong>This run failed</strong> (from the run folder's
 <code>failure.json</code>{% if v.failure.note %}; also the run's note in Airflow{% endif %}).</p>
<dl class="failure">
 <dt>Stage</dt><dd id="failure-stage">{{ v.failure.stage or "—" }}</dd>
 <dt>Task</dt><dd id="failure-task">{{ v.failure.task or "—" }}{% if v.failure.retryable is sameas false %} (not retried: the input needs fixing){% endif %}</dd>
 <dt>Message</dt><dd id="failure-message">{{ v.failure.message }}</dd>
 <dt>Did not run</dt><dd id="failure-not-run">{{ (v.failure.not_run or []) | join(", ") or "—" }}</dd>
 {% if v.failure.failed_after %}<dt>Also failed after it</dt><dd>{{ v.failure.failed_after | join(", ") }}</dd>{% endif %}
</dl>
<p><a href="{{ airflow }}/dags/{{ dag_id }}/runs/{{ v.run_id | urlencode }}" target="_top" data-airflow-page>The run's task logs in Airflow</a></p></div>
"""

OVERVIEW = (
    """{% extends "base.html" %}
{% block body %}
<h1>Recommender</h1>
{% if done %}<p class="flash" id="flash">{{ done }}</p>{% endif %}
{% if view.awaiting %}
<div class="card pending" id="awaiting">
 <p><strong>Awaiting a decision:</strong> {{ view.awaiting | length }} model{{ "s" if view.awaiting | length != 1 }} passed the
  gate and wait{{ "s" if view.awaiting | length == 1 }} for a person's approval in Airflow's Required Actions.</p>
 <ul>{% for m in view.awaiting %}
  <li data-version="{{ m.model_version }}"><code>{{ m.model_version }}</code> — test {{ "map" | label(m.k) }} {{ m.test_map | f }}
   (popularity {{ m.popularity_test_map | f }}), run <a href="{{ base }}/dags/{{ dag_id }}/runs/{{ m.run_id | urlencode }}">{{ m.run_id }}</a>:
   <a class="button required-action" target="_top" data-airflow-page href="{{ required_action(m.run_id) }}">Open its Required Action</a></li>
 {% endfor %}</ul>
</div>
{% endif %}
<h2>Champion</h2>
{% set c = view.champion %}
{% if c %}
{% set k = c.card.k or c.row.k %}
<div class="card" id="champion">
 <p><strong>Model <span id="champion-version">{{ c.row.model_version }}</span></strong> —
  trial <code>{{ c.row.trial_id }}</code>, run <a href="{{ base }}/dags/{{ dag_id }}/runs/{{ c.row.run_id | urlencode }}">{{ c.row.run_id }}</a></p>
 <p>{% for name, value in c.params.items() %}{{ name }} <code>{{ value }}</code>{% if not loop.last %}, {% endif %}{% endfor %}</p>
 <table><tr><th></th>{% for name in card_metrics %}<th>{{ name | label(k) }}</th>{% endfor %}</tr>
  {% for row_label, m in [("validation", c.validation), ("popularity, validation", c.popularity_validation),
                      ("test", c.test), ("popularity, test", c.popularity_test)] %}
  <tr><th>{{ row_label }}</th>{% for name in card_metrics %}<td class="num">{{ m[name] | f }}</td>{% endfor %}</tr>
  {% endfor %}
 </table>
 <p>Test {{ "map" | label(k) }} <strong id="champion-test-map">{{ c.row.test_map | f }}</strong> = <strong>{{ c.lift | f(2) }}x</strong>
  popularity's {{ c.row.popularity_test_map | f }}.{% if c.why %} <span id="champion-reason">{{ c.why }}</span>{% endif %}</p>
 {% if c.serving %}<p>Serving: Annoy {{ c.serving.metric }}, {{ c.serving.n_trees | plural("tree") }}, search_k
  {{ c.serving.search_k }}{% if c.serving.candidates > c.serving.k %}, {{ c.serving.candidates }} candidates re-ranked{% endif %}
  — recall@{{ c.serving.k }} {{ c.serving.recall | f(3) }}, {{ c.serving.qps | f(0) }} q/s
  (exact {{ c.serving.exact_qps | f(0) }} q/s)</p>
 {% else %}<p>Serving: exact top-k (no Annoy operating point reached the target recall).</p>{% endif %}
 <p>Data fingerprint <code>{{ (c.row.data_fingerprint or "")[:12] }}</code>
  {% for split, d in (c.data.splits or {}).items() %} · {{ split }} {{ d.rows }} rows, {{ d.users }} users{% endfor %}.
  Promoted {{ c.row.promoted_at | dt }}; logical date {{ c.row.logical_date | dt }};
  bundle {{ c.bundle_bytes | size }}{% if not c.card %} (model card not found at {{ c.row.path }}){% endif %}.</p>
</div>
{% else %}
<p id="champion">No champion yet: no run has published a model that passed the gate.</p>
{% endif %}

<h2>Test MAP over time</h2>
{% if plot %}<div class="plot" id="map-history">{{ plot | safe }}</div>{% else %}<p>No model has a test MAP yet.</p>{% endif %}

<h2>Registry</h2>
{% set rk = view.registry_k %}
<table id="registry"><tr><th>version</th><th>status</th><th>reason</th>{% if rk is none %}<th>k</th>{% endif %}<th>validation {{ "map" | label(rk) }}</th>
 <th>test {{ "map" | label(rk) }}</th><th>popularity test {{ "map" | label(rk) }}</th><th>logical date</th><th>created</th><th>promoted</th><th>retired</th>{% if can_edit or view.awaiting %}<th>action</th>{% endif %}</tr>
{% for m in view.models %}
 <tr data-version="{{ m.model_version }}"><td><code>{{ m.model_version }}</code></td><td>{% with status=m.status %}"""
    + STATUS
    + """{% endwith %}</td>
  <td class="text">{{ m.reason }}</td>{% if rk is none %}<td class="num">{{ m.k or "—" }}</td>{% endif %}<td class="num">{{ m.validation_map | f }}</td><td class="num">{{ m.test_map | f }}</td>
  <td class="num">{{ m.popularity_test_map | f }}</td><td class="nowrap">{{ m.logical_date | dt }}</td><td class="nowrap">{{ m.created_at | dt }}</td>
  <td class="nowrap">{{ m.promoted_at | dt }}</td><td class="nowrap">{{ (m.retired_at if m.status == "retired" else none) | dt }}</td>
  {% if can_edit or view.awaiting %}<td>{% if m.status == "awaiting_approval" %}
   <a class="button required-action" target="_top" data-airflow-page href="{{ required_action(m.run_id) }}">Required Action</a>
  {% elif can_edit and m.status in ("candidate", "retired") and not m.bundle_removed_at %}
   <a class="button" href="{{ base }}/models/{{ m.model_version | urlencode }}/promote">{{ "Promote" if m.status == "candidate" else "Roll back" }}</a>
  {% elif m.bundle_removed_at %}<span class="note">bundle removed</span>{% endif %}</td>{% endif %}
 </tr>
{% else %}<tr><td colspan="11">No model registered yet.</td></tr>
{% endfor %}
</table>
{% if not can_edit %}<p class="note" id="read-only">You can read this page; promoting a model needs edit access to DAG {{ dag_id }}.</p>{% endif %}

<h2>Recent runs</h2>
{% set uk = view.runs_k %}
<table id="runs"><tr><th>run</th><th>logical date</th><th>data check</th><th>best point</th>{% if uk is none %}<th>k</th>{% endif %}<th>validation {{ "map" | label(uk) }}</th>
 <th>test {{ "map" | label(uk) }}</th><th>model</th></tr>
{% for r in view.runs %}
 <tr><td><a href="{{ base }}/dags/{{ dag_id }}/runs/{{ r.run_id | urlencode }}">{{ r.run_id }}</a></td><td class="nowrap">{{ r.logical_date | dt }}</td>
  <td class="verdict-{{ r.verdict }}">{{ r.verdict or "—" }}</td><td><code>{{ r.best_trial_id or "—" }}</code></td>{% if uk is none %}<td class="num">{{ r.k or "—" }}</td>{% endif %}
  <td class="num">{{ r.best_validation_map | f }}</td><td class="num">{{ r.best_test_map | f }}</td>
  <td>{% if r.model_version %}<code>{{ r.model_version }}</code> {% with status=r.model_status %}"""
    + STATUS
    + """{% endwith %}{% else %}—{% endif %}</td></tr>
{% else %}<tr><td colspan="8">No run has recorded results yet.</td></tr>
{% endfor %}
</table>
{% endblock %}
"""
)

RUN = (
    """{% extends "base.html" %}
{% block title %}Run {{ v.run_id }}{% endblock %}
{% block body %}
<h1>Run <code>{{ v.run_id }}</code></h1>
{% if v.failure %}"""
    + FAILURE
    + """{% endif %}
{% set p = v.publication %}
<h2>Publication</h2>
{% if p %}<p id="publication">Model <code>{{ p.model_version }}</code>: {% with status=p.status %}"""
    + STATUS
    + """{% endwith %}
 — {{ p.reason }}</p>{% else %}<p id="publication">No model published by this run (yet).</p>{% endif %}

<h2>Data check</h2>
{% set train = v.data_check.get("train") %}
{% if train %}
<p>Verdict <span class="verdict-{{ train.verdict }}" id="verdict">{{ train.verdict }}</span>
 {% if train.baseline_run_id %}against run <a href="{{ base }}/dags/{{ dag_id }}/runs/{{ train.baseline_run_id | urlencode }}">{{ train.baseline_run_id }}</a>{% else %}(no earlier good run to compare with){% endif %}
 {%- if train.new_user_share is not none %}; new in train: {{ train.new_user_share | pct }} of users, {{ train.new_track_share | pct }} of tracks{% endif %}.</p>
<table><tr><th>split</th><th>rows</th><th>users</th><th>tracks</th><th>plays</th><th>median count</th><th>p99 count</th><th>share count 1</th><th>changes vs baseline</th></tr>
{% for split, d in v.data_check.items() %}<tr><td>{{ split }}</td><td class="num">{{ d.rows }}</td><td class="num">{{ d.users }}</td>
 <td class="num">{{ d.tracks }}</td><td class="num">{{ d.plays }}</td><td class="num">{{ d.median_count | f(1) }}</td>
 <td class="num">{{ d.p99_count | f(1) }}</td><td class="num">{{ d.share_count_1 | f(3) }}</td>
 <td>{% for k, c in (d.changes or {}).items() %}{{ k }} {{ c | f(3) }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}
</table>
{% for split, d in v.data_check.items() %}{% for viol in d.violations or [] %}<p class="verdict-drift">{{ viol }}</p>{% endfor %}{% endfor %}
{% else %}<p>No data check recorded for this run.</p>{% endif %}

<h2>Best point and test</h2>
{% if v.best_validation %}<p>Best grid point <code id="best-trial">{{ v.best_trial_id }}</code> by validation
 {{ v.best_validation.selection_metric | label(v.k) }}: validation {{ "map" | label(v.k) }} <strong id="best-map">{{ v.best_validation.map | f }}</strong>
 {%- if v.best_test %}, test {{ "map" | label(v.k) }} <strong id="best-test-map">{{ v.best_test.map | f }}</strong>
 {% if v.test_lift %}({{ v.test_lift | f(2) }}x popularity){% endif %}{% endif %}.</p>{% endif %}
<table id="headline"><tr><th>model</th><th>split</th>{% for name in headline_metrics %}<th>{{ name | label(v.k) }}</th>{% endfor %}<th>users</th></tr>
{% for r in v.headline %}<tr><td>{{ r.trial_id }}</td><td>{{ r.split }}</td>{% for name in headline_metrics %}<td class="num">{{ r[name] | f(3 if name == "coverage_at_k" else 4) }}</td>{% endfor %}
 <td class="num">{{ r.n_users }}</td></tr>{% endfor %}
</table>

<h2>All trials (validation)</h2>
<table id="trials"><tr>
{% for col, heading in trial_columns %}<th><a href="?sort={{ col }}&order={{ 'asc' if v.sort.column == col and v.sort.descending else 'desc' }}">{{ heading }}{% if v.sort.column == col %} {{ "▼" if v.sort.descending else "▲" }}{% endif %}</a></th>{% endfor %}<th>status</th></tr>
{% for r in v.trials %}<tr{% if r.is_best %} class="best"{% endif %}>{% for col, heading in trial_columns %}
 <td{% if col not in ("trial_id", "transform") %} class="num"{% endif %}>{% if col == "trial_id" %}<code>{{ r.trial_id }}</code>{% if r.is_best %} ★{% endif %}{% elif col in ("rank",) %}{{ r[col] if r[col] is not none else "—" }}{% elif col == "transform" %}{{ r[col] or "—" }}{% elif col == "fit_seconds" %}{{ r[col] | f(1) }}{% else %}{{ r[col] | f }}{% endif %}</td>{% endfor %}
 <td class="text">{{ r.status }}{% if r.error %} <span class="note">{{ r.error[:200] }}</span>{% endif %}</td></tr>{% endfor %}
</table>

<h2>By listener history (test)</h2>
{% if v.segments %}<table><tr><th>model</th><th>segment</th><th>users</th>{% for name in segment_metrics %}<th>{{ name | label(v.k) }}</th>{% endfor %}</tr>
{% for s in v.segments %}<tr><td>{{ s.trial_id }}</td><td>{{ s | segment }}</td><td class="num">{{ s.n_users }}</td>{% for name in segment_metrics %}<td class="num">{{ s[name] | f(3 if name == "mean_rec_popularity" else 4) }}</td>{% endfor %}</tr>{% endfor %}</table>
{% else %}<p>No segment rows.</p>{% endif %}

<h2>Fast search</h2>
{% for fs in v.fast_search %}
<h3>k = {{ fs.k }} ({{ fs.n_configurations }} Annoy configurations)</h3>
{% set op = fs.operating_point %}
{% if op %}<p class="operating-point">Operating point: {{ op.metric }}, {{ op.n_trees | plural("tree") }}, search_k {{ op.search_k }}
 {% if op.candidates > op.k %}, {{ op.candidates }} candidates re-ranked{% endif %} — recall {{ op.recall | f(3) }}, {{ op.qps | f(0) }} q/s, p99 {{ op.p99_ms | f(3) }} ms.</p>
{% else %}<p>No configuration reached the target recall at k = {{ fs.k }}.</p>{% endif %}
<p>Exact: {% for name, e in fs.exact.items() %}{{ name }} {{ e.qps | f(0) }} q/s{% if not loop.last %}, {% endif %}{% endfor %}.</p>
<table><tr><th>frontier: metric</th><th>trees</th><th>search_k</th><th>candidates</th><th>recall</th><th>q/s</th><th>p99 ms</th></tr>
{% for f in fs.frontier %}<tr><td>{{ f.metric }}</td><td class="num">{{ f.n_trees }}</td><td class="num">{{ f.search_k }}</td><td class="num">{{ f.candidates }}</td>
 <td class="num">{{ f.recall | f(3) }}</td><td class="num">{{ f.qps | f(0) }}</td><td class="num">{{ f.p99_ms | f(3) }}</td></tr>{% endfor %}</table>
{% else %}<p>No fast-search rows.</p>{% endfor %}

<h2>Figures</h2>
{% for kind in plots %}<img class="plot" alt="{{ kind }}" src="{{ run_base }}/plots/{{ kind }}.png">{% endfor %}

{% if report_html %}<h2>report.md</h2>
<details><summary>The run's report as written by its report task ({{ v.files | length }} files in report/)</summary>
<div class="md">{{ report_html | safe }}</div></details>{% endif %}
{% if v.files %}<p class="note">Files: {% for name in v.files %}<a href="{{ run_base }}/files/{{ name | urlencode }}">{{ name }}</a>{% if not loop.last %} · {% endif %}{% endfor %}</p>{% endif %}
<p><a href="{{ airflow }}/dags/{{ dag_id }}/runs/{{ v.run_id | urlencode }}" target="_top" data-airflow-page>This run in Airflow</a></p>
{% endblock %}
"""
)

FAILED = (
    """{% extends "base.html" %}
{% block title %}Run {{ v.run_id }} failed{% endblock %}
{% block body %}
<h1>Run <code>{{ v.run_id }}</code></h1>
"""
    + FAILURE
    + """<p class="note">The run failed before it recorded any results in the results store.</p>
{% endblock %}
"""
)

FORBIDDEN = """{% extends "base.html" %}
{% block title %}Not allowed{% endblock %}
{% block body %}<h1>Not allowed</h1><p id="forbidden">{{ message }}</p>
<p>Your Airflow user can read the recommender's pages but {{ action }} needs edit access to DAG <code>{{ dag_id }}</code>;
ask an Airflow admin.</p>
<p><a href="{{ base }}/">Back to the recommender overview</a></p>{% endblock %}
"""

OTHER_DAG = """{% extends "base.html" %}
{% block title %}Not a recommender run{% endblock %}
{% block body %}
<h1>Recsys results</h1>
<p id="other-dag">Run <code>{{ run_id }}</code> belongs to DAG <code>{{ other }}</code>. Recsys results exist only for
runs of DAG <code>{{ dag_id }}</code>.</p>
{% endblock %}
"""

NOT_FOUND = """{% extends "base.html" %}
{% block title %}Not found{% endblock %}
{% block body %}<h1>Not found</h1><p id="not-found">{{ message }}</p>{% endblock %}
"""

CONFIRM = (
    """{% extends "base.html" %}
{% block title %}{{ verb }} {{ target.model_version }}{% endblock %}
{% block body %}
<h1>{{ verb }} model <code>{{ target.model_version }}</code>?</h1>
{% set ck = target.k if not champion or champion.k == target.k else none %}
<table><tr><th></th><th>version</th><th>status</th>{% if ck is none %}<th>k</th>{% endif %}<th>test {{ "map" | label(ck) }}</th>
 <th>popularity test {{ "map" | label(ck) }}</th><th>logical date</th><th>run</th></tr>
{% for row_label, m in [("serving now", champion), ("would serve", target)] %}{% if m %}
<tr><th>{{ row_label }}</th><td><code>{{ m.model_version }}</code></td><td>{% with status=m.status %}"""
    + STATUS
    + """{% endwith %}</td>{% if ck is none %}<td class="num">{{ m.k or "—" }}</td>{% endif %}
 <td class="num">{{ m.test_map | f }}</td><td class="num">{{ m.popularity_test_map | f }}</td><td class="nowrap">{{ m.logical_date | dt }}</td><td>{{ m.run_id }}</td></tr>
{% endif %}{% endfor %}</table>
{% if target.status == "awaiting_approval" %}
<p id="pending">Model <code>{{ target.model_version }}</code> waits for a person's decision in Airflow's Required Actions:
answer it there, where the approval form shows its figures beside the champion's.</p>
<p><a class="button required-action" target="_top" data-airflow-page href="{{ required_action(target.run_id) }}">Open its Required Action</a>
 <a class="button secondary" href="{{ base }}/">Cancel</a></p>
{% else %}
<p>The registry makes <code>{{ target.model_version }}</code> the champion in one transaction (the gate is not
applied); the serving API picks it up at its next reload. The reason records that <strong>{{ user }}</strong> did it.</p>
<form method="post" action="{{ base }}/models/{{ target.model_version | urlencode }}/promote">
 <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
 <label>Note (optional) <input type="text" name="note" maxlength="300" size="60"></label>
 <p><button type="submit" id="confirm">{{ button }}</button> <a class="button secondary" href="{{ base }}/">Cancel</a></p>
</form>
{% endif %}
{% endblock %}
"""
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"
    return str(value)


def _dt(value: Any) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "—"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)[:16]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _plural(n: int | None, word: str) -> str:
    """``1 tree``, ``5 trees``."""
    if n is None or isinstance(n, jinja2.Undefined):
        return f"— {word}s"
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _label(name: str, k: int | None) -> str:
    """A metric's heading with the k it was measured at (``MAP (top 500)``, ``precision@10``): numbers at
    different k are not comparable, so every table says which."""
    from music_recsys.evaluation.catalogue import METRIC_BY_NAME

    metric = METRIC_BY_NAME.get(name)
    if metric is None:
        return name
    return metric.label_at(None if isinstance(k, jinja2.Undefined) else k)


def environment() -> jinja2.Environment:
    from music_recsys.pipeline.report import segment_label

    env = jinja2.Environment(
        loader=jinja2.DictLoader(
            {
                "base.html": BASE,
                "overview.html": OVERVIEW,
                "run.html": RUN,
                "other_dag.html": OTHER_DAG,
                "not_found.html": NOT_FOUND,
                "confirm.html": CONFIRM,
                "failed.html": FAILED,
                "forbidden.html": FORBIDDEN,
            }
        ),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # a card without a section renders as blanks, not a 500
    )
    env.filters.update(f=_fmt, dt=_dt, pct=_pct, size=_size, segment=segment_label, plural=_plural, label=_label)
    return env
