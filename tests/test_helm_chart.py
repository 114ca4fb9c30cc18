"""Helm chart helm/funasr-triton: lint + render with Helm's own Go engine (helm-python-sdk, no helm binary),
every manifest validated against the Kubernetes 1.29 OpenAPI schemas (kubernetes-validate, strict)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

helm = pytest.importorskip("helm_python")
kv_utils = pytest.importorskip("kubernetes_validate.utils")
yaml = pytest.importorskip("yaml")

CHART = Path(__file__).resolve().parents[1] / "helm" / "funasr-triton"
KUBE_VERSION = "1.29.0"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

FULL = {
    "triton": {
        "profile": "gpu-8gb",
        "gpu": {"enabled": True, "count": 1},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
        "pythonPackages": [],
    },
    "modelRepository": {"type": "remote",
                        "remote": {"path": "s3://models-bucket/funasr/model_repository", "existingSecret": "s3-creds"}},
    "frontend": {
        "auth": {"apiKeys": ["sk-one", "sk-two"]},
        "ingress": {"enabled": True, "className": "nginx", "hostname": "asr.example.com", "tls": True},
        "autoscaling": {"enabled": True},
        "config": {"LIMITS__MAX_CONCURRENT_JOBS": 8},
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                "prometheusRule": {"enabled": True},
                "grafanaDashboard": {"enabled": True}},
}


def render(values: dict | None = None) -> list[dict]:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values or {})
    out = chart.render(values or {}, name="asr", namespace="speech", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


@pytest.fixture(scope="module")
def default_docs():
    return render()


@pytest.fixture(scope="module")
def full_docs():
    return render(FULL)


@pytest.mark.parametrize("values", [None, FULL], ids=["default", "full"])
def test_lint_clean(values):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("fixture", ["default_docs", "full_docs"])
def test_manifests_match_kubernetes_schemas(fixture, request):
    docs = request.getfixturevalue(fixture)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kv_utils.validate(doc, KUBE_VERSION, strict=True)  # raises ValidationError


def test_validator_is_strict():
    with pytest.raises(Exception, match="bogus"):
        kv_utils.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"bogus": 1}},
                          KUBE_VERSION, strict=True)


def test_standard_labels_everywhere(full_docs):
    for doc in full_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "funasr-triton"
        assert labels["app.kubernetes.io/instance"] == "asr"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert "release" not in labels or doc["kind"] in ("ServiceMonitor",)
        assert "heritage" not in labels and "chart" not in labels


def test_default_render(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == sorted(["Deployment", "Deployment", "Service", "Service", "Service", "PersistentVolumeClaim",
                            "ServiceAccount", "PodDisruptionBudget", "PodDisruptionBudget"])
    triton = named(default_docs, "Deployment", "asr-funasr-triton-triton")
    pod = triton["spec"]["template"]["spec"]
    c = pod["containers"][0]
    script = c["args"][0]
    for arg in ("--model-repository=/models", "--model-config-name=cpu", "--http-port=8000", "--grpc-port=8001",
                "--metrics-port=8002"):
        assert f"'{arg}'" in script
    assert "nvidia.com/gpu" not in json.dumps(c["resources"])
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "asr-funasr-triton-models"
    svc = named(default_docs, "Service", "asr-funasr-triton-triton")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    metrics = named(default_docs, "Service", "asr-funasr-triton-triton-metrics")
    assert metrics["spec"]["ports"][0]["port"] == 8002
    fe = named(default_docs, "Deployment", "asr-funasr-triton-frontend")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in fe["spec"]["containers"][0]["env"]}
    assert env["FUNASR_TRITON_TRITON__URL"] == "asr-funasr-triton-triton.speech.svc:8001"
    # the frontend drains on SIGTERM within the pod's grace period
    assert env["FUNASR_TRITON_SHUTDOWN_GRACE_S"] == "55" and fe["spec"]["terminationGracePeriodSeconds"] == 60
    assert "FUNASR_TRITON_AUTH__API_KEYS" not in env
    assert fe["metadata"]["annotations"]["checksum/secret"]


def test_full_render(full_docs):
    triton = named(full_docs, "Deployment", "asr-funasr-triton-triton")
    assert "replicas" not in triton["spec"]
    pod = triton["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["tritonserver"]
    assert "--model-repository=s3://models-bucket/funasr/model_repository" in c["args"]
    assert "--model-config-name=gpu-8gb" in c["args"] and "--allow-gpu-metrics=true" in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert all(v["name"] != "models" for v in pod["volumes"])
    assert not by_kind(full_docs, "PersistentVolumeClaim")

    hpas = {h["metadata"]["name"]: h for h in by_kind(full_docs, "HorizontalPodAutoscaler")}
    tm = hpas["asr-funasr-triton-triton"]["spec"]["metrics"][0]
    assert tm["type"] == "Pods" and tm["pods"]["metric"]["name"] == "avg_time_queue_us"
    assert hpas["asr-funasr-triton-frontend"]["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    secret = named(full_docs, "Secret", "asr-funasr-triton-api-keys")
    assert json.loads(base64.b64decode(secret["data"]["api-keys"])) == ["sk-one", "sk-two"]
    fe = named(full_docs, "Deployment", "asr-funasr-triton-frontend")
    env = {e["name"]: e for e in fe["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FUNASR_TRITON_AUTH__API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "asr-funasr-triton-api-keys", "key": "api-keys"}
    assert env["FUNASR_TRITON_LIMITS__MAX_CONCURRENT_JOBS"]["value"] == "8"
    names = [e["name"] for e in fe["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert len(names) == len(set(names))
    override = render({"frontend": {"config": {"SHUTDOWN_GRACE_S": 10}}})
    fe_env = named(override, "Deployment", "asr-funasr-triton-frontend")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["value"] for e in fe_env if e["name"] == "FUNASR_TRITON_SHUTDOWN_GRACE_S"] == ["10"]

    ing = named(full_docs, "Ingress", "asr-funasr-triton-frontend")
    assert ing["spec"]["rules"][0]["host"] == "asr.example.com"
    assert ing["spec"]["tls"][0]["secretName"] == "asr.example.com-tls"

    cm = named(full_docs, "ConfigMap", "asr-funasr-triton-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["funasr-triton.json"]) == json.loads((CHART / "files" / "dashboard.json").read_text())


def test_checksum_rolls_frontend_on_secret_change():
    def checksum(keys):
        docs = render({"frontend": {"auth": {"apiKeys": keys}}})
        fe = named(docs, "Deployment", "asr-funasr-triton-frontend")
        return fe["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
    assert checksum(["a"]) != checksum(["b"])


def test_crds_by_hand(full_docs):
    sms = by_kind(full_docs, "ServiceMonitor")
    assert len(sms) == 2
    for sm in sms:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["labels"]["release"] == "kps"
        assert sm["spec"]["selector"]["matchLabels"]
        assert sm["spec"]["endpoints"] and all(e["port"] and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    (rule,) = by_kind(full_docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    assert group["name"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"FunasrTritonQueueTimeOverSLO", "FunasrTritonErrorRate", "FunasrTritonGpuMemoryNearLimit",
                           "FunasrTritonNotReady"}
    for r in alerts.values():
        assert r["expr"].strip() and r["for"] == "5m" and r["labels"]["severity"] in ("warning", "critical")
        assert "{{ $labels" in r["annotations"]["description"]  # Prometheus templating survives Helm
    assert "nv_inference_queue_duration_us{namespace=\"speech\"" in alerts["FunasrTritonQueueTimeOverSLO"]["expr"]
    assert "> 500" in alerts["FunasrTritonQueueTimeOverSLO"]["expr"]


def test_export_init_container():
    docs = render({"modelRepository": {"type": "emptyDir", "export": {"enabled": True, "source": "test"}}})
    pod = named(docs, "Deployment", "asr-funasr-triton-triton")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert "funasr-triton export --source test --repository /models" in init["args"][0]
    assert {"name": "models", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    for doc in docs:
        kv_utils.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values, message", [
    ({"triton": {"profile": "gpu-4gb"}}, "profile"),
    ({"modelRepository": {"type": "nfs"}}, "type"),
    ({"modelRepository": {"type": "remote", "remote": {"path": "http://bucket/x"}}}, "path"),
])
def test_schema_rejects_bad_values(values, message):
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError, match=message):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError, match=message):  # helm template / install fail the same way
        chart.render(values, name="asr", namespace="speech")
    report = helm.lint(str(CHART), values, kube_version=f"v{KUBE_VERSION}")
    assert any(m["severity"] == 3 for m in report["messages"]) or report["errors"]


@pytest.mark.parametrize("values, message", [
    ({"triton": {"profile": "gpu-8gb"}}, "needs triton.gpu.enabled"),
    ({"modelRepository": {"type": "emptyDir"}}, "export.enabled=true"),
    ({"triton": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
])
def test_validate_values_fails_render(values, message):
    with pytest.raises(helm.HelmError, match=message):
        helm.Chart.load(CHART).render(values, name="asr", namespace="speech")


def test_every_value_documented():
    documented = {line.split()[2] for line in (CHART / "values.yaml").read_text().splitlines()
                  if line.strip().startswith("## @param")}
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node, prefix=""):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v and key not in documented:
                yield from leaves(v, key + ".")
            else:
                yield key
    missing = [k for k in leaves(values) if k not in documented]
    assert missing == []
