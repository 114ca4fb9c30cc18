"""The Triton pod of the Helm chart, simulated without Kubernetes: render the chart with Helm's own engine,
take the export init container and the Triton container as rendered (command, args, env, volume mounts,
ports, probes) and run them in order on this machine.

Mapping: every volumeMount's mountPath becomes a temp directory (per volume); the init container's
`--source` becomes `test` and its `--cache-dir` the project cache; `tritonserver` (NGC's binary) is a shim
that runs the embedded tritonserver (funasr_triton.server: locate, backend_dir, environment) with the
rendered args; `pip` (the pythonPackages install) is a shim that installs nothing (this venv has them).
The pod is up when the rendered startup and readiness probes pass; then a transcription through gRPC."""
from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from funasr_triton.server import free_ports
from tests.conftest import BIN, CACHE, ROOT

pytestmark = pytest.mark.integration  # runs the rendered pod's containers: Triton and a transcription

helm = pytest.importorskip("helm_python")
yaml = pytest.importorskip("yaml")

CHART = ROOT / "helm" / "funasr-triton"
TRITON = "asr-funasr-triton-triton"


def render_pod(values: dict) -> dict:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    out = chart.render(values, name="asr", namespace="speech", is_install=True)
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == TRITON:
                return doc["spec"]["template"]["spec"]
    raise AssertionError("no Triton Deployment rendered")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class PodSim:
    """Runs rendered containers of one pod with volumes mapped onto a temp directory."""

    def __init__(self, pod: dict, root: Path):
        self.pod, self.root = pod, root
        self.volumes = {v["name"]: root / "volumes" / v["name"] for v in pod["volumes"]}
        for d in self.volumes.values():
            d.mkdir(parents=True, exist_ok=True)
        self.shims = root / "shims"
        self.shims.mkdir()

    def mounts(self, container: dict) -> list[tuple[str, Path]]:
        out = []
        for m in container.get("volumeMounts", []):
            host = self.volumes[m["name"]] / m.get("subPath", "")
            host.mkdir(parents=True, exist_ok=True)
            out.append((m["mountPath"], host))
        return sorted(out, key=lambda x: -len(x[0]))  # /tmp/x before /tmp

    def map_paths(self, text: str, container: dict) -> str:
        """Each mountPath (as a whole path or a path prefix) -> its host directory, in one pass."""
        mounts = dict(self.mounts(container))
        if not mounts:
            return text
        pattern = "|".join(re.escape(m) for m in mounts)  # longest first
        return re.sub(rf"(?<![\w/.-])({pattern})(?=$|[/\s'\"=])", lambda m: str(mounts[m.group(1)]), text)

    def env(self, container: dict) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("HOME",)}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = self.map_paths(e["value"], container)
        env["PATH"] = os.pathsep.join([str(self.shims), str(BIN), env.get("PATH", "")])
        return env

    def command(self, container: dict) -> list[str]:
        return [self.map_paths(a, container) for a in container["command"] + container.get("args", [])]


def write_shims(sim: PodSim, triton_log: Path) -> None:
    from funasr_triton.server import backend_dir, environment, locate

    install = locate()
    backends = backend_dir(install, ROOT / ".cache" / "backends")
    env = environment(install)
    shim = sim.shims / "tritonserver"
    shim.write_text("#!/bin/sh\n# NGC's tritonserver -> the embedded one (python backend only)\n"
                    f"export LD_LIBRARY_PATH={shlex.quote(env['LD_LIBRARY_PATH'])}\n"
                    f"export PATH={shlex.quote(str(BIN))}:\"$PATH\"\n"
                    f"exec {shlex.quote(str(install.binary))} --backend-directory={shlex.quote(str(backends))} "
                    f"\"$@\" >>{shlex.quote(str(triton_log))} 2>&1\n")
    pip = sim.shims / "pip"
    pip.write_text("#!/bin/sh\necho \"pip $* (simulated: the python models' packages are in this venv)\"\n")
    for f in (shim, pip):
        f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def simulate_init(sim: PodSim, init: dict) -> subprocess.CompletedProcess:
    cmd = sim.command(init)
    assert cmd[:2] == ["/bin/sh", "-ec"] and "funasr-triton export" in cmd[2]
    script = re.sub(r"--source \S+", "--source test", cmd[2])
    script = re.sub(r"--cache-dir \S+", f"--cache-dir {shlex.quote(str(CACHE))}", script)
    return subprocess.run([*cmd[:2], script], env=sim.env(init), capture_output=True, text=True, timeout=900)


def port_of(container: dict, name_or_number) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name_or_number]
    return port


def wait_probe(container: dict, probe: str, proc: subprocess.Popen, timeout_s: float) -> float:
    get = container[probe]["httpGet"]
    url = f"http://127.0.0.1:{port_of(container, get['port'])}{get['path']}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, f"the Triton container exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=container[probe].get("timeoutSeconds", 1)) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{probe} {url} failed for {timeout_s} s")


