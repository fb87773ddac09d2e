"""The API against its own OpenAPI document: Schemathesis, every check, a fixed seed, on a real server.

The server runs behind a token (so the fuzzer's ``ignored_auth`` check has something to verify) over the
demo-size test bundle. The document it serves is generic; the test adds a known user, track and history
as examples to a copy, so the examples phase and the fuzzer's mutations of them reach the 200 paths, not
only the 404s of random ids. After the run, the server's own ``/metrics`` shows that every operation
answered 200 at least once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.music_recsys.serving.bundles import ANNOY, make_arrays, write_test_bundle
from tests.music_recsys.serving.live import LiveServer

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TOKEN = "contract-51be0a"
SEED = 20261201
MAX_EXAMPLES = 60  # per operation and phase: ~1,000 requests in all, about 15 s here

KNOWN = {"user_id": "u07", "track_id": "t10"}
HISTORY = {"history": [{"track_id": "t03", "count": 3}, {"track_id": "t04"}], "k": 5, "exact": False}


def with_examples(schema: dict) -> dict:
    """``schema`` with a known id as the example of each path parameter and a known history as the body's."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in KNOWN:
                    parameter["example"] = KNOWN[parameter["name"]]
                elif parameter["in"] == "query" and parameter["name"] == "k":
                    parameter["example"] = 5
            if "requestBody" in operation:
                operation["requestBody"]["content"]["application/json"]["example"] = HISTORY
    return schema


@pytest.mark.slow
def test_schemathesis_finds_no_failure_with_every_check(tmp_path):
    bundle = write_test_bundle(tmp_path / "models", make_arrays(seed=2), "b", annoy=ANNOY)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with LiveServer(bundle, tmp_path / "server.log", "--no-access-log", token=TOKEN) as server:
        schema = httpx.get(f"{server.url}/openapi.json", headers=auth).json()
        document = tmp_path / "openapi.json"
        document.write_text(json.dumps(with_examples(schema)))
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                str(document),
                "--url",
                server.url,
                "--checks",
                "all",
                "--seed",
                str(SEED),
                "--max-examples",
                str(MAX_EXAMPLES),
                "--workers",
                "1",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        output = run.stdout + run.stderr
        (tmp_path / "schemathesis.txt").write_text(output)
        metrics = httpx.get(f"{server.url}/metrics", headers=auth).text
    summary = output[output.rfind("SUMMARY") :]
    assert run.returncode == 0, output[-6000:]
    assert re.search(r"Selected: 6/6", summary) and re.search(r"Tested: 6", summary), summary
    generated = int(re.search(r"(\d+) generated", summary).group(1))
    assert generated >= 500, summary
    assert "found" not in re.search(r"Test cases:\n.*", summary).group(0), summary
    answered = r'recsys_http_requests_total\{method="\w+",route="([^"]+)",status="200"\}'
    ok = set(re.findall(answered, metrics))
    assert ok >= {
        "/healthz",
        "/model",
        "/users/{user_id}/recommendations",
        "/recommendations",
        "/tracks/{track_id}/similar",
        "/metrics",
    }, ok
    for status in ("401", "404", "422"):
        assert f'status="{status}"' in metrics, status
