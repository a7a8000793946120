"""deploy/: Kubernetes manifests, Prometheus config and alert rules, Grafana provisioning
(DESIGN §8, §10). No cluster is needed: manifests are parsed with PyYAML and checked against
the suite's own settings and topology code; Prometheus files are checked with promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from appeals_common.dead_letter_metrics import ERRORS, GAUGE
from appeals_common.metrics import PROVISIONAL_STALE
from appeals_common.nameko_ext import DEPENDENCY_UP, OUTBOX_BACKLOG
from appeals_common.provisioning import (
    ProvisioningError,
    check_passwords,
    database_grants,
    grants_from_config,
    load_passwords,
)
from appeals_common.registries import load_departments, load_source_systems
from appeals_common.settings import (
    DEFAULT_HTTP_PORTS,
    SERVICES,
    SettingsError,
    check_service_start,
    load_settings,
)
from appeals_common.topology import build_topology, retry_exchange
from tests.tools import missing_tool

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
NAMESPACE = "appeals"
CLUSTER_SCOPED = {"Namespace"}


# --- Kubernetes -------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append({**doc, "_file": path.name})
    return docs


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _all(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests if d["kind"] == kind]


def test_every_manifest_is_an_object_in_the_suites_namespace(manifests: list[dict[str, Any]]) -> None:
    assert len(manifests) >= 15
    for doc in manifests:
        assert doc.get("apiVersion") and doc.get("kind"), doc["_file"]
        assert doc["metadata"].get("name"), doc["_file"]
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == NAMESPACE, (doc["_file"], doc["kind"])
    _one(manifests, "Namespace", NAMESPACE)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["namespace"] == NAMESPACE
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in _manifest_files()}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def _resolved_env(manifests: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps, then env
    with secrets (placeholders) and $(VAR) references expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(_one(manifests, "ConfigMap", ref)["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            if ref["name"].endswith("-default-user"):  # made by the RabbitMQ Cluster Operator
                env[item["name"]] = f"operator-{ref['key']}"
                continue
            secret = _one(manifests, "Secret", ref["name"])
            env[item["name"]] = secret["stringData"][ref["key"]]
    return env


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_deployment_with_replicas_and_health_probes(
        manifests: list[dict[str, Any]], name: str) -> None:
    deployment = _one(manifests, "Deployment", name)
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = _container(deployment)
    assert container["command"] == ["appeals", "run", name]
    assert [p["containerPort"] for p in container["ports"]] == [DEFAULT_HTTP_PORTS[name]]
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"
        assert _port_number(container, check["port"]) == DEFAULT_HTTP_PORTS[name]
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(DEFAULT_HTTP_PORTS[name])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_service_on_its_container_port(manifests: list[dict[str, Any]], name: str) -> None:
    deployment = _one(manifests, "Deployment", name)
    container = _container(deployment)
    service = _one(manifests, "Service", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == DEFAULT_HTTP_PORTS[name]
    assert _port_number(container, port.get("targetPort", port["port"])) == DEFAULT_HTTP_PORTS[name]
    budget = _one(manifests, "PodDisruptionBudget", name)
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_gets_the_same_settings_as_in_compose(manifests: list[dict[str, Any]],
                                                           name: str) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    env = _resolved_env(manifests, _container(_one(manifests, "Deployment", name)))
    assert set(compose["x-appeals-environment"]) <= set(env)
    settings = load_settings(env)  # what the service itself makes of them
    assert settings.http_port(name) == DEFAULT_HTTP_PORTS[name]
    assert settings.queue_type == "quorum"
    assert settings.database_url_for(name).endswith(f"@postgres:5432/appeals_{name}")
    cluster = _all(manifests, "RabbitmqCluster")[0]["metadata"]["name"]
    vhost = _one(manifests, "Vhost", "appeals")["spec"]["name"]
    # Its own broker user and database role, their passwords its own keys of the Secret.
    assert settings.amqp_uri == \
        f"amqp://svc-{name}:CHANGE-ME-svc-{name}@{cluster}:5672/{vhost}"
    assert settings.database_url_for(name) == \
        f"postgresql://appeals_{name}:CHANGE-ME-appeals_{name}@postgres:5432/appeals_{name}"
    assert env["APPEALS_APPLY_TOPOLOGY"] == "0"
    assert env["APPEALS_TRUSTED_BUS_USERS"] == "appeals-topology"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_sees_only_its_own_secrets(manifests: list[dict[str, Any]], name: str) -> None:
    container = _container(_one(manifests, "Deployment", name))
    refs = {(item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
            for item in container.get("env", []) if "valueFrom" in item}
    assert refs == {("appeals-secrets", "APPEALS_JWT_SECRET"),
                    ("appeals-passwords", f"svc-{name}"),
                    ("appeals-passwords", f"appeals_{name}")}
    assert not container.get("envFrom", []) or all("secretRef" not in e for e in container["envFrom"])
    # As shipped, the placeholder secret keeps the service from starting.
    with pytest.raises(SettingsError, match="placeholder"):
        check_service_start(load_settings(_resolved_env(manifests, container)))


def test_rabbitmq_cluster_has_three_nodes(manifests: list[dict[str, Any]]) -> None:
    (cluster,) = _all(manifests, "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["spec"]["replicas"] >= 3
    assert cluster["spec"]["persistence"]["storage"]


def test_every_queue_the_suite_declares_is_a_quorum_queue(manifests: list[dict[str, Any]]) -> None:
    queue_type = _one(manifests, "ConfigMap", "appeals-settings")["data"]["APPEALS_QUEUE_TYPE"]
    assert queue_type == "quorum"
    settings = load_settings({"APPEALS_QUEUE_TYPE": queue_type})
    topology = build_topology(load_departments(REPO / "config"), load_source_systems(REPO / "config"),
                              queue_type=settings.queue_type, retry_delays_ms=settings.retry_delays_ms)
    assert {q.arguments["x-queue-type"] for q in topology.queues} == {"quorum"}
    vhost = _one(manifests, "Vhost", "appeals")
    assert vhost["spec"]["defaultQueueType"] == "quorum"
    cluster = _all(manifests, "RabbitmqCluster")[0]["metadata"]["name"]
    assert vhost["spec"]["rabbitmqClusterReference"]["name"] == cluster

    # The retry delay queues dead-letter at-least-once (quorum queues' default is at-most-once).
    policy = _one(manifests, "Policy", "appeals-retry-at-least-once")
    assert policy["apiVersion"] == "rabbitmq.com/v1beta1"
    spec = policy["spec"]
    assert spec["vhost"] == vhost["spec"]["name"]
    assert spec["definition"] == {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
    pattern = re.compile(spec["pattern"])
    retry = {retry_exchange(d) for d in settings.retry_delays_ms}
    assert {q.name for q in topology.queues if pattern.search(q.name)} == retry


def test_postgresql_is_a_statefulset_with_a_volume(manifests: list[dict[str, Any]]) -> None:
    statefulset = _one(manifests, "StatefulSet", "postgres")
    container = _container(statefulset)
    assert container["image"].startswith("postgres:")
    claims = statefulset["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == [m["name"] for m in container["volumeMounts"]]
    service = _one(manifests, "Service", "postgres")
    assert [p["port"] for p in service["spec"]["ports"]] == [5432]
    env = _resolved_env(manifests, container)
    assert env["POSTGRES_PASSWORD"]


def test_bootstrap_job_provisions_users_and_roles_then_applies_the_topology(
        manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    job = _one(manifests, "Job", "appeals-bootstrap")
    pod = job["spec"]["template"]["spec"]
    provision, database = pod["initContainers"]
    (topology,) = pod["containers"]
    assert provision["command"][:3] == ["appeals", "provision", "apply"]
    assert database["command"][:3] == ["appeals", "provision", "database"]
    assert topology["command"] == ["appeals", "topology", "apply"]
    vhost = _one(manifests, "Vhost", "appeals")["spec"]["name"]
    command = provision["command"]
    assert command[command.index("--vhost") + 1] == vhost
    assert "--remove-guest" in command
    # Both read the passwords Secret mounted as a directory (a file per account)...
    (volume,) = pod["volumes"]
    secret = _one(manifests, "Secret", volume["secret"]["secretName"])
    for container in (provision, database):
        (mount,) = container["volumeMounts"]
        assert mount["name"] == volume["name"] and mount["readOnly"]
        args = container["command"]
        assert args[args.index("--passwords-file") + 1] == mount["mountPath"]
    for key, value in secret["stringData"].items():
        (tmp_path / key).write_text(value)
    passwords = load_passwords(tmp_path)
    # ...which names exactly the broker users of the registries and the services' roles.
    assert set(passwords) == {g.name for g in grants_from_config(REPO / "config")} | \
        {g.role for g in database_grants()}
    env = _resolved_env(manifests, database)
    assert env["APPEALS_DATABASE_ADMIN_URL"] == "postgresql://postgres:CHANGE-ME-postgres@postgres:5432/postgres"
    env = _resolved_env(manifests, topology)
    settings = load_settings(env)
    assert settings.amqp_uri.endswith(f"/{vhost}")
    assert settings.amqp_uri.startswith(f"amqp://appeals-topology:{passwords['appeals-topology']}@")


def test_secrets_hold_only_placeholders_that_provisioning_refuses(manifests: list[dict[str, Any]]) -> None:
    for secret in _all(manifests, "Secret"):
        for value in secret["stringData"].values():
            for line in str(value).splitlines():
                assert "CHANGE-ME" in line, (secret["metadata"]["name"], line)
    passwords = _one(manifests, "Secret", "appeals-passwords")["stringData"]
    assert len(set(passwords.values())) == len(passwords)  # each user its own placeholder
    with pytest.raises(ProvisioningError, match="a placeholder: ") as exc:
        check_passwords(passwords)
    assert all(user in str(exc.value) for user in passwords)
    assert "CHANGE-ME" not in str(exc.value)


# --- Prometheus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


def test_prometheus_loads_the_alert_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS / "alerts.yml").is_file()


@pytest.mark.parametrize(("alert", "series"), [
    ("AppealsServiceDown", "up"),
    ("AppealsOverdueGrowing", "appeals_overdue"),
    ("AppealsDeadLettersPresent", GAUGE),
    ("AppealsDeadLettersUnreadable", ERRORS + "_total"),
    ("AppealsOutboxBacklog", OUTBOX_BACKLOG._name),
    ("AppealsProvisionalDeadlinesStale", PROVISIONAL_STALE._name),
    ("AppealsDependencyDown", DEPENDENCY_UP._name),
])
def test_alert_rules_watch_the_suites_series(alert_rules: dict[str, dict[str, Any]], alert: str,
                                             series: str) -> None:
    rule = alert_rules[alert]
    assert re.search(rf"\b{re.escape(series)}\b", rule["expr"]), rule["expr"]
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_service_down_alert_covers_every_scraped_service(alert_rules: dict[str, dict[str, Any]]) -> None:
    expr = alert_rules["AppealsServiceDown"]["expr"]
    assert expr.replace(" ", "").endswith("==0")
    jobs = re.search(r'job=~"([^"]+)"', expr)
    assert jobs is not None and set(jobs.group(1).split("|")) == set(SERVICES)


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool is not installed (scripts/test.sh installs Debian's prometheus)")
    return promtool


def _run_promtool(*args: str) -> str:
    result = subprocess.run([_promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_the_config() -> None:
    out = _run_promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out


def test_promtool_checks_the_rules() -> None:
    out = _run_promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in out


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    out = _run_promtool("test", "rules", "alerts.test.yml")
    assert "SUCCESS" in out


# --- Grafana ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "appeals.json").read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p["targets"]]


def test_grafana_datasource_and_dashboard_provider() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
                                 .read_text(encoding="utf-8"))["datasources"]
    (prometheus,) = datasources
    assert prometheus["type"] == "prometheus" and prometheus["uid"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
                               .read_text(encoding="utf-8"))["providers"]
    (provider,) = providers
    assert provider["type"] == "file"
    # Compose mounts deploy/grafana/dashboards where the provider reads.
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = dict(str(v).split(":")[:2] for v in compose["services"]["grafana"]["volumes"]
                  if str(v).startswith("./"))
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


@pytest.mark.parametrize("needle", [
    "appeals_registered_total", "by (channel)", "appeals_open", "by (state)", "appeals_overdue",
    "by (dept_code)", "appeals_response_seconds_bucket", "appeals_satisfaction_rate",
    "appeals_entrypoint_seconds_bucket", "appeals_entrypoint_errors_total", "appeals_outbox_backlog",
    GAUGE, "up{",
])
def test_dashboard_shows_every_series_the_design_asks_for(dashboard: dict[str, Any], needle: str) -> None:
    assert any(needle in expr for expr in _exprs(dashboard)), needle


def test_dashboard_response_time_is_a_histogram_quantile(dashboard: dict[str, Any]) -> None:
    quantiles = [e for e in _exprs(dashboard) if "appeals_response_seconds_bucket" in e]
    assert quantiles and all(e.startswith("histogram_quantile(") and "by (le)" in e for e in quantiles)


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses every query when it checks rules: check them as recording rules.
    rules = [{"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
             for i, expr in enumerate(_exprs(dashboard))]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- RabbitMQ definitions -----------------------------------------------------------------


def test_no_definitions_file_holds_guest_or_a_password() -> None:
    files = sorted((REPO / "deploy" / "rabbitmq").glob("definitions*.json"))
    assert [f.name for f in files] == ["definitions.example.json"]
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert "guest" not in {u["name"] for u in doc["users"]}
        assert all(u["password_hash"] == "" and not u["tags"] for u in doc["users"])