def sim_values(base: dict) -> dict:
    http, grpc, metrics = free_ports(3)  # the pod's ports, free on this shared machine
    return merge(base, {
        "modelRepository": {"type": "emptyDir", "export": {"enabled": True, "quantize": True}},
        "triton": {"service": {"ports": {"http": http, "grpc": grpc, "metrics": metrics}}},
    })


CPU_VALUES = yaml.safe_load((CHART / "values-cpu.yaml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name, values", [("default", {}), ("values-cpu", CPU_VALUES)])
def test_pod_runs_init_then_triton_and_transcribes(name, values, tmp_path, speech_wav):
    from funasr_triton.audio import decode
    from funasr_triton.triton_client import TritonAsrClient
    from funasr_triton_export.templates import outside_links, template_root

    pod = render_pod(sim_values(values))
    (init,) = pod["initContainers"]
    (triton,) = pod["containers"]
    mounted = {m["name"]: m["mountPath"] for m in triton["volumeMounts"]}
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["models"] == mounted["models"]
    sim = PodSim(pod, tmp_path)
    repo = sim.volumes["models"]

    out = simulate_init(sim, init)
    assert out.returncode == 0, out.stderr[-3000:]
    models = sorted(p.parent.name for p in template_root().glob("*/config.pbtxt"))
    assert sorted(p.parent.name for p in repo.glob("*/config.pbtxt")) == models
    assert outside_links(repo) == [] and (repo / "MANIFEST.json").is_file()
    # a pod restart on the same volume: code and configs refreshed, weights reused
    weight = repo / "paraformer" / "1" / "model.onnx"
    before = (weight.stat().st_ino, weight.stat().st_mtime_ns)
    out = simulate_init(sim, init)
    assert out.returncode == 0 and "reusing the exported weights" in out.stderr, out.stderr[-3000:]
    assert (weight.stat().st_ino, weight.stat().st_mtime_ns) == before

    triton_log = tmp_path / "triton.log"
    write_shims(sim, triton_log)
    cmd = sim.command(triton)
    if cmd[0] == "tritonserver":
        assert values.get("triton", {}).get("pythonPackages") == []
        args = cmd[1:]
    else:  # pythonPackages: `pip install --target ...` then `exec tritonserver ...`
        assert cmd[:2] == ["/bin/bash", "-ec"] and "pip install" in cmd[2]
        args = shlex.split(cmd[2].split("exec tritonserver", 1)[1])
    assert f"--model-repository={repo}" in args
    profile = (values.get("triton") or {}).get("profile", "cpu")
    assert f"--model-config-name={profile}" in args and "--allow-gpu-metrics=false" in args
    assert "nvidia.com/gpu" not in str(triton["resources"])
    proc = subprocess.Popen(cmd, env=sim.env(triton), start_new_session=True,
                            stdout=open(tmp_path / "container.log", "wb"), stderr=subprocess.STDOUT)
    try:
        startup = wait_probe(triton, "startupProbe", proc, 600)
        wait_probe(triton, "readinessProbe", proc, 30)
        wait_probe(triton, "livenessProbe", proc, 30)
        client = TritonAsrClient(f"127.0.0.1:{port_of(triton, 'grpc')}", timeout_s=300)
        try:
            assert client.ready()
            result = client.transcribe(decode(speech_wav.read_bytes()))
        finally:
            client.close()
        assert result["text"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port_of(triton, 'metrics')}/metrics", timeout=10) as r:
            assert b"nv_inference_request_success" in r.read()
        assert startup < 600
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet sends
        try:
            proc.wait(timeout=triton_pod_grace(pod))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "container.log").read_text()[-2000:] + triton_log.read_text()[-2000:]


def triton_pod_grace(pod: dict) -> int:
    return pod["terminationGracePeriodSeconds"]


def test_values_cpu_renders_a_cpu_only_triton():
    pod = render_pod(CPU_VALUES)
    (c,) = pod["containers"]
    assert c["image"] == "docker.io/funasr-triton/triton-cpu:0.1.0"
    assert c["command"] == ["tritonserver"] and "--model-config-name=cpu" in c["args"]
    assert "--allow-gpu-metrics=false" in c["args"]
    assert "nvidia.com/gpu" not in str(c["resources"]) and not pod.get("tolerations") and not pod.get("nodeSelector")
    assert not any(v["name"] == "pydeps" for v in pod["volumes"])
    (init,) = pod["initContainers"]
    assert "--quantize" in init["args"][0] and "--force" not in init["args"][0]
    report = helm.lint(str(CHART), CPU_VALUES, strict=True, kube_version="v1.29.0")
    assert report["errors"] == []
