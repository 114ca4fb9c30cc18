"""Schemathesis against the running frontend's /openapi.json with a bounded budget: no input it generates from the
document may get a 5xx, and every answer must be as documented. The document is also checked against what the routes really take (every route present,
the multipart forms described)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_frontend

ST = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = 12
# no 5xx, and every answer as documented (status code, content type, body schema, headers)
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance")


@pytest.fixture(scope="module")
def fuzzed(triton, tmp_path_factory):
    """Small limits so that generated uploads stay cheap; URL fetch on (SSRF refusals are part of the surface)."""
    fe = start_frontend(triton.grpc_url, tmp_path_factory.mktemp("fuzz"), FUNASR_TRITON_LIMITS__MAX_UPLOAD_BYTES="200000",
                        FUNASR_TRITON_LIMITS__MAX_AUDIO_SECONDS="20", FUNASR_TRITON_AUDIO__URL_FETCH_ENABLED="true",
                        FUNASR_TRITON_AUDIO__URL_TIMEOUT_S="2")
    yield fe
    fe.stop()


def test_openapi_describes_every_http_route(fuzzed):
    from tests.test_auth_walk import HTTP_ROUTES

    spec = httpx.get(fuzzed.base_url + "/openapi.json", timeout=30).json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    hidden = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/", "/demo", "/demo/static/{name}"}
    for method, path in HTTP_ROUTES:
        if path not in hidden:
            assert (method, path.replace(":path}", "}")) in documented, (method, path)
    for path, field in (("/v1/audio/transcriptions", "file"), ("/v1/audio/translations", "file"), ("/api", "audio")):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["properties"][field]["format"] == "binary" and field in form["required"], (path, form)
    aliyun = spec["paths"]["/stream/v1/asr"]["post"]
    assert {"format", "sample_rate", "audio_address", "vocabulary_id"} <= {p["name"] for p in aliyun["parameters"]}
    assert "application/octet-stream" in aliyun["requestBody"]["content"]


def test_schemathesis_finds_no_server_error(fuzzed, tmp_path, capsys):
    out = subprocess.run(
        [str(ST), "run", fuzzed.base_url + "/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
         "--generation-deterministic", "--workers", "1", "--request-timeout", "30",
         "--phases", "examples,coverage,fuzzing", "--report-dir", str(tmp_path), "--no-color"],
        capture_output=True, text=True, timeout=170, env=dict(os.environ, SCHEMATHESIS_HOOKS=""), cwd=tmp_path)
    summary = out.stdout[-4000:]
    counts = [line.strip() for line in out.stdout.splitlines() if " generated" in line]
    with capsys.disabled():
        print(f"\nschemathesis: {counts[-1] if counts else 'no summary'}")
    assert out.returncode == 0, summary + out.stderr[-2000:]
    log = fuzzed.log_file.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
