"""The container files (DESIGN §10): docker-compose.yml, Dockerfile, deploy/ configs.

Docker's engine is not needed: the files are parsed and checked here. When a compose
binary exists, `docker compose config -q` validates the file against the Compose spec too.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from appeals_common.settings import DEFAULT_HTTP_PORTS, SERVICES, load_settings
from tests.tools import missing_tool

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
RABBITMQ_DIR = REPO / "deploy" / "rabbitmq"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_spec_file_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_all_components_are_present(services: dict[str, Any]) -> None:
    expected = {"rabbitmq", "postgres", "topology", "prometheus", "grafana", *SERVICES}
    assert expected <= set(services)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_its_own_command(services: dict[str, Any], name: str) -> None:
    assert _command(services[name]) == ["appeals", "run", name]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_waits_for_brokers_and_topology(services: dict[str, Any], name: str) -> None:
    deps = _depends_on(services[name])
    assert deps.get("rabbitmq") == "service_healthy"
    assert deps.get("postgres") == "service_healthy"
    assert deps.get("topology") == "service_completed_successfully"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_environment(services: dict[str, Any], name: str) -> None:
    env = _environment(services[name])
    assert env["APPEALS_AMQP_URI"] == "amqp://guest:guest@rabbitmq:5672/"
    url = env["APPEALS_DATABASE_URL"]
    assert "{service}" in url
    assert "$" not in url  # compose would try to interpolate it
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert env["APPEALS_JWT_SECRET"].startswith("${APPEALS_JWT_SECRET:-")
    # What the service itself makes of these settings: its own database, its own port.
    settings = load_settings(env)
    assert settings.database_url_for(name) == url.replace("{service}", name)
    assert settings.http_port(name) == DEFAULT_HTTP_PORTS[name]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_publishes_its_port_and_restarts(services: dict[str, Any], name: str) -> None:
    service = services[name]
    port = DEFAULT_HTTP_PORTS[name]
    published = [str(p) for p in service.get("ports", [])]
    assert f"{port}:{port}" in published
    assert service.get("restart") == "unless-stopped"
    # The image's HEALTHCHECK probes this port.
    assert _environment(service).get("APPEALS_SERVICE_PORT") == str(port)


def test_services_share_one_block_through_an_anchor(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "x-appeals-service" in compose
    assert text.count("*appeals-service") >= len(SERVICES)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_only_valid_interpolation_in_compose_file(compose: dict[str, Any]) -> None:
    # In every value compose interpolates, a `$` must be `$$` (a literal dollar) or
    # `${NAME}` / `${NAME:-default}`.
    pattern = re.compile(r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}")
    for value in _strings(compose):
        assert "$" not in pattern.sub("", value), value


def test_topology_is_a_one_shot_after_rabbitmq(services: dict[str, Any]) -> None:
    topology = services["topology"]
    assert _command(topology)[:3] == ["appeals", "topology", "apply"]
    assert _depends_on(topology).get("rabbitmq") == "service_healthy"
    assert topology.get("restart") in ("no", None)


def test_rabbitmq_has_management_healthcheck_and_config(services: dict[str, Any]) -> None:
    rabbitmq = services["rabbitmq"]
    image = rabbitmq["image"]
    assert image.startswith("rabbitmq:") and "management" in image
    check = _healthcheck_text(rabbitmq)
    assert "rabbitmq-diagnostics" in check and "ping" in check
    ports = [str(p) for p in rabbitmq["ports"]]
    assert "5672:5672" in ports and "15672:15672" in ports
    mounts = " ".join(str(v) for v in rabbitmq["volumes"])
    assert "./deploy/rabbitmq/" in mounts


def test_postgres_has_healthcheck_and_auth(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in _healthcheck_text(postgres)
    env = _environment(postgres)
    assert env.get("POSTGRES_HOST_AUTH_METHOD") == "trust" or env.get("POSTGRES_PASSWORD")


def test_prometheus_and_grafana(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    assert "9090:9090" in [str(p) for p in prometheus["ports"]]
    mounts = " ".join(str(v) for v in prometheus["volumes"])
    assert "./deploy/prometheus/prometheus.yml:" in mounts
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    assert "3000:3000" in [str(p) for p in grafana["ports"]]


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path (./...) -> path in the container."""
    mounts = {}
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if parts[0].startswith("./"):
            mounts[parts[0]] = parts[1]
    return mounts


