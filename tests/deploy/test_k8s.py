"""deploy/k8s as a platform team applies it: every overlay renders with kustomize and each
resource validates against the Kubernetes 1.31 schemas (strict), and keeps what the team relies
on: probes, requests and limits, the strict security context, a PodDisruptionBudget and a
ServiceAccount per Deployment, pinned images, autoscaling no wider than the partitions its
consumers share, network policies and Services that select pods which exist."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from contacts_shared.settings import ServiceSettings
from contacts_shared.topics import declared_topics, replication_of

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS_DIR = ROOT / "deploy" / "k8s" / "overlays"
OVERLAYS = ["local", "production"]
KUBERNETES_VERSION = "1.31.0"
UID = 10001

# The topics each consuming workload reads, by their settings (ServiceSettings' topic_*): its
# replicas share their partitions, so more replicas than the fewest partitions idle. Kept with
# the consumers in each service's app.py / worker.py.
CONSUMED_TOPICS = {
    "contact-svc": ["topic_profiles_events", "topic_contacts_commands", "topic_contacts_events"],
    "import-svc": ["topic_profiles_events", "topic_imports_results"],
    "log-svc": ["topic_imports_events", "topic_contacts_events", "topic_profiles_events"],
    "segment-worker": ["topic_contacts_events", "topic_segments_events", "topic_profiles_events"],
}
APIS = ["profile-svc", "contact-svc", "import-svc", "segment-svc", "log-svc"]

Resource = dict[str, Any]


@cache
def _render(overlay: str) -> tuple[Resource, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: it renders deploy/k8s (kubectl kustomize) and is part of "
            "the machine image (v1.32, kustomize v5.5); install it rather than skip this test",
            pytrace=False,
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS_DIR / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def rendered(overlay: str) -> list[Resource]:
    return list(_render(overlay))


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def name(resource: Resource) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


def pod_templates(resources: list[Resource]) -> list[tuple[Resource, Resource]]:
    """(workload, its pod template) for every Deployment and Job."""
    return [(r, r["spec"]["template"]) for r in resources if r["kind"] in ("Deployment", "Job")]


def containers(pod: Resource) -> list[Resource]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        held = {
            "In": value in expression.get("values", []),
            "NotIn": value not in expression.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[operator]
        if not held:
            return False
    return True


def pods_selected(resources: list[Resource], selector: Mapping[str, Any]) -> list[Resource]:
    return [
        pod
        for _, pod in pod_templates(resources)
        if selects(selector, pod["metadata"].get("labels", {}))
    ]


def environment(resources: list[Resource], pod: Resource) -> dict[str, str]:
    """What the pod's first container sees of the ConfigMaps and literal env it is given."""
    config_maps = {
        r["metadata"]["name"]: r.get("data", {}) for r in of_kind(resources, "ConfigMap")
    }
    container = pod["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def secret_references(pod: Resource) -> Iterator[str]:
    for container in containers(pod):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield source["secretRef"]["name"]
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"]


def test_every_overlay_is_tested() -> None:
    found = sorted(p.parent.name for p in OVERLAYS_DIR.glob("*/kustomization.yaml"))
    assert found == OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_is_valid_kubernetes_1_31(overlay: str) -> None:
    resources = rendered(overlay)
    invalid = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            invalid.append(f"{name(resource)}: {getattr(e, 'message', e)}")
    assert resources and not invalid, "\n".join(invalid)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_is_probed_and_bounded(overlay: str) -> None:
    problems = []
    for workload, pod in pod_templates(rendered(overlay)):
        for container in containers(pod):
            where = f"{name(workload)} {container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                missing = {"cpu", "memory"} - resources.get(bound, {}).keys()
                if missing:
                    problems.append(f"{where}: no {bound} of {sorted(missing)}")
            if workload["kind"] != "Deployment":
                continue
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if "httpGet" not in container.get(probe, {}):
                    problems.append(f"{where}: no HTTP {probe}")
            if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                problems.append(f"{where}: readiness not on /readyz")
            if container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/readyz":
                problems.append(f"{where}: liveness on /readyz restarts pods during outages")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_keeps_the_strict_security_context(overlay: str) -> None:
    problems = []
    for workload, pod in pod_templates(rendered(overlay)):
        spec = pod["spec"]
        pod_context = spec.get("securityContext", {})
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name(workload)}: mounts a service account token")
        for container in containers(pod):
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{name(workload)} {container['name']}"
            expected = {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            problems += [
                f"{where}: {key} is {context.get(key)!r}, not {value!r}"
                for key, value in expected.items()
                if context.get(key) != value
            ]
            if context.get("privileged") or "ALL" not in context.get("capabilities", {}).get(
                "drop", []
            ):
                problems.append(f"{where}: capabilities not all dropped")
            if context.get("capabilities", {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if mounts.get("/tmp") not in tmp_volumes:
                problems.append(f"{where}: read-only root without an emptyDir at /tmp")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_its_own_service_account(
    overlay: str,
) -> None:
    resources = rendered(overlay)
    budgets = of_kind(resources, "PodDisruptionBudget")
    accounts = {r["metadata"]["name"]: r for r in of_kind(resources, "ServiceAccount")}
    problems = []
    for workload, pod in pod_templates(resources):
        labels = pod["metadata"]["labels"]
        account = pod["spec"].get("serviceAccountName")
        if account not in accounts:
            problems.append(f"{name(workload)}: no ServiceAccount {account!r}")
        elif accounts[account].get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{account}: its token is mounted")
        owners = [
            w for w, p in pod_templates(resources) if p["spec"].get("serviceAccountName") == account
        ]
        if len(owners) > 1:
            problems.append(f"ServiceAccount/{account} shared by {[name(w) for w in owners]}")
        if workload["kind"] != "Deployment":
            continue
        matching = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        if len(matching) != 1:
            problems.append(f"{name(workload)}: {len(matching)} PodDisruptionBudgets, not 1")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(overlay: str) -> None:
    unpinned = []
    for workload, pod in pod_templates(rendered(overlay)):
        for container in containers(pod):
            image = container["image"]
            if "@sha256:" in image:
                continue
            last = image.rsplit("/", 1)[-1]
            tag = last.partition(":")[2]
            if not tag or tag == "latest":
                unpinned.append(f"{name(workload)}: {image}")
    assert not unpinned, f"images without a pinned tag: {unpinned}"


def job_settings(resources: list[Resource], monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The settings the topics Job applies the declared topics with: its environment, and an
    API key standing in for its Secret."""
    (job,) = [r for r in of_kind(resources, "Job") if r["metadata"]["name"] == "contacts-topics"]
    for key, value in environment(resources, job["spec"]["template"]).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONTACTS_API_KEYS", "k8s-test-key=k8s-test-account")
    return ServiceSettings()


def partitions(resources: list[Resource], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Each consumed topic's partitions (by its setting's name), as the topics Job declares
    them (contacts_shared.topics)."""
    settings = job_settings(resources, monkeypatch)
    declared = {topic.name: topic.partitions for topic in declared_topics(settings)}
    fields = {field for fields in CONSUMED_TOPICS.values() for field in fields}
    return {field: declared[getattr(settings, field)] for field in fields}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_stays_within_the_partitions_consumers_share(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = rendered(overlay)
    deployments = {r["metadata"]["name"] for r in of_kind(resources, "Deployment")}
    assert set(CONSUMED_TOPICS) <= deployments, "a consumer of CONSUMED_TOPICS is gone"
    per_topic = partitions(resources, monkeypatch)
    problems = []
    for hpa in of_kind(resources, "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        if target["kind"] != "Deployment" or target["name"] not in deployments:
            problems.append(f"{name(hpa)}: scales {target['kind']}/{target['name']}, absent")
            continue
        topics = CONSUMED_TOPICS.get(target["name"], [])
        bound = min((per_topic[t] for t in topics), default=None)
        if bound is not None and spec["maxReplicas"] > bound:
            problems.append(
                f"{name(hpa)}: maxReplicas {spec['maxReplicas']} > {bound} partitions ({topics})"
            )
        if spec.get("minReplicas", 1) > spec["maxReplicas"]:
            problems.append(f"{name(hpa)}: minReplicas above maxReplicas")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_pods_that_exist(overlay: str) -> None:
    resources = rendered(overlay)
    policies = of_kind(resources, "NetworkPolicy")
    problems = []
    for policy in policies:
        spec = policy["spec"]
        selected = pods_selected(resources, spec["podSelector"])
        if not selected:
            problems.append(f"{name(policy)}: selects no pod")
        ports = {p["name"] for pod in selected for c in containers(pod) for p in c.get("ports", [])}
        for rule in spec.get("ingress", []):
            problems += [
                f"{name(policy)}: no selected pod has a port named {port['port']!r}"
                for port in rule.get("ports", [])
                if isinstance(port["port"], str) and port["port"] not in ports
            ]
        peers = [p for rule in spec.get("ingress", []) for p in rule.get("from", [])]
        peers += [p for rule in spec.get("egress", []) for p in rule.get("to", [])]
        for peer in peers:
            # A peer without a namespace selector is a pod of this namespace: it must exist.
            if "podSelector" in peer and "namespaceSelector" not in peer:
                if not pods_selected(resources, peer["podSelector"]):
                    problems.append(f"{name(policy)}: peer {peer['podSelector']} selects no pod")
    everything = [
        p for p in policies if not p["spec"]["podSelector"] and "ingress" not in p["spec"]
    ]
    if not any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in everything):
        problems.append("no default-deny NetworkPolicy (ingress and egress) for every pod")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_ports_of_pods_that_exist(overlay: str) -> None:
    resources = rendered(overlay)
    problems = []
    for service in of_kind(resources, "Service"):
        pods = pods_selected(resources, {"matchLabels": service["spec"]["selector"]})
        if not pods:
            problems.append(f"{name(service)}: selects no pod")
        named = {p["name"] for pod in pods for c in containers(pod) for p in c.get("ports", [])}
        problems += [
            f"{name(service)}: no pod port named {port['targetPort']!r}"
            for port in service["spec"]["ports"]
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in named
        ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_topics_are_applied_by_a_job_with_the_services_settings(overlay: str) -> None:
    resources = rendered(overlay)
    (job,) = [r for r in of_kind(resources, "Job") if r["metadata"]["name"] == "contacts-topics"]
    pod = job["spec"]["template"]
    assert importlib.util.find_spec("contacts_shared.topics.__main__"), "no topics command"
    assert pod["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "contacts_shared.topics",
        "apply",
    ]
    services = [pod for w, pod in pod_templates(resources) if w["metadata"]["name"] in APIS]
    assert "CONTACTS_KAFKA_BOOTSTRAP_SERVERS" in environment(resources, pod)
    assert all(
        environment(resources, pod).items() <= environment(resources, s).items() for s in services
    ), "the topics Job does not see the services' common settings"


def test_production_runs_replicated_and_commits_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = rendered("production")
    hpas = {
        r["spec"]["scaleTargetRef"]["name"]: r
        for r in of_kind(resources, "HorizontalPodAutoscaler")
    }
    for api in APIS:
        assert hpas[api]["spec"]["minReplicas"] >= 2, f"{api} runs fewer than 2 replicas"
    assert not of_kind(resources, "Secret"), "Secrets are created beforehand, not committed"
    for workload, pod in pod_templates(resources):
        env = environment(resources, pod)
        assert env.get("CONTACTS_ENVIRONMENT") == "production", name(workload)
    # Three replicas, two in sync: a broker lost loses nothing and stops no acks=all write.
    assert replication_of(job_settings(resources, monkeypatch)) == (3, 2)


def test_production_routes_store_webhooks_to_the_service_that_receives_them() -> None:
    receiving = {
        path.parts[path.parts.index("services") + 1]
        for path in ROOT.glob("services/*/src/**/*.py")
        if '"/v1/webhooks/{' in path.read_text()
    }
    routes = {
        (rule["host"], p["path"]): p["backend"]["service"]["name"]
        for ingress in of_kind(rendered("production"), "Ingress")
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    webhooks = {backend for (_, path), backend in routes.items() if path == "/v1/webhooks"}
    assert webhooks and webhooks == receiving
    assert "console" in routes.values()
    assert set(APIS) <= set(routes.values()), "the public API is not routed"


def test_readme_names_every_secret_production_needs() -> None:
    resources = rendered("production")
    referenced = {s for _, pod in pod_templates(resources) for s in secret_references(pod)}
    referenced |= {
        tls["secretName"]
        for ingress in of_kind(resources, "Ingress")
        for tls in ingress["spec"]["tls"]
    }
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Deploy on Kubernetes$(.*?)(?=^## )", readme, re.M | re.S)
    assert section, 'README has no "## Deploy on Kubernetes" section'
    assert referenced and all(f"`{s}`" in section.group(1) for s in referenced), sorted(referenced)


def test_local_runs_one_replica_each_with_its_own_dev_secrets() -> None:
    resources = rendered("local")
    generated = {r["metadata"]["name"] for r in of_kind(resources, "Secret")}
    for workload, pod in pod_templates(resources):
        if workload["kind"] == "Deployment":
            assert workload["spec"].get("replicas") == 1, name(workload)
        missing = set(secret_references(pod)) - generated
        assert not missing, f"{name(workload)} needs Secrets the overlay does not make: {missing}"
    assert not of_kind(resources, "HorizontalPodAutoscaler")
