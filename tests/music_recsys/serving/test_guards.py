"""The API's operator-facing layer, in process: the body limit, strict types and the 400, the bearer token,
``X-Model-Version``, the access log, ``/metrics`` and the offline docs.

The real server (uvicorn, signals, slow clients) is in ``test_live_server.py``; the fuzzer in
``test_contract.py``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from music_recsys.serving import auth
from music_recsys.serving.app import Settings, create_app
from music_recsys.serving.auth import read_token
from music_recsys.serving.limits import DEFAULT_MAX_BODY_BYTES
from music_recsys.serving.schemas import history_limit
from tests.music_recsys.serving.bundles import ANNOY, Switch, make_arrays, wait_for, write_test_bundle

TOKEN = "tok-3f9a1c7e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_test_bundle(tmp_path_factory.mktemp("guards"), make_arrays(seed=1), "a", annoy=ANNOY)


def client_for(locate, **settings) -> tuple[TestClient, object]:
    app = create_app(Settings(locate=locate, poll_seconds=0.05, **settings))
    return TestClient(app), app


@pytest.fixture
def served(bundle):
    """(client, app) serving bundle "a", no token, the default body limit."""
    client, app = client_for(Switch(("a", bundle)))
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        yield client, app


@pytest.fixture
def guarded(bundle):
    """(client, app) serving bundle "a" behind ``TOKEN``."""
    client, app = client_for(Switch(("a", bundle)), token=TOKEN)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        yield client, app


def samples(client: TestClient, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


# --- the body limit -----------------------------------------------------------------------------------


def test_the_history_limit_is_the_most_entries_a_body_under_the_limit_can_carry():
    n = history_limit(DEFAULT_MAX_BODY_BYTES)
    assert n == 61_680  # (1,048,576 - 14 + 1) // 17
    body = lambda entries: json.dumps({"history": [{"track_id": "x"}] * entries}, separators=(",", ":"))  # noqa: E731
    assert len(body(n)) <= DEFAULT_MAX_BODY_BYTES < len(body(n + 1))
    assert history_limit(4096) == (4096 - 14 + 1) // 17 == 240


def test_the_schema_caps_the_history_at_the_body_limit(served):
    client, _ = served
    schema = client.get("/openapi.json").json()["components"]["schemas"]["HistoryRequest"]
    assert schema["properties"]["history"]["maxItems"] == 61_680
    small, app = client_for(Switch(None), max_body_bytes=4096)
    assert app.openapi()["components"]["schemas"]["HistoryRequest"]["properties"]["history"]["maxItems"] == 240


def test_a_body_over_the_limit_by_content_length_is_a_413_naming_the_limit(bundle):
    client, app = client_for(Switch(("a", bundle)), max_body_bytes=2048)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        history = [{"track_id": "t03"}] * 200  # 3,613 bytes of JSON
        response = client.post("/recommendations", json={"history": history})
        assert response.status_code == 413
        assert response.json() == {
            "detail": "request body over the limit of 2,048 bytes (music-recsys serve --max-body-bytes)"
        }
        assert response.headers["connection"] == "close"
        assert response.headers["x-model-version"] == "a"
        # Under the limit the same endpoint answers: the limit is the body's size, nothing else.
        assert client.post("/recommendations", json={"history": history[:50], "k": 3}).status_code == 200


def test_a_chunked_body_over_the_limit_is_a_413(bundle):
    """No Content-Length: the limit is counted on the bytes received. (That it is refused while it is read,
    before the client has sent it all, needs a real server: test_live_server.py.)"""
    client, app = client_for(Switch(("a", bundle)), max_body_bytes=2048)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        chunks = (b" " * 1000 for _ in range(1000))
        response = client.post("/recommendations", content=chunks, headers={"content-type": "application/json"})
    assert (
        response.request.headers["transfer-encoding"] == "chunked" and "content-length" not in response.request.headers
    )
    assert response.status_code == 413
    assert "2,048 bytes" in response.json()["detail"]


def test_a_chunked_body_under_the_limit_is_served(served):
    client, _ = served
    payload = json.dumps({"history": [{"track_id": "t03", "count": 3}], "k": 4}).encode()
    parts = iter([payload[:10], payload[10:]])
    response = client.post("/recommendations", content=parts, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 4


def _asgi_post(middleware, chunks_with_delays):
    """Drive ``middleware`` as a server would: a chunked POST whose chunks arrive after the given delays."""
    import asyncio

    sent: list[dict] = []
    pending = list(chunks_with_delays)

    async def receive():
        if not pending:
            await asyncio.sleep(3600)  # nothing more arrives
        delay, chunk = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/recommendations",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_a_body_trickled_past_the_timeout_is_a_408():
    from music_recsys.serving.limits import BodyLimit

    reached = []

    async def app(scope, receive, send):
        reached.append((await receive())["body"])

    started = time.perf_counter()
    sent = _asgi_post(BodyLimit(app, max_bytes=4096, timeout_seconds=0.3), [(0.0, b"{"), (0.2, b" "), (5.0, b"}")])
    assert time.perf_counter() - started < 2  # answered at the deadline, not when the client is done
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {
        "detail": "request body not received within 0.3 s (music-recsys serve --body-timeout-seconds)"
    }
    assert reached == []  # the app never saw a byte
    # The same trickle, done within the deadline, reaches the app whole.
    sent = _asgi_post(BodyLimit(app, max_bytes=4096, timeout_seconds=2), [(0.0, b"{"), (0.1, b" "), (0.1, b"}")])
    assert reached == [b"{ }"]


# --- strict types and the 400 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, field, kind",
    [
        ({"exact": 0}, "exact", "bool_type"),
        ({"exact": "true"}, "exact", "bool_type"),
        ({"k": "5"}, "k", "int_type"),
        ({"k": 5.5}, "k", "int_type"),
        ({"k": True}, "k", "int_type"),
        ({"history": [{"track_id": "t01", "count": "2"}]}, "count", "int_type"),
        ({"history": [{"track_id": 7}]}, "track_id", "string_type"),
    ],
)
def test_the_body_is_validated_strictly(served, payload, field, kind):
    client, _ = served
    response = client.post("/recommendations", json=payload)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert (error["loc"][-1], error["type"]) == (field, kind)


def test_an_integral_number_is_an_integer_as_json_schema_says(served):
    client, _ = served
    body = client.post("/recommendations", json={"history": [{"track_id": "t03", "count": 2.0}], "k": 3.0}).json()
    assert (len(body["items"]), body["known_tracks"]) == (3, 1)


@pytest.mark.parametrize("body", [b"not json", b'{"history": [', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_a_400(served, body):
    client, _ = served
    response = client.post("/recommendations", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the request body is not valid JSON (")


# --- the token ----------------------------------------------------------------------------------------


def test_read_token_from_a_file_the_environment_or_nowhere(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(f"{TOKEN}\n")
    assert read_token(secret, environ={"RECSYS_API_TOKEN": "other"}) == (TOKEN, f"--token-file {secret}")
    assert read_token(None, environ={"RECSYS_API_TOKEN": f" {TOKEN} "}) == (TOKEN, "RECSYS_API_TOKEN")
    assert read_token(None, environ={}) == (None, "none")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="token file .*empty is empty; write the token in it"):
        read_token(tmp_path / "empty", environ={})
    with pytest.raises(ValueError, match="token file .*missing: cannot be read"):
        read_token(tmp_path / "missing", environ={})
    assert read_token(None, environ={"RECSYS_API_TOKEN": "  "}) == (None, "RECSYS_API_TOKEN is empty")


@pytest.mark.parametrize(
    "path", ["/model", "/users/u01/recommendations", "/tracks/t10/similar", "/metrics", "/docs", "/openapi.json"]
)
def test_with_a_token_every_endpoint_but_healthz_needs_it(guarded, path):
    client, _ = guarded
    missing = client.get(path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="music-recsys"'
    assert missing.json() == {"detail": "this API needs 'Authorization: Bearer <token>'"}
    wrong = client.get(path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="music-recsys", error="invalid_token"'
    basic = client.get(path, headers={"Authorization": f"Basic {TOKEN}"})
    assert (basic.status_code, basic.headers["www-authenticate"].endswith('error="invalid_request"')) == (401, True)
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get(path, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200  # scheme: any case
    assert client.get("/healthz").status_code == 200


def test_the_post_endpoint_needs_the_token_too(guarded):
    client, _ = guarded
    body = {"history": [{"track_id": "t03"}], "k": 2}
    assert client.post("/recommendations", json=body).status_code == 401
    assert client.post("/recommendations", json=body, headers=AUTH).status_code == 200


def test_the_token_is_compared_in_constant_time(guarded, monkeypatch):
    client, _ = guarded
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert client.get("/model", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert calls == [(b"guess", TOKEN.encode())]


def test_the_token_is_never_logged_and_an_open_server_says_so(bundle, caplog):
    caplog.set_level(logging.INFO)
    client, app = client_for(Switch(("a", bundle)), token=TOKEN)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        client.get("/users/u01/recommendations", headers=AUTH)
        client.get("/model", headers={"Authorization": "Bearer wrong-guess"})
    assert "a bearer token is required on every endpoint but /healthz" in caplog.text
    assert TOKEN not in caplog.text and "wrong-guess" not in caplog.text
    assert TOKEN not in repr(app.middleware_stack)
    caplog.clear()
    client, app = client_for(Switch(("a", bundle)))
    with client:
        wait_for(lambda: app.state.holder.version == "a")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no API token set (RECSYS_API_TOKEN or --token-file): every endpoint is open" in w for w in warnings)


def test_the_openapi_document_declares_the_token_when_one_is_set(guarded):
    client, _ = guarded
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the server's RECSYS_API_TOKEN (or --token-file)",
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path == "/healthz":
                assert "security" not in operation and "401" not in operation["responses"]
            else:
                assert operation["security"] == [{"bearer": []}] and "401" in operation["responses"]


# --- the contract ---------------------------------------------------------------------------------------


def test_every_operation_documents_its_answers_with_a_schema(served):
    client, _ = served
    schema = client.get("/openapi.json").json()
    documented = {
        (path, method): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert documented == {
        ("/healthz", "get"): {"200", "503"},
        ("/model", "get"): {"200", "503"},
        ("/users/{user_id}/recommendations", "get"): {"200", "404", "422", "503"},
        ("/recommendations", "post"): {"200", "400", "408", "413", "422", "503"},
        ("/tracks/{track_id}/similar", "get"): {"200", "404", "422", "503"},
        ("/metrics", "get"): {"200"},
    }
    for (path, method), statuses in documented.items():
        for status in statuses:
            response = schema["paths"][path][method]["responses"][status]
            assert response["content"], (path, method, status)
            assert response["headers"]["X-Model-Version"]["required"] is True
            if path != "/metrics":
                assert "$ref" in response["content"]["application/json"]["schema"], (path, method, status)
    error = schema["paths"]["/users/{user_id}/recommendations"]["get"]["responses"]["404"]
    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Detail"}


def test_every_answer_carries_the_model_version(served, bundle):
    client, _ = served
    answers = [
        client.get("/healthz"),
        client.get("/users/u01/recommendations"),
        client.get("/users/nobody/recommendations"),  # 404
        client.get("/users/u01/recommendations", params={"k": 0}),  # 422
        client.post("/recommendations", content=b"{", headers={"content-type": "application/json"}),  # 400
        client.get("/no/such/route"),  # 404 from the router
        client.get("/metrics"),
    ]
    assert [r.status_code for r in answers] == [200, 200, 404, 422, 400, 404, 200]
    assert {r.headers["x-model-version"] for r in answers} == {"a"}
    empty, app = client_for(Switch(None))
    with empty:
        wait_for(lambda: app.state.holder.last_error is not None)
        response = empty.get("/users/u01/recommendations")
        assert (response.status_code, response.headers["x-model-version"]) == (503, "none")


def test_a_server_error_is_a_500_with_the_header_and_counted(bundle, monkeypatch):
    client, app = client_for(Switch(("a", bundle)))
    client = TestClient(app, raise_server_exceptions=False)
    with client:
        wait_for(lambda: app.state.holder.version == "a")

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.holder.model, "recommend", broken)
        response = client.get("/users/u01/recommendations")
        assert (response.status_code, response.headers["x-model-version"]) == (500, "a")
        assert response.json() == {"detail": "internal server error"}
        got = samples(client)
    key = (("method", "GET"), ("route", "/users/{user_id}/recommendations"), ("status", "500"))
    assert got[("recsys_http_requests_total", key)] == 1.0


def swapping_client(bundle, tmp_path):
    """A client whose registry names bundle ``a``; ``swap()`` makes it name bundle ``b``."""
    other = write_test_bundle(tmp_path, make_arrays(seed=2), "b", annoy=None)
    switch = Switch(("a", bundle))
    client, app = client_for(switch)

    def swap() -> None:
        switch.found = ("b", other)

    return client, app, swap


def test_the_header_names_the_model_that_answered_across_a_swap(bundle, tmp_path):
    client, app, swap = swapping_client(bundle, tmp_path)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        swap()
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while seen.count("b") < 50 and time.monotonic() < deadline:
            response = client.get("/users/u03/recommendations", params={"k": 2})
            assert response.headers["x-model-version"] == response.json()["model_version"]
            seen.append(response.json()["model_version"])
    assert set(seen) == {"a", "b"} and seen.count("b") == 50


# --- the access log ---------------------------------------------------------------------------------------


def test_one_access_line_per_request_with_route_status_latency_and_version_never_the_history(bundle):
    stream = io.StringIO()
    client, app = client_for(Switch(("a", bundle)), access_stream=stream)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        start = len(stream.getvalue())
        client.get("/users/u07/recommendations", params={"k": 3})
        client.post("/recommendations", json={"history": [{"track_id": "t42", "count": 9}, {"track_id": "secret-x"}]})
        client.get("/tracks/t999/similar")
        client.get("/model", headers={"Authorization": "Bearer x"})  # no token set: the header is ignored
    text = stream.getvalue()[start:]
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["method"], line["route"], line["status"], line["model_version"]) for line in lines] == [
        ("GET", "/users/{user_id}/recommendations", 200, "a"),
        ("POST", "/recommendations", 200, "a"),
        ("GET", "/tracks/{track_id}/similar", 404, "a"),
        ("GET", "/model", 200, "a"),
    ]
    assert all(list(line) == ["time", "method", "route", "status", "latency_ms", "model_version"] for line in lines)
    assert all(0 < line["latency_ms"] < 5000 for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    assert "u07" not in text and "t42" not in text and "secret-x" not in text and "t999" not in text


def test_the_access_log_can_be_turned_off(bundle):
    stream = io.StringIO()
    client, app = client_for(Switch(("a", bundle)), access_log=False, access_stream=stream)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        assert client.get("/users/u01/recommendations").status_code == 200
    assert stream.getvalue() == ""


# --- /metrics ------------------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_and_status_with_latency(served):
    client, _ = served
    for _ in range(3):
        client.get("/users/u01/recommendations", params={"k": 2})
    client.get("/users/u02/recommendations", params={"k": 2})
    client.get("/users/nobody/recommendations")
    client.get("/users/u01/recommendations", params={"k": "x"})
    client.get("/no/such/route")
    got = samples(client)
    route = "/users/{user_id}/recommendations"
    count = lambda status: got[  # noqa: E731
        ("recsys_http_requests_total", (("method", "GET"), ("route", route), ("status", status)))
    ]
    assert (count("200"), count("404"), count("422")) == (4.0, 1.0, 1.0)
    unmatched = ("recsys_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    assert got[unmatched] == 1.0
    histogram = ("method", "GET"), ("route", route), ("status", "200")
    assert got[("recsys_http_request_duration_seconds_count", histogram)] == 4.0
    assert 0 < got[("recsys_http_request_duration_seconds_sum", histogram)] < 20
    every = tuple(sorted((*histogram, ("le", "+Inf"))))
    assert got[("recsys_http_request_duration_seconds_bucket", every)] == 4.0
    assert not any("nobody" in str(key) or "u01" in str(key) for key in got)  # ids never become labels


def test_metrics_show_the_version_reloads_failed_loads_fallbacks_and_fold_ins(bundle, tmp_path):
    broken = shutil.copytree(bundle, tmp_path / "broken")
    (broken / "item_factors.npy").write_bytes((broken / "item_factors.npy").read_bytes()[:-64])
    switch = Switch(("a", bundle))
    client, app = client_for(switch)
    with client:
        holder = app.state.holder
        wait_for(lambda: holder.version == "a")
        client.post("/recommendations", json={"history": [{"track_id": "t03"}]})
        client.post("/recommendations", json={"history": [{"track_id": "unknown"}]})
        client.post("/recommendations", json={"history": []})
        switch.found = ("c", broken)
        wait_for(lambda: holder.failed_loads >= 1)
        switch.found = ConnectionError("registry down")
        wait_for(lambda: holder.last_error.startswith("registry"))
        got = samples(client)
    assert got[("recsys_model_info", (("version", "a"),))] == 1.0
    assert got[("recsys_model_reloads_total", ())] == 1.0
    assert got[("recsys_model_load_failures_total", ())] >= 1.0
    assert got[("recsys_model_registry_errors_total", ())] >= 1.0
    assert got[("recsys_model_loaded_timestamp_seconds", ())] == pytest.approx(holder.loaded_at.timestamp(), abs=1)
    assert got[("recsys_foldin_requests_total", (("outcome", "folded_in"),))] == 1.0
    assert got[("recsys_foldin_requests_total", (("outcome", "popularity"),))] == 2.0
    assert got[("recsys_popularity_fallbacks_total", (("route", "/recommendations"),))] == 2.0


def test_a_reload_changes_the_version_info(bundle, tmp_path):
    client, app, swap = swapping_client(bundle, tmp_path)
    with client:
        wait_for(lambda: app.state.holder.version == "a")
        swap()
        wait_for(lambda: app.state.holder.version == "b")
        got = samples(client)
    assert got[("recsys_model_info", (("version", "b"),))] == 1.0
    assert ("recsys_model_info", (("version", "a"),)) not in got
    assert got[("recsys_model_reloads_total", ())] == 2.0


# --- offline docs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page, assets", [("/docs", ["swagger-ui-bundle.js", "swagger-ui.css"]), ("/redoc", ["redoc.standalone.js"])]
)
def test_the_docs_load_their_assets_from_the_app_not_a_cdn(served, page, assets):
    client, _ = served
    html = client.get(page)
    assert html.status_code == 200
    assert "cdn" not in html.text and "https://" not in html.text and "http://" not in html.text
    assert "/openapi.json" in html.text
    for asset in assets:
        url = f"/static-offline-docs/{asset}"
        assert url in html.text
        served_asset = client.get(url)
        assert served_asset.status_code == 200 and len(served_asset.content) > 100_000, asset
