"""The chart's job settings: the data volume (emptyDir by default, a PVC on request) and the backend URL
(plain or from a Secret), rendered by Helm and validated against the Kubernetes schemas."""
from __future__ import annotations

import pytest

from tests.test_helm_chart import by_kind, named, render

pytest.importorskip("kubernetes_validate")
FE = "asr-funasr-triton-frontend"


def _frontend(docs):
    pod = named(docs, "Deployment", FE)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    return pod, c, {e["name"]: e for e in c["env"]}


def test_default_jobs_on_an_emptydir():
    pod, c, env = _frontend(render())
    assert env["FUNASR_TRITON_JOBS__DATA_DIR"]["value"] == "/var/lib/funasr-triton/jobs"
    assert env["FUNASR_TRITON_JOBS__WORKERS"]["value"] == "2"
    assert env["FUNASR_TRITON_JOBS__RETENTION_HOURS"]["value"] == "72"
    assert "FUNASR_TRITON_JOBS__BACKEND_URL" not in env
    vol = {v["name"]: v for v in pod["volumes"]}["jobs-data"]
    assert vol == {"name": "jobs-data", "emptyDir": {}}
    assert {"name": "jobs-data", "mountPath": "/var/lib/funasr-triton/jobs"} in c["volumeMounts"]


def test_jobs_pvc_and_backend_secret():
    import kubernetes_validate

    docs = render({"frontend": {"jobs": {"existingSecret": "pg", "secretKey": "url", "workers": 4,
                                         "persistence": {"enabled": True, "size": "50Gi"}}}})
    for d in docs:
        kubernetes_validate.validate(d, "1.29", strict=True)
    pod, c, env = _frontend(docs)
    assert env["FUNASR_TRITON_JOBS__BACKEND_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "url"}
    assert env["FUNASR_TRITON_JOBS__WORKERS"]["value"] == "4"
    vol = {v["name"]: v for v in pod["volumes"]}["jobs-data"]
    assert vol["persistentVolumeClaim"]["claimName"] == f"{FE}-jobs"
    pvc = named(docs, "PersistentVolumeClaim", f"{FE}-jobs")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    plain = _frontend(render({"frontend": {"jobs": {"backendUrl": "postgresql://asr@pg:5432/jobs"}}}))[2]
    assert plain["FUNASR_TRITON_JOBS__BACKEND_URL"]["value"] == "postgresql://asr@pg:5432/jobs"
    off_pod, _, off = _frontend(render({"frontend": {"jobs": {"enabled": False}}}))
    assert off["FUNASR_TRITON_JOBS__ENABLED"]["value"] == "false"
    assert "jobs-data" not in {v["name"] for v in off_pod["volumes"]}
    assert len(by_kind(render({"frontend": {"jobs": {"persistence": {"enabled": True, "existingClaim": "mine"}}}}),
                       "PersistentVolumeClaim")) == 1  # only the model repository's


def test_schema_refuses_a_redis_or_bad_backend():
    with pytest.raises(Exception, match="backendUrl|pattern"):
        render({"frontend": {"jobs": {"backendUrl": "redis://cache:6379"}}})
