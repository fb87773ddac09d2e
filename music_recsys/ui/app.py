"""The recommender's pages inside the Airflow UI: a FastAPI app built by ``create_app`` that the plugin
mounts at ``/recsys`` in Airflow's api-server.

Every route needs a logged-in Airflow user (``get_user`` on the whole app); pages need read access to
DAG ``music_recsys`` and actions edit access (``requires_access_dag``). Anonymous page requests from a
browser are redirected to Airflow's login, anything else anonymous gets a 401. State changes are POSTs
that carry either the JWT in an ``Authorization`` header (which a cross-site form cannot set) or a CSRF
token bound to the user and the server's secret, and a foreign ``Origin`` is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from music_recsys import constants as C
from music_recsys.evaluation.catalogue import CARD_METRICS
from music_recsys.ui import pages
from music_recsys.ui.templates import environment

DAG_ID = "music_recsys"
# A promote form carries a token and a short note: anything longer is not a form of ours.
MAX_FORM_BYTES = 4096
# A confirmation page's form token is good for this long; after it the page has to be opened again.
CSRF_TTL_SECONDS = 3600
PLOT_KINDS = ("als_grid", "segments", "fast_search")
# The trials table's columns; metric headings come from the metric catalogue with the run's k.
TRIAL_COLUMNS = [
    ("trial_id", "trial"), ("rank", "rank"), ("reg_param", "regParam"), ("alpha", "alpha"),
    ("transform", "transform"), ("map", None), ("map_at_k", None), ("precision_at_k", None),
    ("ndcg_at_k", None), ("ndcg_graded_at_k", None), ("mpr", None), ("coverage_at_k", None), ("fit_seconds", "fit s"),
]  # fmt: skip
HEADLINE_METRICS = ("map", "map_at_k", "precision_at_k", "ndcg_at_k", "ndcg_graded_at_k", "mpr", "coverage_at_k")
SEGMENT_METRICS = ("map", "ndcg_at_k", "ndcg_graded_at_k", "mpr", "mean_rec_popularity")
_TABLE = re.compile(r"<table\b.*?</table>", re.S)


def trial_columns(k: int | None) -> list[tuple[str, str]]:
    """(column, heading) of the trials table, each metric's heading stating ``k``."""
    from music_recsys.evaluation.catalogue import METRIC_BY_NAME

    return [(col, heading or METRIC_BY_NAME[col].label_at(k)) for col, heading in TRIAL_COLUMNS]


def required_action_path(dag_id: str, run_id: str, task_id: str = C.APPROVAL_TASK_ID) -> str:
    """The Airflow UI's page of a task instance's Required Action (its human-in-the-loop form, Airflow 3.1+:
    ``dags/:dagId/runs/:runId/tasks/:taskId/required_actions``), relative to Airflow's base path."""
    dag, run, task = (quote(part, safe="") for part in (dag_id, run_id, task_id))
    return f"/dags/{dag}/runs/{run}/tasks/{task}/required_actions"


@dataclass
class UISettings:
    """Where the app reads from. ``results_url`` None: the ``recsys_results`` connection (or the SQLite
    file under the data root), resolved at the first request, not at import; ``runs_root`` None:
    ``<data root>/runs``; ``secret_key`` signs CSRF tokens (the plugin passes Airflow's ``[api]
    secret_key`` so every api-server worker accepts the others' tokens)."""

    results_url: str | None = None
    runs_root: Path | None = None
    secret_key: str | None = None
    dag_id: str = DAG_ID
    store: Any = field(default=None, repr=False)  # a ResultsStore to use as is (tests)


def _user_name(user: Any) -> str:
    return user.get_name() if hasattr(user, "get_name") else str(user)


