"""`make e2e`, last step: the CPU Helm values' Triton container, run in the real funasr-triton/triton-cpu image.

Renders helm/funasr-triton with values-cpu.yaml (Helm's own engine, helm-python-sdk, as tests/test_helm_pod.py),
takes the Triton container's command, args, env and security context, and runs them with `docker run`: the
exported repository at the rendered mount path, the rendered user (pod securityContext), a read-only root
filesystem with /tmp and /dev/shm writable when the chart says so. Passes when the rendered readiness probe answers
200 within the rendered startup budget. Exit status 0 on success; the container is removed either way.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from helm_python import Chart

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "funasr-triton"
TRITON = "asr-funasr-triton-triton"
log = logging.getLogger("e2e")


def rendered_pod() -> dict:
    values = yaml.safe_load((CHART / "values-cpu.yaml").read_text())
    chart = Chart.load(CHART)
    chart.validate_schema(values)
    for path, text in chart.render(values, name="asr", namespace="speech", is_install=True).items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == TRITON:
                return doc["spec"]["template"]["spec"]
    raise AssertionError("no Triton Deployment rendered")


def docker_run_args(pod: dict, repository: Path, image: str, host_port: int, network: str) -> tuple[list[str], dict, str]:
    c = next(c for c in pod["containers"] if c["name"] == "triton")
    http = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    args = ["run", "-d", "--init", "--network", network, "-p", f"127.0.0.1:{host_port}:{http}"]
    sec = pod.get("securityContext", {})
    if "runAsUser" in sec:
        args += ["--user", f"{sec['runAsUser']}:{sec.get('runAsGroup', sec['runAsUser'])}"]
    if c.get("securityContext", {}).get("readOnlyRootFilesystem"):
        args += ["--read-only"]
    args += ["--cap-drop", "ALL"] if "ALL" in c.get("securityContext", {}).get("capabilities", {}).get("drop", []) else []
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        if m["name"] == "models":
            args += ["-v", f"{repository}:{m['mountPath']}:ro"]
        elif m["mountPath"] == "/dev/shm":
            args += ["--shm-size", "1g"]
        elif "emptyDir" in volumes[m["name"]]:
            args += ["--tmpfs", f"{m['mountPath']}:exec,mode=1777"]
    for e in c.get("env", []):
        args += ["-e", f"{e['name']}={e['value']}"]
    args += ["--entrypoint", c["command"][0], image, *c["command"][1:], *c.get("args", [])]
    return args, c, c["image"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, required=True, help="an exported model repository")
    p.add_argument("--image", default="funasr-triton/triton-cpu:latest", help="the local image to run")
    p.add_argument("--port", type=int, required=True, help="host port for the container's HTTP port")
    p.add_argument("--docker", default="/usr/bin/docker")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="e2e: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    pod = rendered_pod()
    # a network of its own: CI's dockerd runs without the default bridge, and publishing needs one
    network = f"funasr-e2e-helm-{args.port}"
    subprocess.run([args.docker, "network", "create", network], check=True, capture_output=True)
    run, container, rendered_image = docker_run_args(pod, args.repository.resolve(), args.image, args.port, network)
    log.info("helm values-cpu.yaml: rendered image %s (run as %s); command %s", rendered_image, args.image,
             " ".join(container["command"] + container.get("args", [])))
    cid = ""
    try:
        cid = subprocess.run([args.docker, *run], check=True, capture_output=True, text=True).stdout.strip()
        probe = container.get("startupProbe") or container["readinessProbe"]
        budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 30)
        ready = container["readinessProbe"]["httpGet"]["path"]
        deadline, t0 = time.monotonic() + budget, time.monotonic()
        while time.monotonic() < deadline:
            state = subprocess.run([args.docker, "inspect", "-f", "{{.State.Running}}", cid], capture_output=True,
                                   text=True).stdout.strip()
            if state != "true":
                break
            try:
                if httpx.get(f"http://127.0.0.1:{args.port}{ready}", timeout=3).status_code == 200:
                    log.info("helm values-cpu.yaml: Triton ready in the CPU image after %.0f s (%s)",
                             time.monotonic() - t0, ready)
                    return 0
            except httpx.HTTPError:
                pass
            time.sleep(2)
        logs = subprocess.run([args.docker, "logs", "--tail", "60", cid], capture_output=True, text=True)
        log.error("FAILED: the rendered Triton container was not ready (running: %s)\n%s%s", state, logs.stdout,
                  logs.stderr)
        return 1
    finally:
        if cid:
            subprocess.run([args.docker, "rm", "-f", cid], capture_output=True)
        subprocess.run([args.docker, "network", "rm", network], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
