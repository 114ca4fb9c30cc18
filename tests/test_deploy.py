"""Deployment files: compose (compose-spec schema), Dockerfiles, Prometheus config/alerts (promtool), and the
Grafana dashboard — every metric its queries (and the alert rules) name is really exported by the live stack."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import urllib.request
from importlib import resources
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "helm" / "funasr-triton" / "files"  # monitoring assets shared by compose and the chart
DASHBOARD = FILES / "dashboard.json"
PROM_CONFIG = FILES / "prometheus" / "prometheus.yml"
ALERTS = FILES / "prometheus" / "alerts.yml"
DOCKERFILES = {"triton": ROOT / "model_repository" / "Dockerfile", "frontend": ROOT / "frontend" / "Dockerfile",
               "triton-cpu": ROOT / "model_repository" / "Dockerfile.cpu",
               "export": ROOT / "export" / "Dockerfile"}

# A CPU-only Triton exports no GPU metrics; these are named by the dashboard/alerts and cannot be scraped here.
GPU_ONLY_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}


# ---------------------------------------------------------------- compose

class _Reset:
    """Compose's `!reset` tag: the key is removed from the merged file."""


class _Override:
    def __init__(self, value):
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    pass


def _reset(loader, node):
    return _Reset()


def _override(loader, node):
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def merge(base, over):
    """Compose merge as needed here: mappings merge recursively, `!reset` removes, `!override` and scalars replace,
    sequences of an override file are appended (ports, volumes...) without duplicates."""
    if isinstance(over, _Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if isinstance(v, _Reset):
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v)
            else:
                out[k] = v.value if isinstance(v, _Override) else v
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return over


def strip_tags(value):
    assert not isinstance(value, (_Reset, _Override)), "!reset/!override belongs in an override file only"
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_tags(v) for v in value]
    return value


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    # compose-spec's JSON schema (Apache-2.0), as vendored by check-jsonschema
    return json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                      .joinpath("compose-spec.json").read_text())


@pytest.fixture(scope="module")
def compose_gpu() -> dict:
    return strip_tags(load_compose(ROOT / "docker-compose.yml"))