def test_prometheus_gets_its_alert_rules_and_grafana_its_provisioning(services: dict[str, Any]) -> None:
    prometheus = _bind_mounts(services["prometheus"])
    config_in_container = Path(prometheus["./deploy/prometheus/prometheus.yml"])
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    assert config["rule_files"]
    for rule_file in config["rule_files"]:
        # rule_files are relative to the config file, in the container as on disk.
        source = f"./deploy/prometheus/{rule_file}"
        assert (REPO / source).is_file(), source
        assert Path(prometheus[source]) == config_in_container.parent / rule_file
    grafana = _bind_mounts(services["grafana"])
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    for sub in ("datasources", "dashboards"):
        assert list((REPO / "deploy/grafana/provisioning" / sub).glob("*.yml")), sub
    assert "./deploy/grafana/dashboards" in grafana
    assert list((REPO / "deploy/grafana/dashboards").glob("*.json"))


def test_rabbitmq_imports_the_definitions_it_is_given(services: dict[str, Any]) -> None:
    rabbitmq = _bind_mounts(services["rabbitmq"])
    conf = dict(line.split("=", 1) for line in (RABBITMQ_DIR / "rabbitmq.conf").read_text(encoding="utf-8")
                .splitlines() if line.strip() and not line.lstrip().startswith("#"))
    conf = {key.strip(): value.strip() for key, value in conf.items()}
    assert conf["definitions.import_backend"] == "local_filesystem"
    directory = conf["definitions.local.path"].rstrip("/")
    imported = {source for source, target in rabbitmq.items() if str(Path(target).parent) == directory}
    # The users `appeals provision` defines, and the demo's guest (a node that imports
    # definitions does not create guest itself, and the services log in as guest here).
    assert imported == {"./deploy/rabbitmq/definitions.example.json",
                        "./deploy/rabbitmq/definitions.compose.json"}
    assert all(rabbitmq[source].endswith(".json") for source in imported)
    users = {u["name"] for source in imported
             for u in json.loads((REPO / source).read_text(encoding="utf-8"))["users"]}
    assert "guest" in users and "appeals-suite" in users


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    for service in services.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source


# --- deploy/ --------------------------------------------------------------------------


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "15s"
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            if job.get("metrics_path", "/metrics") == "/metrics":
                targets.update(static["targets"])
    for name, port in DEFAULT_HTTP_PORTS.items():
        assert f"{name}:{port}" in targets


def test_rabbitmq_plugins_and_config() -> None:
    plugins = (RABBITMQ_DIR / "enabled_plugins").read_text(encoding="utf-8").strip()
    assert plugins.startswith("[") and plugins.endswith("].")
    names = {p.strip() for p in plugins[1:-2].split(",")}
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= names
    conf = (RABBITMQ_DIR / "rabbitmq.conf").read_text(encoding="utf-8")
    settings = [line.split("=", 1)[0].strip() for line in conf.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "loopback_users" in settings
    assert all(key for key in settings)


# --- Dockerfile -------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    result = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_runs_appeals() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    commands = [rest for keyword, rest in instructions if keyword in ("CMD", "ENTRYPOINT")]
    assert commands and all("appeals" in rest for rest in commands)
    assert any("intake" in rest for keyword, rest in instructions if keyword == "CMD")


def test_dockerfile_installs_lock_then_package_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    lock = next(i for i, rest in enumerate(runs) if "-r" in rest and "requirements.lock" in rest)
    package = next(i for i, rest in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", rest))
    assert "--no-deps" in runs[lock]
    assert lock < package
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    copies = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "config" in copies
    exposed = " ".join(rest for keyword, rest in instructions if keyword == "EXPOSE").split()
    assert {str(port) for port in DEFAULT_HTTP_PORTS.values()} <= set(exposed)


def test_dockerignore_lets_the_build_inputs_through() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].strip().rstrip("/") for line in lines if line.startswith("!")}
    if "*" in (line.strip() for line in lines):
        assert {"pyproject.toml", "requirements.lock", "appeals_common", "services", "config"} <= allowed


# --- the Compose spec itself, when a compose binary is on this machine -------------------


def _compose_binary() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        try:
            probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    return None


def test_compose_config_validates() -> None:
    binary = _compose_binary()
    if binary is None:
        missing_tool("no compose binary: neither `docker compose` (plugin) nor `docker-compose` is "
                    "installed, so the Compose-spec validation (`config -q`) cannot run here")
    result = subprocess.run([*binary, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr or result.stdout