def csrf_token(secret: bytes, user: Any, issued: int | None = None) -> str:
    """The form token of ``user``: ``<issued>.<HMAC>``, an HMAC only this server can compute over the user's
    name and the time it was issued (it expires ``CSRF_TTL_SECONDS`` later)."""
    issued = int(time.time()) if issued is None else issued
    mac = hmac.new(secret, f"music-recsys-ui:{_user_name(user)}:{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def csrf_valid(secret: bytes, user: Any, token: str, now: float | None = None) -> bool:
    """Whether ``token`` was issued by this server to ``user`` within the last ``CSRF_TTL_SECONDS``."""
    issued, _, _mac = token.partition(".")
    if not issued.isdigit():
        return False
    age = (time.time() if now is None else now) - int(issued)
    if not -60 <= age <= CSRF_TTL_SECONDS:  # a minute of clock skew between api-server workers
        return False
    return hmac.compare_digest(token, csrf_token(secret, user, int(issued)))


def _can_edit(user: Any, dag_id: str) -> bool:
    """Whether the page shows actions: the same check the action routes apply."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    try:
        return bool(get_auth_manager().is_authorized_dag(method="PUT", details=DagDetails(id=dag_id), user=user))
    except RuntimeError:  # no auth manager initialised: nobody may act
        return False


def _login_url(next_url: str) -> str | None:
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return get_auth_manager().get_url_login(next_url=next_url)
    except RuntimeError:
        return None


async def _read_form(request: Request) -> dict[str, str]:
    """The urlencoded form, read with a size cap while reading (a chunked body has no Content-Length)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"promote: form larger than {MAX_FORM_BYTES} bytes")
    if body and not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(415, "promote: send the form as application/x-www-form-urlencoded")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin:
        return True  # no Origin (old browsers, API clients): the CSRF token or header JWT decides
    return urlsplit(origin).netloc == request.headers.get("host")