@pytest.fixture(scope="module")
def compose_cpu() -> dict:
    return merge(load_compose(ROOT / "docker-compose.yml"), load_compose(ROOT / "docker-compose.cpu.yml"))


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_compose_matches_compose_spec(variant, compose_schema, compose_gpu, compose_cpu):
    doc = compose_gpu if variant == "gpu" else compose_cpu
    cls = jsonschema.validators.validator_for(compose_schema)
    errors = sorted(cls(compose_schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def _ports(service: dict) -> set[str]:
    return {str(p).split(":")[-1] for p in service.get("ports", [])}


def test_compose_services(compose_gpu, compose_cpu):
    s = compose_gpu["services"]
    assert {"triton", "frontend", "prometheus", "grafana", "export"} <= set(s)
    t = s["triton"]
    # the GPU through NVIDIA's runtime: a scalar the CPU override replaces (compose v1 cannot remove a
    # deploy.resources.reservations.devices entry, and v1 does not know `!reset`)
    assert t["runtime"] == "nvidia" and "deploy" not in t
    assert "gpu-" in t["environment"]["PROFILE"]
    assert t["shm_size"]
    assert any(v.endswith(":/models:ro") or v.endswith(":/models") for v in t["volumes"])
    assert {"8000", "8001", "8002"} <= _ports(t)
    assert "/v2/health/ready" in " ".join(t["healthcheck"]["test"])
    f = s["frontend"]
    assert f["depends_on"]["triton"]["condition"] == "service_healthy"
    assert f["environment"]["FUNASR_TRITON_TRITON__URL"] == "triton:8001"
    assert "8000" in _ports(f)
    assert "/health" in " ".join(f["healthcheck"]["test"])
    assert s["export"]["profiles"] == ["export"]
    for svc in s.values():  # every bind-mounted file or folder exists; named volumes are declared
        for v in svc.get("volumes", []):
            src = re.sub(r"^\$\{[A-Z_]+:-([^}]+)\}", r"\1", v).split(":")[0]  # ${VAR:-default}: the default
            if src.startswith("."):
                assert (ROOT / src).exists(), src
            else:
                assert src in compose_gpu["volumes"], src
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    for svc in ("triton", "frontend", "prometheus", "grafana"):
        assert s[svc]["init"] is True, svc  # signals reach the process: `down` does not wait out the grace period
    # the CPU override: the CPU image, no GPU runtime, cpu profile, everything else unchanged
    tc = compose_cpu["services"]["triton"]
    assert "deploy" not in tc and tc["runtime"] == "runc"
    assert tc["image"].startswith("funasr-triton/triton-cpu") and tc["build"]["dockerfile"] == "model_repository/Dockerfile.cpu"
    assert (ROOT / tc["build"]["dockerfile"]).is_file()
    assert tc["environment"]["PROFILE"] == "${PROFILE:-cpu}"
    assert tc["volumes"] == t["volumes"] and tc["healthcheck"]["test"] == t["healthcheck"]["test"]


def test_compose_files_load_with_compose_v1():
    """Debian's docker-compose 1.29 (what `make e2e` runs) rejects `!reset` and a top-level `name`."""
    for path in (ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml"):
        doc = yaml.safe_load(path.read_text())  # no custom tags
        assert "name" not in doc and "version" not in doc


# ---------------------------------------------------------------- Dockerfiles

def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _one(instr, word) -> list[str]:
    return [rest for w, rest in instr if w == word]


def _non_root(instr) -> None:
    users = _one(instr, "USER")
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"


def _requirement_names(reqs) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r.strip("'\""), maxsplit=1)[0].lower() for r in reqs}


def _installs_the_model_code(dockerfile: Path) -> None:
    """The Triton images install funasr_triton_models (model_code/) with --no-deps after the `models` list (the
    GPU image's onnxruntime-gpu must not be joined by onnxruntime); the build context lets model_code/ in."""
    instr = _instructions(dockerfile)
    assert ["model_code", "/tmp/model_code"] in [c.split() for c in _one(instr, "COPY")]
    pip = " ".join(r for r in _one(instr, "RUN") if "pip install" in r)
    assert "pip install --no-cache-dir --no-deps /tmp/model_code" in pip
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!model_code" in ignore and ignore.index("*") < ignore.index("!model_code")


def test_model_code_installs_alone_with_the_models_extra():
    """model_code/pyproject.toml (the package alone, for the Triton images) asks for the `models` extra."""
    alone = tomllib.loads((ROOT / "model_code" / "pyproject.toml").read_text())["project"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert _requirement_names(alone["dependencies"]) == _requirement_names(extras["models"]) | {"numpy"}
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    assert "model_code" in found  # `pip install -e .` has it too


def test_triton_dockerfile():
    instr = _instructions(DOCKERFILES["triton"])
    assert _one(instr, "FROM") == ["nvcr.io/nvidia/tritonserver:24.10-py3"]
    pip = [r for r in _one(instr, "RUN") if "pip install" in r]
    assert len(pip) == 1
    installed = _requirement_names(re.findall(r'"([^"]+)"', pip[0]))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    # the image takes the GPU build of onnxruntime (CUDA EP for streaming_asr's gpu-* profiles)
    wanted = {"onnxruntime-gpu" if n == "onnxruntime" else n for n in _requirement_names(extras["models"])}
    assert installed == wanted | {"numpy"}, "keep in step with the `models` extra"
    _installs_the_model_code(DOCKERFILES["triton"])
    _non_root(instr)
    assert "/v2/health/ready" in _one(instr, "HEALTHCHECK")[0]
    entry = " ".join(_one(instr, "ENTRYPOINT"))
    assert "--model-config-name" in entry and "PROFILE" in entry


def test_triton_cpu_dockerfile():
    """The CPU image: no NGC, Debian + the tritonserver of nvidia-pytriton + the `models` extra."""
    instr = _instructions(DOCKERFILES["triton-cpu"])
    assert _one(instr, "FROM") == ["debian:bookworm-slim"]
    pip = [r for r in _one(instr, "RUN") if "pip install" in r]
    installed = _requirement_names(re.findall(r'"([^"]+)"', " ".join(pip)))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert pyproject["triton"] == ["nvidia-pytriton==0.7.0"] and '"nvidia-pytriton==0.7.0"' in " ".join(pip)
    assert installed == _requirement_names(pyproject["models"]) | {"numpy", "nvidia-pytriton"}, \
        "keep in step with the `models` extra"
    _installs_the_model_code(DOCKERFILES["triton-cpu"])
    runs = " ".join(_one(instr, "RUN"))
    assert "python_backend_stubs/3.11" in runs and "libpython3.11" in runs  # bookworm's Python is 3.11
    _non_root(instr)
    assert "/v2/health/ready" in _one(instr, "HEALTHCHECK")[0]
    entry = " ".join(_one(instr, "ENTRYPOINT"))
    assert "--model-config-name" in entry and "PROFILE" in entry and "--backend-directory" in entry
    # nothing specific to the CI machines (CA bundles, proxies, mirrors) in a product Dockerfile
    for path in DOCKERFILES.values():
        text = path.read_text().lower()
        assert "ca-certificates" not in text and "pip_cert" not in text and "proxy" not in text, path


def test_frontend_dockerfile():
    instr = _instructions(DOCKERFILES["frontend"])
    assert _one(instr, "FROM") == ["debian:bookworm-slim"]
    runs = " ".join(_one(instr, "RUN"))
    assert "ffmpeg" in runs
    assert re.search(r"pip install [^&]*\.(\s|$)", runs) and "[export]" not in runs and "torch" not in runs
    _non_root(instr)
    assert "/health" in _one(instr, "HEALTHCHECK")[0]
    assert "frontend" in _one(instr, "ENTRYPOINT")[0]
    # the `funasr-triton` command is funasr_triton_tools.cli: the wheel needs all three packages
    copies = [c.split() for c in _one(instr, "COPY")]
    assert all([d, f"./{d}"] in copies for d in ("frontend", "export", "tools"))


def test_export_dockerfile():
    instr = _instructions(DOCKERFILES["export"])
    runs = " ".join(_one(instr, "RUN"))
    assert '".[export]"' in runs and "whl/cpu" in runs
    # the pyannote interpreter is built next to the system Python, where pyannote_python() looks
    assert "bash export/pyannote-env.sh /usr/local" in runs and runs.index("pyannote-env") < runs.index("rm -rf /src")
    _non_root(instr)
    assert json.loads(_one(instr, "ENTRYPOINT")[0]) == ["funasr-triton", "export", "--repository", "/models"]
    # the wheel built from /src carries the repository skeleton: setup.py (build_py) and model_repository/ are in
    copies = [c.split() for c in _one(instr, "COPY")]
    assert any("setup.py" in c for c in copies) and ["model_repository", "./model_repository"] in copies
    assert all([d, f"./{d}"] in copies for d in ("frontend", "export", "tools"))
    assert ["model_code", "./model_code"] in copies  # verify and the exporters' checks run funasr_triton_models
    ignore = (ROOT / "export" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "model_repository/*/1/*" in ignore and "!model_repository/*/1/*.py" in ignore and "!model_repository/*/1/.keep" in ignore


# ---------------------------------------------------------------- Prometheus

@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # `make setup` (doctor) and .ci/run install it
        pytest.fail("promtool missing: apt-get install prometheus")
    return path


def test_promtool_check_config(promtool):
    r = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    scraped = {j["job_name"]: j for j in yaml.safe_load(PROM_CONFIG.read_text())["scrape_configs"]}
    assert scraped["triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    assert scraped["frontend"]["static_configs"][0]["targets"] == ["frontend:8000"]


def test_promtool_check_rules(promtool):
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- Grafana dashboard

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] if p["type"] != "row" for t in p["targets"]]


def alert_exprs() -> list[tuple[str, str]]:
    return [(r["alert"], r["expr"]) for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:funasr|nv)_[a-z0-9_]+\b", expr))


def test_dashboard_structure():
    d = dashboard()
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and "slo" in variables
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs()))
    assert {"funasr_audio_seconds_total", "funasr_rtf_bucket", "funasr_requests_total",
            "funasr_request_duration_seconds_bucket", "nv_inference_queue_duration_us",
            "nv_inference_compute_infer_duration_us", "nv_inference_count", "nv_inference_exec_count",
            "nv_inference_pending_request_count", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
            "nv_gpu_memory_total_bytes", "funasr_inflight_requests", "funasr_rejected_total"} <= used
    headroom = [p for p in panels if "headroom" in p["title"].lower()]
    assert headroom and "$slo" in headroom[0]["targets"][0]["expr"]


