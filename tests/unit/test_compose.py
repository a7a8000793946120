"""The container files (DESIGN §10): docker-compose.yml, Dockerfile, deploy/ configs.

Docker's engine is not needed: the files are parsed and checked here. When a compose
binary exists, `docker compose config -q` validates the file against the Compose spec too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from appeals_common.provisioning import check_passwords, password_env_name, select_grants
from appeals_common.settings import DEFAULT_HTTP_PORTS, SERVICES, check_service_start, load_settings
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


REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}")
DEFAULTED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """What compose makes of a value, given the environment (required ones must be there)."""
    value = REQUIRED.sub(lambda m: env[m.group(1)], value)
    return DEFAULTED.sub(lambda m: env.get(m.group(1)) or m.group(2), value)


def _fake_env(text: str) -> dict[str, str]:
    """A distinct value for every required variable, as deploy/compose-env.sh makes them."""
    return {name: f"{i:02d}" + "a1b2c3d4e5f60789" * 4 for i, name in
            enumerate(sorted(set(REQUIRED.findall(text))))}


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_spec_file_has_no_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_all_components_are_present(services: dict[str, Any]) -> None:
    expected = {"rabbitmq", "postgres", "provision", "database", "topology", "prometheus",
                "grafana", *SERVICES}
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
    assert deps.get("database") == "service_completed_successfully"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_connects_as_its_own_broker_user_and_database_role(services: dict[str, Any],
                                                                         name: str) -> None:
    env = _environment(services[name])
    broker_pw, db_pw = password_env_name(f"svc-{name}"), password_env_name(f"appeals_{name}")
    assert env["APPEALS_AMQP_URI"] == \
        f"amqp://svc-{name}:${{{broker_pw}:?set {broker_pw}}}@rabbitmq:5672/"
    url = env["APPEALS_DATABASE_URL"]
    assert url == f"postgresql://appeals_{name}:${{{db_pw}:?set {db_pw}}}@postgres:5432/appeals_{{service}}"
    assert REQUIRED.fullmatch(env["APPEALS_JWT_SECRET"])  # no default: set, or compose stops
    assert env["APPEALS_APPLY_TOPOLOGY"] == "0"  # its user may not: the topology job does
    assert env["APPEALS_TRUSTED_BUS_USERS"] == "appeals-topology"
    # What the service itself makes of these settings: its own database, its own port,
    # and a secret it starts with.
    fake = _fake_env(COMPOSE_FILE.read_text(encoding="utf-8"))
    settings = load_settings({k: _interpolate(v, fake) for k, v in env.items()})
    assert settings.database_url_for(name) == \
        f"postgresql://appeals_{name}:{fake[db_pw]}@postgres:5432/appeals_{name}"
    assert settings.amqp_user == f"svc-{name}"
    assert settings.http_port(name) == DEFAULT_HTTP_PORTS[name]
    assert check_service_start(settings) == []


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_publishes_its_port_and_restarts(services: dict[str, Any], name: str) -> None:
    service = services[name]
    port = DEFAULT_HTTP_PORTS[name]
    published = [str(p) for p in service.get("ports", [])]
    assert published == [f"127.0.0.1:{port}:{port}"]
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


def test_topology_is_a_one_shot_after_the_users_as_the_topology_user(services: dict[str, Any]) -> None:
    topology = services["topology"]
    assert _command(topology)[:3] == ["appeals", "topology", "apply"]
    assert _depends_on(topology).get("rabbitmq") == "service_healthy"
    assert _depends_on(topology).get("provision") == "service_completed_successfully"
    assert topology.get("restart") in ("no", None)
    pw = password_env_name("appeals-topology")
    assert _environment(topology)["APPEALS_AMQP_URI"] == \
        f"amqp://appeals-topology:${{{pw}:?set {pw}}}@rabbitmq:5672/"


def _provisioned_users(services: dict[str, Any]) -> list[str]:
    from appeals_common.provisioning import grants_from_config

    command = _command(services["provision"])
    patterns = _interpolate(command[command.index("--users") + 1], {})
    return [g.name for g in select_grants(grants_from_config(REPO / "config"), patterns)]


def test_provision_makes_the_users_with_passwords_from_the_environment(services: dict[str, Any]) -> None:
    provision = services["provision"]
    command = _command(provision)
    assert command[:3] == ["appeals", "provision", "apply"]
    assert {"--passwords-env", "--remove-guest"} <= set(command)
    assert command[command.index("--backend") + 1] == "management"
    assert _depends_on(provision) == {"rabbitmq": "service_healthy"}
    assert provision.get("restart") in ("no", None)
    env = _environment(provision)
    admin = env["APPEALS_MANAGEMENT_URL"]
    assert admin.startswith("http://appeals-admin:${RABBITMQ_ADMIN_PASSWORD:?") and \
        admin.endswith("@rabbitmq:15672")
    users = _provisioned_users(services)
    assert {"appeals-topology", *(f"svc-{s}" for s in SERVICES), "dept-zjj", "dept-jrb"} <= set(users)
    for user in users:  # each its own variable, required
        name = password_env_name(user)
        assert env[name] == f"${{{name}:?set {name}}}", user


def test_database_makes_each_services_role_with_passwords_from_the_environment(
        services: dict[str, Any]) -> None:
    database = services["database"]
    assert _command(database) == ["appeals", "provision", "database", "--passwords-env"]
    assert _depends_on(database) == {"postgres": "service_healthy"}
    env = _environment(database)
    assert env["APPEALS_DATABASE_ADMIN_URL"].startswith("postgresql://postgres:${POSTGRES_PASSWORD:?")
    for service in SERVICES:
        name = password_env_name(f"appeals_{service}")
        assert env[name] == f"${{{name}:?set {name}}}"


def test_no_secret_has_a_default_and_nobody_is_guest(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name, default in DEFAULTED.findall(text):
        assert not re.search("PASSWORD|SECRET|PASS$", name), (name, default)
    for value in _strings(compose):
        assert "guest" not in value.lower() or value.startswith("--"), value
    assert {"APPEALS_JWT_SECRET", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
            "RABBITMQ_ADMIN_PASSWORD"} <= set(REQUIRED.findall(text))
    # Every password variable is its own: no two accounts share one.
    fake = _fake_env(text)
    check_passwords({name: value for name, value in fake.items() if "PASSWORD" in name})


def test_every_published_port_listens_on_localhost_only(services: dict[str, Any]) -> None:
    published = {name: [str(p) for p in service.get("ports", [])] for name, service in services.items()}
    assert any(published.values())
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), (name, port)


@pytest.mark.parametrize("code", ["zjj", "jrb"])
def test_department_adapters_connect_as_their_department_user(services: dict[str, Any],
                                                               code: str) -> None:
    env = _environment(services[f"adapter-{code}"])
    name = password_env_name(f"dept-{code}")
    assert env["APPEALS_DEPT_AMQP_URI"] == f"amqp://dept-{code}:${{{name}:?set {name}}}@rabbitmq:5672/"
    assert env["APPEALS_DEPT_CODE"] == code
    assert f"dept-{code}" in _provisioned_users(services)


def test_rabbitmq_has_management_healthcheck_and_config(services: dict[str, Any]) -> None:
    rabbitmq = services["rabbitmq"]
    image = rabbitmq["image"]
    assert image.startswith("rabbitmq:") and "management" in image
    check = _healthcheck_text(rabbitmq)
    assert "rabbitmq-diagnostics" in check and "ping" in check
    ports = [str(p) for p in rabbitmq["ports"]]
    assert ports == ["127.0.0.1:5672:5672", "127.0.0.1:15672:15672"]
    mounts = " ".join(str(v) for v in rabbitmq["volumes"])
    assert "./deploy/rabbitmq/" in mounts
    env = _environment(rabbitmq)
    assert env["RABBITMQ_DEFAULT_USER"] == "appeals-admin"  # instead of guest
    assert REQUIRED.fullmatch(env["RABBITMQ_DEFAULT_PASS"])


def test_postgres_has_healthcheck_and_auth(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in _healthcheck_text(postgres)
    env = _environment(postgres)
    assert "POSTGRES_HOST_AUTH_METHOD" not in env
    assert env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    assert [str(p) for p in postgres["ports"]] == ["127.0.0.1:5432:5432"]


def test_prometheus_and_grafana(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    assert [str(p) for p in prometheus["ports"]] == ["127.0.0.1:9090:9090"]
    mounts = " ".join(str(v) for v in prometheus["volumes"])
    assert "./deploy/prometheus/prometheus.yml:" in mounts
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    assert [str(p) for p in grafana["ports"]] == ["127.0.0.1:3000:3000"]
    assert _environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"] == \
        "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}"


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


def _rabbitmq_conf() -> dict[str, str]:
    lines = (RABBITMQ_DIR / "rabbitmq.conf").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_rabbitmq_boots_with_its_admin_and_without_guest(services: dict[str, Any]) -> None:
    conf = _rabbitmq_conf()
    # A node that imports definitions at boot creates no default user: no import here, so
    # RABBITMQ_DEFAULT_USER (appeals-admin) is created, and guest is not.
    assert not any(key.startswith(("definitions.", "load_definitions")) for key in conf)
    assert conf["loopback_users.guest"] == "true"
    assert "loopback_users" not in conf  # `= none` would let a guest log in from anywhere
    targets = _bind_mounts(services["rabbitmq"]).values()
    assert not [t for t in targets if t.endswith(".json")]
    assert not (RABBITMQ_DIR / "definitions.compose.json").exists()
    example = json.loads((RABBITMQ_DIR / "definitions.example.json").read_text(encoding="utf-8"))
    users = {u["name"] for u in example["users"]}
    assert "guest" not in users and {"appeals-topology", "svc-intake"} <= users
    assert all(u["password_hash"] == "" and u["tags"] == [] for u in example["users"])


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
    conf = _rabbitmq_conf()
    assert conf["loopback_users.guest"] == "true"
    assert all(key for key in conf)


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


def _compose_env(tmp_path: Path) -> Path:
    env_file = tmp_path / "compose.env"
    subprocess.run(["sh", str(REPO / "deploy" / "compose-env.sh"), str(env_file)], check=True,
                   capture_output=True, timeout=60)
    return env_file


def test_compose_env_script_makes_every_required_secret_once(tmp_path: Path) -> None:
    env_file = _compose_env(tmp_path)
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == set(REQUIRED.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert all(re.fullmatch("[0-9a-f]{64}", v) for v in values.values())  # URL-safe
    check_passwords({k: v for k, v in values.items() if "PASSWORD" in k})
    assert check_service_start(load_settings({"APPEALS_JWT_SECRET": values["APPEALS_JWT_SECRET"]})) == []
    before = env_file.read_text()
    _compose_env(tmp_path)  # again: nothing new, nothing changed
    assert env_file.read_text() == before


def test_compose_config_validates(tmp_path: Path) -> None:
    binary = _compose_binary()
    if binary is None:
        missing_tool("no compose binary: neither `docker compose` (plugin) nor `docker-compose` is "
                    "installed, so the Compose-spec validation (`config -q`) cannot run here")
    env_file = _compose_env(tmp_path)
    # Only the env file speaks: none of the secrets from this process's environment.
    required = set(REQUIRED.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    clean = {k: v for k, v in os.environ.items() if k not in required}
    result = subprocess.run([*binary, "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
                             "config", "-q"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=clean)
    assert result.returncode == 0, result.stderr or result.stdout
    # Without the secrets compose refuses, naming what is missing.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run([*binary, "--env-file", str(empty), "-f", str(COMPOSE_FILE),
                             "config", "-q"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env=clean)
    assert result.returncode != 0 and "set " in (result.stderr + result.stdout)


def test_services_export_traces_to_jaeger_which_grafana_links(compose: dict[str, Any],
                                                               services: dict[str, Any]) -> None:
    env = compose["x-appeals-environment"]
    assert env["APPEALS_LOG_FORMAT"] == "json"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert "otlp" in env["APPEALS_TRACING"]
    jaeger = services["jaeger"]
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    datasources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/jaeger.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://jaeger:16686"
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/appeals.json").read_text())
    assert any("16686" in link["url"] for link in dashboard["links"])