def create_app(settings: UISettings | None = None) -> FastAPI:
    """The app the plugin mounts. Routes are relative to the mount point (``/recsys``)."""
    settings = settings or UISettings()
    secret = (settings.secret_key or secrets.token_hex(32)).encode()
    dag_id = settings.dag_id
    templates = environment()
    app = FastAPI(
        title="music-recsys in the Airflow UI",
        dependencies=[Depends(get_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    state: dict[str, Any] = {"store": settings.store}

    @app.middleware("http")
    async def framed_by_airflow_only(request: Request, call_next):
        # The Airflow UI frames these pages from the same origin; no other site may (clickjacking of the
        # confirmation page), and no response is content-sniffed.
        response = await call_next(request)
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    can_read = Depends(requires_access_dag("GET", param_dag_id=dag_id))
    can_edit = Depends(requires_access_dag("PUT", param_dag_id=dag_id))

    opening = threading.Lock()  # the first requests may arrive together: open one engine, not several

    def store():
        with opening:
            if state["store"] is None:
                from music_recsys.store.results import ResultsStore, results_url

                # Reads only (and the registry's own state changes): no DDL, so the UI can run with a role
                # that may not change the schema (docs/results-store.md).
                state["store"] = ResultsStore(settings.results_url or results_url())
        return state["store"]

    def runs_root() -> Path:
        if settings.runs_root is not None:
            return settings.runs_root
        from music_recsys.settings import data_root

        return data_root() / "runs"

    def base(request: Request) -> str:
        """This app's own path: Airflow's base path and the plugin's mount point (``/recsys``)."""
        return request.scope.get("root_path", "").rstrip("/")

    def airflow_base(request: Request) -> str:
        """Airflow's base path (``[api] base_url``'s path, which the api-server serves under): the root path
        of the app this one is mounted in."""
        return request.scope.get("app_root_path", "").rstrip("/")

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        airflow = airflow_base(request)
        html = templates.get_template(name).render(
            base=base(request), airflow=airflow, dag_id=dag_id,
            required_action=lambda run_id: airflow + required_action_path(dag_id, run_id), **context,
        )  # fmt: skip
        # Every table scrolls sideways inside its own box when it is wider than the frame.
        html = _TABLE.sub(lambda m: f'<div class="table-wrap">{m.group(0)}</div>', html)
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def redirect_anonymous_pages(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser opening a page without a session goes to Airflow's login and comes back; API clients
        # and every non-GET keep the plain 401.
        if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            login = _login_url(str(request.url))
            if login:
                return RedirectResponse(login, status_code=303)
        if exc.status_code == 404 and "text/html" in request.headers.get("accept", ""):
            return render(request, "not_found.html", 404, message=exc.detail)
        if exc.status_code == 403 and "text/html" in request.headers.get("accept", ""):
            action = "promoting or rolling back a model" if "/models/" in request.url.path else "this page"
            message = exc.detail if exc.detail != "Forbidden" else f"You may not open {request.url.path}."
            return render(request, "forbidden.html", 403, message=message, action=action)
        return await http_exception_handler(request, exc)

    @app.get("/", response_class=HTMLResponse, dependencies=[can_read])
    def overview(request: Request, user: GetUserDep, done: str | None = None) -> HTMLResponse:
        from music_recsys.ui.plots import FIGURE_LOCK, map_history_svg

        view = pages.overview(store())
        # The figure only changes with the registry: drawing it is most of the page's time, so it is kept
        # until a model is added, changes status or is re-scored.
        key = tuple((m["model_version"], m["status"], m["test_map"], m["popularity_test_map"]) for m in view["models"])
        if state.get("plot_key") != key:
            with FIGURE_LOCK:
                state["plot"], state["plot_key"] = map_history_svg(view["models"]), key
        plot = state["plot"]
        message = None
        champion = view["champion"]
        if done and champion and champion["row"]["model_version"] == done:
            # Said from the registry's state, not echoed from the query string.
            message = f"Model {done} is champion: {champion['row']['reason']}"
        return render(
            request, "overview.html", view=view, plot=plot, can_edit=_can_edit(user, dag_id), done=message,
            card_metrics=CARD_METRICS,
        )  # fmt: skip

    def _run_or_404(run_id: str, sort: pages.TrialSort | None = None) -> dict[str, Any]:
        try:
            return pages.run_view(store(), runs_root(), run_id, sort)
        except pages.UnknownRun as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/dags/{run_dag_id}/runs/{run_id}", response_class=HTMLResponse, dependencies=[can_read])
    def run_page(
        request: Request, run_dag_id: str, run_id: str, sort: str | None = None, order: str | None = None
    ) -> HTMLResponse:
        if run_dag_id != dag_id:
            return render(request, "other_dag.html", other=run_dag_id, run_id=run_id)
        view = _run_or_404(run_id, pages.TrialSort.parse(sort, order))
        if not view["recorded"]:  # failed before it wrote a row: what failure.json says
            return render(request, "failed.html", v=view)
        report_html = _markdown(view["report_md"], f"{base(request)}/dags/{dag_id}/runs/{quote(run_id, safe='')}", view)
        plots = [kind for kind in PLOT_KINDS if f"{kind}.png" in view["files"] or _has_rows(view, kind)]
        return render(
            request,
            "run.html",
            v=view,
            trial_columns=trial_columns(view["k"]),
            headline_metrics=HEADLINE_METRICS,
            segment_metrics=SEGMENT_METRICS,
            plots=plots,
            report_html=report_html,
            run_base=f"{base(request)}/dags/{dag_id}/runs/{quote(run_id, safe='')}",
        )

    @app.get("/dags/{run_dag_id}/runs/{run_id}/files/{name}", dependencies=[can_read])
    def run_file(run_dag_id: str, run_id: str, name: str) -> FileResponse:
        if run_dag_id != dag_id:
            raise HTTPException(404, f"DAG {run_dag_id!r} has no recsys results")
        view = _run_or_404(run_id)
        if not view["recorded"]:
            raise HTTPException(404, f"run {run_id!r} recorded no results (it failed); no files to serve")
        # The name only selects among the files the folder lists; it never becomes a path itself.
        path = view["files"].get(name)
        if path is None:
            raise HTTPException(404, f"run {run_id!r}: no file {name!r} in its report folder")
        # A report file is data, never a page: no script in an SVG or a sniffed type runs in this origin.
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"}
        return FileResponse(path, media_type=pages.SERVED_SUFFIXES[path.suffix], headers=headers)

    @app.get("/dags/{run_dag_id}/runs/{run_id}/plots/{kind}.png", dependencies=[can_read])
    def run_plot(run_dag_id: str, run_id: str, kind: str) -> Response:
        from music_recsys.ui.plots import FIGURE_LOCK, report_png

        if run_dag_id != dag_id or kind not in PLOT_KINDS:
            raise HTTPException(404, f"no plot {kind!r} of DAG {run_dag_id!r}; plots: {', '.join(PLOT_KINDS)}")
        view = _run_or_404(run_id)
        if not view["recorded"]:
            raise HTTPException(404, f"run {run_id!r} recorded no results (it failed); nothing to draw")
        saved = view["files"].get(f"{kind}.png")
        if saved is not None:
            return FileResponse(saved, media_type="image/png")
        rows, arguments = pages.plot_rows(store(), run_id, kind)
        with FIGURE_LOCK:
            png = report_png(kind, rows, arguments)
        if png is None:
            raise HTTPException(404, f"run {run_id!r}: no rows to draw {kind} from")
        return Response(png, media_type="image/png")

    def _target(version: str) -> dict[str, Any]:
        from music_recsys.store import registry

        row = registry.get(store(), version)
        if row is None:
            raise HTTPException(404, f"no model version {version!r} in the registry")
        return row

    @app.get("/models/{version}/promote", response_class=HTMLResponse, dependencies=[can_edit])
    def confirm_promote(request: Request, version: str, user: GetUserDep) -> HTMLResponse:
        from music_recsys.store import registry

        target = _target(version)
        champion = registry.champion(store())
        if target["status"] == registry.AWAITING:
            verb, button = "Decide on", None  # answered in Airflow's Required Actions, not here
        elif target["status"] == "candidate":
            verb, button = "Promote", "Promote"
        else:
            verb, button = "Roll back to", "Roll back"
        return render(
            request, "confirm.html", target=target, champion=champion, verb=verb, button=button,
            user=_user_name(user), csrf_token=csrf_token(secret, user),
        )  # fmt: skip

    @app.post("/models/{version}/promote", dependencies=[can_edit])
    async def promote(request: Request, version: str, user: GetUserDep) -> Response:
        from starlette.concurrency import run_in_threadpool

        from music_recsys.store import registry

        if not _same_origin(request):
            raise HTTPException(403, f"promote: Origin {request.headers.get('origin')!r} is not this server")
        form = await _read_form(request)
        header_jwt = request.headers.get("authorization", "").lower().startswith("bearer ")
        if not header_jwt and not csrf_valid(secret, user, form.get("csrf_token", "")):
            raise HTTPException(403, "promote: missing, wrong or expired CSRF token; open the confirmation page again")
        target = await run_in_threadpool(_target, version)
        if target["status"] == "champion":
            return RedirectResponse(f"{base(request)}/?done={quote(version, safe='')}", status_code=303)
        if target["status"] == registry.AWAITING:
            raise HTTPException(
                409,
                f"model {version} awaits a decision in Airflow's Required Actions "
                f"({airflow_base(request)}{required_action_path(dag_id, target['run_id'])}): answer it there",
            )
        verb = "promoted" if target["status"] == "candidate" else "rolled back to"
        note = form.get("note", "").strip()[:300]
        reason = f"{verb} by {_user_name(user)} in the Airflow UI" + (f": {note}" if note else "")
        try:
            await run_in_threadpool(registry.promote_manually, store(), version, reason)
        except LookupError as exc:
            raise HTTPException(409, str(exc)) from exc
        return RedirectResponse(f"{base(request)}/?done={quote(version, safe='')}", status_code=303)

    return app


def _has_rows(view: dict[str, Any], kind: str) -> bool:
    if kind == "als_grid":
        return any(r["status"] == "success" for r in view["trials"])
    if kind == "segments":
        return bool(view["segments"])
    return bool(view["fast_search"])


def _markdown(text: str | None, run_base: str, view: dict[str, Any]) -> str | None:
    """``report.md`` as HTML: raw HTML in the markdown is escaped, images point at the run's served files."""
    if text is None:
        return None
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                name = child.attrGet("src") or ""
                # Only images the run's folder holds; anything else (a URL, a path) is dropped.
                child.attrSet("src", f"{run_base}/files/{quote(name)}" if name in view["files"] else "")
    return md.renderer.render(tokens, md.options, {})