def test_dashboard_queries_parse(promtool, tmp_path):
    """Every panel query is valid PromQL: promtool checks them as recording rules (Grafana variables filled in)."""
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs()):
        expr = expr.replace("$__rate_interval", "1m").replace("$slo", "10")
        assert "$" not in expr, f"{title}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _exported(text: str) -> set[str]:
    """Sample names and metric family names (from # TYPE, so labelled metrics with no sample yet count too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _is_exported(name: str, exported: set[str]) -> bool:
    if name in exported:
        return True
    base = re.sub(r"_(bucket|sum|count|total|created)$", "", name)
    return base in exported


def test_every_queried_metric_is_exported(triton, frontend, speech_wav):
    r = httpx.post(frontend.base_url + "/v1/audio/transcriptions", timeout=300,
                   files={"file": ("speech.wav", speech_wav.read_bytes(), "audio/wav")}, data={"model": "whisper-1"})
    assert r.status_code == 200, r.text
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as resp:
        triton_names = _exported(resp.read().decode())
    front_names = _exported(httpx.get(frontend.base_url + "/metrics", timeout=10).text)
    exported = triton_names | front_names
    missing = []
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        for title, expr in exprs:
            for name in sorted(metric_names(expr)):
                if name in GPU_ONLY_METRICS:
                    continue
                if not _is_exported(name, exported):
                    missing.append(f"{source} / {title}: {name}")
    assert not missing, "not exported by the live stack:\n" + "\n".join(missing)
    # the allow-list stays honest: only GPU metrics, and only ones the files really use
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs() + alert_exprs()))
    assert GPU_ONLY_METRICS <= used and all(n.startswith("nv_gpu_") for n in GPU_ONLY_METRICS)


# ---------------------------------------------------------------- make e2e (CI)

def test_ci_runs_e2e_after_the_tests_with_one_package_list():
    run = (ROOT / ".ci" / "run").read_text().split()
    assert run[-4:] == ["make", "test", "make", "e2e"]
    e2e = (ROOT / ".ci" / "e2e").read_text()
    packages = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "e2e-apt-packages").read_text().splitlines()]
    assert {"docker.io", "docker-compose", "debootstrap"} <= set(packages)
    code = "\n".join(line for line in e2e.splitlines() if not line.lstrip().startswith("#"))
    assert ".ci/e2e-apt-packages" in code and "docker.io" not in code  # the list lives in one place
    # the CA trust goes into the locally built base image, never into a product Dockerfile (test_triton_cpu_dockerfile)
    assert "/usr/local/share/ca-certificates" in code and "base.Dockerfile" in code
    assert "docker-compose.yml -f docker-compose.cpu.yml" in code and "down -v" in code
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^e2e: setup\n\t.*\.ci/e2e$", make, re.M)
