"""docker-compose.yml, the Dockerfile and the Grafana provisioning agree with the code.

No Docker engine runs here, so nothing is started: the files are parsed and checked against
what the code actually reads and creates (settings, topics, ports, the pinned Kafka version, the
pipeline's tables), so a rename on either side fails here instead of in a user's `compose up`.
"""

from __future__ import annotations

import ast
import base64
import functools
import inspect
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import streaming.stack.topics as topics_module
from ot_pipeline_tests.support.paths import REPO_ROOT
from streaming.api.cli import DEFAULT_PORT as DEFAULT_API_PORT
from streaming.kafka.config import (
    MESSAGE_MAX_BYTES,
    consumer_config,
    producer_config,
    reader_config,
)
from streaming.settings import (
    DEFAULT_KAFKA_PORT,
    DEFAULT_MQTT_PORT,
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_PORT,
    Settings,
    Topics,
)
from streaming.stack.local import LocalStack

ROOT = REPO_ROOT
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT_IMAGE = "ot-pipeline:local"
KAFKA_SERVICES = ("kafka-1", "kafka-2", "kafka-3")
WORKERS = ("simulator", "lander", "state-writer", "mqtt-bridge")
API = "api"
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
DAGSTER_PORT = 3000
GRAFANA_PORT = 3001
# What each project service needs to reach (on top of the lake/DAGSTER_HOME checks below).
NEEDS = {
    "topics-init": {"KAFKA_BOOTSTRAP_SERVERS"},
    "simulator": {"KAFKA_BOOTSTRAP_SERVERS"},
    "lander": {"KAFKA_BOOTSTRAP_SERVERS", "OT_LAKE_DIR"},
    "state-writer": {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"},
    "mqtt-bridge": {"KAFKA_BOOTSTRAP_SERVERS", "MQTT_URL"},
    "api": {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OT_API_KEYS"},
    "dagster-webserver": {"OT_PG_DSN", "OT_LAKE_DIR", "DAGSTER_HOME", "OT_DAGSTER_PG_URL"},
    "dagster-daemon": {"OT_PG_DSN", "OT_LAKE_DIR", "DAGSTER_HOME", "OT_DAGSTER_PG_URL"},
}


COMPOSE_INSTANCE = "./deploy/dagster/dagster.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _project_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services.items() if svc.get("image") == PROJECT_IMAGE}


_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?-([^}]*))?\}")


def _env(service: dict[str, Any], host: dict[str, str] | None = None) -> dict[str, str]:
    """The service's environment as the container sees it: `${VAR:-default}` interpolated from
    `host` (the environment of `docker compose up`; default: none of them set)."""
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) for item in env)
    host = host or {}
    return {
        str(k): _INTERPOLATION.sub(lambda m: host.get(m[1]) or m[2] or "", str(v))
        for k, v in env.items()
    }


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each `ip:host:container` short-form mapping."""
    out = []
    for spec in service.get("ports", []):
        ip, host, container = str(spec).split(":")
        out.append((ip, int(host), int(container)))
    return out


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (volume name or host path) of the short-form volume mounts."""
    return {spec.split(":")[1]: spec.split(":")[0] for spec in service.get("volumes", [])}


def _python_sources() -> Iterator[Path]:
    for package in ("streaming", "ot_pipeline"):
        yield from (ROOT / package).rglob("*.py")


_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_READERS = {"_get", "_endpoint", "_int", "_float", "getenv", "EnvVar"}


@functools.cache
def environment_names_read_by_the_code() -> frozenset[str]:
    """Names the code reads: arguments of the settings readers (`_get(env, "NAME", ...)`,
    `_endpoint`, ...), `os.getenv`, `os.environ[...]`/`.get(...)`, Dagster `EnvVar`, and `env:`
    in the instance and workspace YAML. Scanned, not listed, so a new setting needs no edit here."""
    names: set[str] = set()
    for path in _python_sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                receiver = func.value if isinstance(func, ast.Attribute) else None
                reads_environ = fname == "get" and (
                    (isinstance(receiver, ast.Attribute) and receiver.attr == "environ")
                    or (isinstance(receiver, ast.Name) and receiver.id in {"environ", "env"})
                )
                if fname in _ENV_READERS or reads_environ:
                    names |= {
                        a.value
                        for a in node.args
                        if isinstance(a, ast.Constant)
                        and isinstance(a.value, str)
                        and _ENV_NAME.match(a.value)
                    }
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
                key = node.slice
                if (
                    node.value.attr == "environ"
                    and isinstance(key, ast.Constant)
                    and isinstance(key.value, str)
                ):
                    names.add(key.value)
    for config in ("dagster.yaml", "workspace.yaml"):
        path = ROOT / config
        if path.exists():
            names |= set(re.findall(r"\benv:\s*['\"]?([A-Z][A-Z0-9_]*)", path.read_text()))
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# Services and configuration


def test_compose_defines_every_service_of_the_platform(services: dict[str, dict[str, Any]]) -> None:
    required = {
        *KAFKA_SERVICES,
        "redis",
        "mosquitto",
        "timescaledb",
        "grafana",
        "topics-init",
        *WORKERS,
        API,
        *DAGSTER_SERVICES,
    }
    assert required <= set(services), f"missing: {sorted(required - set(services))}"
    assert set(_project_services(services)) == set(NEEDS)
    assert services["timescaledb"]["image"] == "timescale/timescaledb:latest-pg17"
    commands = {name: services[name]["command"] for name in (*WORKERS, *DAGSTER_SERVICES)}
    assert commands["simulator"][:2] == ["ot", "simulate"]
    # Real time and endless: no fast-forward (--hours), and --duration 0 (its default is bounded).
    simulate = commands["simulator"]
    assert "--hours" not in simulate
    assert simulate[simulate.index("--duration") + 1] == "0"
    assert commands["lander"][:2] == ["ot", "land"]
    assert commands["state-writer"][:2] == ["ot", "state"]
    assert commands["mqtt-bridge"][:3] == ["ot", "bridge", "mqtt"]
    assert commands["dagster-webserver"][:3] == ["dagster-webserver", "-w", "workspace.yaml"]
    assert commands["dagster-daemon"][:2] == ["dagster-daemon", "run"]


def test_project_services_set_what_they_need_and_only_variables_the_code_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    read = environment_names_read_by_the_code()
    core = {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "OT_PG_DSN", "OT_LAKE_DIR", "DAGSTER_HOME"}
    assert core <= read, f"the source scan lost {sorted(core - read)}"
    for name, service in _project_services(services).items():
        env = _env(service)
        unknown = set(env) - read
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"
        missing = NEEDS[name] - set(env)
        assert not missing, f"{name} does not set {sorted(missing)}"
        Settings.from_env(env)  # parses: no SettingsError on the compose values


def test_project_services_address_the_compose_servers(
    services: dict[str, dict[str, Any]],
) -> None:
    pg_env = _env(services["timescaledb"])
    for name, service in _project_services(services).items():
        settings = Settings.from_env(_env(service))
        brokers = settings.kafka_bootstrap_servers.split(",")
        assert brokers == [f"{k}:9092" for k in KAFKA_SERVICES], name
        for kafka in KAFKA_SERVICES:
            advertised = _env(services[kafka])["KAFKA_ADVERTISED_LISTENERS"]
            assert f"INTERNAL://{kafka}:9092" in advertised.split(",")
        redis = urlsplit(settings.redis_url)
        assert (redis.hostname, redis.port) == ("redis", 6379), name
        pg = urlsplit(settings.pg_dsn)
        assert (pg.hostname, pg.port) == ("timescaledb", 5432), name
        mqtt = urlsplit(settings.mqtt_url)
        assert (mqtt.hostname, mqtt.port) == ("mosquitto", 1883), name
        assert (pg.username, pg.password, pg.path.lstrip("/")) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            pg_env["POSTGRES_DB"],
        ), name


def test_services_that_share_data_mount_the_shared_volumes_where_the_settings_point(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in ("lander", *DAGSTER_SERVICES):
        settings = Settings.from_env(_env(services[name]))
        assert _mounts(services[name]).get(str(settings.lake_dir)) == "lake", name
    for name in DAGSTER_SERVICES:
        settings = Settings.from_env(_env(services[name]))
        mounts = _mounts(services[name])
        assert mounts.get(str(settings.dagster_home)) == "dagster-home", name
        # The instance configuration: the compose variant of the repository's dagster.yaml.
        assert mounts.get(f"{settings.dagster_home}/dagster.yaml") == COMPOSE_INSTANCE, name
    assert {"lake", "dagster-home"} <= set(compose["volumes"])


def test_compose_dagster_instance_is_the_repository_one_with_postgres_storage(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    from ot_pipeline.instance import instance_yaml

    compose_instance = ROOT / COMPOSE_INSTANCE
    expected = instance_yaml((ROOT / "dagster.yaml").read_text(), "postgresql://set-by-compose")
    assert yaml.safe_load(compose_instance.read_text()) == yaml.safe_load(expected), (
        "deploy/dagster/dagster.yaml is out of step with dagster.yaml"
    )
    referenced = set(re.findall(r"\benv:\s*([A-Z][A-Z0-9_]*)", compose_instance.read_text()))
    assert referenced, "the compose instance should read its PostgreSQL URL from the environment"
    pg_env = _env(services["timescaledb"])
    for name in DAGSTER_SERVICES:
        env = _env(services[name])
        assert referenced <= set(env), f"{name} does not set {sorted(referenced - set(env))}"
        for var in referenced:
            url = urlsplit(env[var])
            assert (url.hostname, url.port, url.path.lstrip("/")) == (
                "timescaledb",
                5432,
                pg_env["POSTGRES_DB"],
            ), f"{name}: {var}"
    # Dagster's own schema accepts the file (no server needed for that).
    for var in referenced:
        monkeypatch.setenv(var, "postgresql://ot:ot@timescaledb:5432/ot")
    config, _ = dagster_instance_config(str(compose_instance.parent))
    assert "postgres" in config["storage"]


def test_topic_init_creates_the_settings_topics_with_the_configured_partitions(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the init service's own Python snippet with its compose environment; only the call
    into Kafka is recorded instead of made."""
    init = services["topics-init"]
    assert init["restart"] == "no"
    assert init["command"][:2] == ["python", "-c"]
    for name in environment_names_read_by_the_code():
        monkeypatch.delenv(name, raising=False)
    for key, value in _env(init).items():
        monkeypatch.setenv(key, value)
    calls: list[inspect.BoundArguments] = []
    real = inspect.signature(topics_module.create_topics)

    def record(*args: Any, **kwargs: Any) -> list[str]:
        calls.append(real.bind(*args, **kwargs))  # fails if the snippet's call does not fit
        return []

    monkeypatch.setattr(topics_module, "create_topics", record)
    exec(compile(init["command"][2], "topics-init", "exec"), {})

    assert len(calls) == 1
    call = calls[0]
    call.apply_defaults()
    assert call.arguments["topics"] == Topics()
    assert call.arguments["readings_partitions"] == Settings().readings_partitions
    assert call.arguments["replication_factor"] == len(KAFKA_SERVICES)
    layout = topics_module.topic_layout(call.arguments["topics"], 6)
    assert set(layout) == set(Topics().all())
    assert call.arguments["bootstrap"] == _env(init)["KAFKA_BOOTSTRAP_SERVERS"]


def test_published_host_ports_are_the_local_stack_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    local_three = LocalStack(brokers=3).bootstrap.split(",")
    for i, kafka in enumerate(KAFKA_SERVICES):
        port = DEFAULT_KAFKA_PORT + i
        assert _published(services[kafka]) == [("127.0.0.1", port, port)]
        env = _env(services[kafka])
        assert f"HOST://127.0.0.1:{port}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert f"HOST://:{port}" in env["KAFKA_LISTENERS"].split(",")
        assert local_three[i] == f"127.0.0.1:{port}"
    assert _published(services["redis"]) == [("127.0.0.1", DEFAULT_REDIS_PORT, 6379)]
    assert _published(services["timescaledb"]) == [("127.0.0.1", DEFAULT_PG_PORT, 5432)]
    assert _published(services["mosquitto"]) == [("127.0.0.1", DEFAULT_MQTT_PORT, 1883)]
    assert urlsplit(Settings().mqtt_url).port == DEFAULT_MQTT_PORT == LocalStack().mqtt_port
    # The host-side defaults of Settings reach the compose servers unchanged.
    defaults = Settings()
    assert defaults.kafka_bootstrap_servers == local_three[0]
    assert urlsplit(defaults.redis_url).port == DEFAULT_REDIS_PORT
    pg = urlsplit(defaults.pg_dsn)
    pg_env = _env(services["timescaledb"])
    assert (pg.port, pg.username, pg.password, pg.path.lstrip("/")) == (
        DEFAULT_PG_PORT,
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    webserver = services["dagster-webserver"]
    command = webserver["command"]
    assert int(command[command.index("-p") + 1]) == DAGSTER_PORT
    assert _published(webserver) == [("127.0.0.1", DAGSTER_PORT, DAGSTER_PORT)]
    assert _published(services["grafana"]) == [("127.0.0.1", GRAFANA_PORT, 3000)]


# ---------------------------------------------------------------------------------------------
# Health and start order


def test_every_long_running_service_has_a_healthcheck_and_waits_on_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shot = {name for name, svc in services.items() if svc.get("restart") == "no"}
    assert one_shot == {"topics-init"}
    for name, service in services.items():
        if name not in one_shot:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec == {"condition": wanted}, f"{name} -> {dep}: {spec}"
    # Everything that produces or consumes waits for the topics; the state writer for Redis.
    for name in WORKERS:
        assert "topics-init" in services[name]["depends_on"], name
    assert set(services["topics-init"]["depends_on"]) == set(KAFKA_SERVICES)
    assert "redis" in services["state-writer"]["depends_on"]
    assert "mosquitto" in services["mqtt-bridge"]["depends_on"]
    for name in (*DAGSTER_SERVICES, "grafana"):
        assert "timescaledb" in services[name]["depends_on"], name


def test_start_order_has_no_cycles(services: dict[str, dict[str, Any]]) -> None:
    graph = {name: set(svc.get("depends_on") or {}) for name, svc in services.items()}
    order = []
    while graph:
        ready = sorted(n for n, deps in graph.items() if not deps)
        assert ready, f"dependency cycle among {sorted(graph)}"
        order += ready
        graph = {n: deps - set(ready) for n, deps in graph.items() if n not in ready}
    assert order.index("topics-init") > max(order.index(k) for k in KAFKA_SERVICES)


def test_worker_healthchecks_run_the_probe_the_image_ships(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY --chown=ot:ot deploy/healthcheck.py ./healthcheck.py" in dockerfile
    assert re.search(r"^WORKDIR /opt/ot$", dockerfile, re.M)
    for name in WORKERS:
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "python",
            "/opt/ot/healthcheck.py",
            name,
        ]


# ---------------------------------------------------------------------------------------------
# Kafka


def test_kafka_image_is_the_broker_version_pinned_for_the_local_stack(
    services: dict[str, dict[str, Any]],
) -> None:
    pom = ET.parse(ROOT / "streaming" / "stack" / "pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = pom.getroot().findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version and re.match(r"^\d+\.\d+\.\d+$", version)
    for kafka in KAFKA_SERVICES:
        assert services[kafka]["image"] == f"apache/kafka:{version}"


def test_kafka_nodes_form_one_static_quorum_of_combined_brokers(
    services: dict[str, dict[str, Any]],
) -> None:
    envs = [_env(services[k]) for k in KAFKA_SERVICES]
    voters = {f"{i}@{k}:9093" for i, k in enumerate(KAFKA_SERVICES, start=1)}
    cluster_ids = {env["CLUSTER_ID"] for env in envs}
    assert len(cluster_ids) == 1
    (cluster_id,) = cluster_ids
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16  # a Kafka Uuid
    for i, env in enumerate(envs, start=1):
        assert env["KAFKA_NODE_ID"] == str(i)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        listeners = env["KAFKA_LISTENERS"].split(",")
        assert "CONTROLLER://:9093" in listeners and "INTERNAL://:9092" in listeners
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == str(len(KAFKA_SERVICES))
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_LOG_DIRS"] in _mounts(services[KAFKA_SERVICES[i - 1]])


def test_brokers_and_clients_agree_on_the_message_size_limit(
    services: dict[str, dict[str, Any]],
) -> None:
    # One limit end to end (streaming/kafka/config.py): what the brokers accept is what every
    # producer may send and what a consumer fetches from a partition at once.
    for kafka in KAFKA_SERVICES:
        assert _env(services[kafka])["KAFKA_MESSAGE_MAX_BYTES"] == str(MESSAGE_MAX_BYTES)
    properties = LocalStack().kafka.properties(1).splitlines()
    assert f"message.max.bytes={MESSAGE_MAX_BYTES}" in properties
    settings = Settings.from_env({})
    assert producer_config(settings)["message.max.bytes"] == MESSAGE_MAX_BYTES
    assert consumer_config(settings, "g")["max.partition.fetch.bytes"] == MESSAGE_MAX_BYTES
    assert reader_config("b", "r")["max.partition.fetch.bytes"] == MESSAGE_MAX_BYTES


# ---------------------------------------------------------------------------------------------
# Mosquitto


def _mosquitto_options(text: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            options.setdefault(key, []).append(value.strip())
    return options


def test_compose_mosquitto_has_the_local_stack_broker_settings(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], tmp_path: Path
) -> None:
    """Same delivery guarantees in both: persistence, autosave, the queue limit, logging; only
    the listener, the data folder and the user differ (container vs. local process)."""
    mosquitto = services["mosquitto"]
    assert re.match(r"^eclipse-mosquitto:2\.0\.\d+$", mosquitto["image"])
    mounts = _mounts(mosquitto)
    assert mounts["/mosquitto/config/mosquitto.conf"] == "./deploy/mosquitto/mosquitto.conf"
    compose_conf = _mosquitto_options((ROOT / "deploy/mosquitto/mosquitto.conf").read_text())
    assert mounts[compose_conf["persistence_location"][0].rstrip("/")] == "mosquitto-data"
    assert "mosquitto-data" in compose["volumes"]
    local = LocalStack(root=tmp_path, services=("mosquitto",))
    local_conf = _mosquitto_options(local.mosquitto.write_config().read_text())
    assert local_conf["listener"] == [f"{DEFAULT_MQTT_PORT} 127.0.0.1"]
    assert compose_conf["listener"] == ["1883"]
    differ = {"listener", "persistence_location", "user"}
    assert {k: v for k, v in compose_conf.items() if k not in differ} == {
        k: v for k, v in local_conf.items() if k not in differ
    }
    assert compose_conf["persistence"] == ["true"]
    # The healthcheck subscribes to the broker's own uptime topic ($$ = a literal $ in compose).
    assert "$$SYS/broker/uptime" in mosquitto["healthcheck"]["test"]


def test_compose_bridge_keeps_a_fixed_session_and_writes_the_heartbeat_the_probe_reads() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ot_probe", ROOT / "deploy" / "healthcheck.py")
    assert spec and spec.loader
    probe = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = probe
    spec.loader.exec_module(probe)
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["mqtt-bridge"]["command"]
    assert command[command.index("--status-file") + 1] == str(probe.BRIDGE_STATUS_FILE)
    assert command[command.index("--client-id") + 1]  # fixed: the session outlives restarts


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_installs_the_project_and_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    # The image installs the same locked versions as `make setup`.
    assert "pip install -c requirements.lock ." in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert dockerfile.rstrip().splitlines()[-1] == 'CMD ["ot", "--help"]'
    env = dict(re.findall(r"^\s+(OT_LAKE_DIR|DAGSTER_HOME)=(\S+)", dockerfile, re.M))
    compose_env = _env(yaml.safe_load(COMPOSE_FILE.read_text())["services"]["lander"])
    assert env == {k: compose_env[k] for k in ("OT_LAKE_DIR", "DAGSTER_HOME")}


def test_dockerfile_copies_only_files_that_exist_and_the_build_context_keeps_them() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    sources = [
        src
        for line in re.findall(r"^COPY (?:--\S+ )*(.+)$", dockerfile, re.M)
        for src in line.split()[:-1]
    ]
    assert "deploy/healthcheck.py" in sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not any(src == pat or src.startswith(pat + "/") for pat in ignored), src
    for needed in ("pyproject.toml", "requirements.lock", "streaming", "ot_pipeline", "README.md"):
        assert needed not in ignored, f".dockerignore drops {needed}, which pip install needs"


# ---------------------------------------------------------------------------------------------
# Grafana


def _grafana_mount(services: dict[str, dict[str, Any]], host_dir: str) -> str:
    (target,) = [c for c, src in _mounts(services["grafana"]).items() if src == host_dir]
    return target


def test_grafana_datasource_points_at_the_compose_timescaledb(
    services: dict[str, dict[str, Any]],
) -> None:
    assert _grafana_mount(services, "./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    (source,) = [s for s in _datasources() if s["type"] == "grafana-postgresql-datasource"]
    pg_env = _env(services["timescaledb"])
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["url"] == "timescaledb:5432"
    assert source["user"] == pg_env["POSTGRES_USER"]
    assert source["jsonData"]["database"] == pg_env["POSTGRES_DB"]
    assert source["secureJsonData"]["password"] == pg_env["POSTGRES_PASSWORD"]
    assert source["jsonData"]["timescaledb"] is True
    assert "grafana" in services and "timescaledb" in services["grafana"]["depends_on"]
    # The metrics: the compose Prometheus on its container port.
    (prometheus,) = [s for s in _datasources() if s["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "prometheus" in services["grafana"]["depends_on"]


def _datasources() -> list[dict[str, Any]]:
    files = sorted((ROOT / "deploy/grafana/provisioning/datasources").glob("*.yaml"))
    return [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]


def test_grafana_loads_the_dashboards_from_the_mounted_folder(
    services: dict[str, dict[str, Any]],
) -> None:
    target = _grafana_mount(services, "./deploy/grafana/dashboards")
    files = sorted((ROOT / "deploy/grafana/provisioning/dashboards").glob("*.yaml"))
    providers = [p for f in files for p in yaml.safe_load(f.read_text())["providers"]]
    assert [p["options"]["path"] for p in providers] == [target]
    home = _env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(target + "/")
    assert (ROOT / "deploy/grafana/dashboards" / home.removeprefix(target + "/")).exists()


# The dashboards' SQL. Grafana expands its macros and variables before PostgreSQL sees a query;
# the tests expand them the same way, then check the identifiers (pure) and run the queries
# against the pipeline's own DDL (stack). Every dashboard over the rollups is checked, and every
# PromQL query of the metrics dashboards names only metrics the code exports.
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
PG_SOURCE = "grafana-postgresql-datasource"
# Keywords, functions and types the queries use; any other word must be a column or an alias.
SQL_WORDS = frozenset(
    [
        "select",
        "from",
        "where",
        "and",
        "or",
        "in",
        "group",
        "by",
        "order",
        "as",
        "asc",
        "desc",
        "limit",
        "distinct",
        "nullif",
        "coalesce",
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "round",
        "numeric",
        "extract",
        "epoch",
        "floor",
        "to_timestamp",
        "between",
        "time",
        "on",
    ]
)
_TABLE_REF = re.compile(r"\bot\.([a-z_][a-z0-9_]*)\b")


def _dashboard(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _sql_dashboards() -> list[Path]:
    """The dashboards over the PostgreSQL rollups (their panels query the PostgreSQL source)."""
    return [
        path
        for path in DASHBOARDS
        if any(p["datasource"]["type"] == PG_SOURCE for p in _dashboard(path)["panels"])
    ]


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, raw SQL) of every panel target and every query variable of every SQL dashboard."""
    queries = []
    for path in _sql_dashboards():
        board = _dashboard(path)
        queries += [
            (f"{path.name}: panel {p['title']!r} {t['refId']}", t["rawSql"])
            for p in board["panels"]
            for t in p["targets"]
        ]
        queries += [
            (f"{path.name}: variable {v['name']}", v["query"])
            for v in board["templating"]["list"]
            if v["type"] == "query"
        ]
    return queries


def expand_grafana_sql(raw: str, schema: str = "ot") -> str:
    """The PostgreSQL data source's macros, for a fixed range and one value per variable."""
    out = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-02T00:00:00Z'",
        raw,
    )
    out = out.replace("$__interval", "'1m'")
    seconds = {"1m": 60, "5m": 300, "1h": 3600}
    out = re.sub(
        r"\$__timeGroupAlias\((\w+),\s*'(\w+)'\)",
        lambda m: (
            f"to_timestamp(floor(extract(epoch from {m[1]}) / {seconds[m[2]]})"
            f' * {seconds[m[2]]}) AS "time"'
        ),
        out,
    )
    out = out.replace("$machine_id", "'m-001'").replace("$metric", "'temperature'")
    assert "$" not in out, f"unexpanded Grafana syntax in: {out}"
    return _TABLE_REF.sub(lambda m: f"{schema}.{m[1]}", out)


def _pipeline_tables() -> dict[str, set[str]]:
    """Table -> columns, from the warehouse contract (streaming.warehouse_schema)."""
    from streaming.warehouse_schema import HOURLY_VIEW, HOURLY_VIEW_COLUMNS, TABLES

    tables = {name: set(spec.column_names) for name, spec in TABLES.items()}
    tables[HOURLY_VIEW] = set(HOURLY_VIEW_COLUMNS)  # the hourly rollup view over readings_1m
    return tables


def test_dashboards_have_fixed_uids_the_variables_and_the_provisioned_datasources() -> None:
    uids = [_dashboard(path)["uid"] for path in DASHBOARDS]
    assert {"ot-machines", "ot-fleet", "ot-operations"} <= set(uids)
    assert len(set(uids)) == len(uids)
    sources = {s["type"]: {"type": s["type"], "uid": s["uid"]} for s in _datasources()}
    for path in DASHBOARDS:
        board = _dashboard(path)
        assert path.stem == board["uid"], path.name  # the file names the dashboard
        for panel in board["panels"]:
            ref = sources[panel["datasource"]["type"]]
            assert panel["datasource"] == ref, panel["title"]
            assert all(t["datasource"] == ref for t in panel["targets"]), panel["title"]
        for var in board["templating"]["list"]:
            assert var["datasource"] == sources[PG_SOURCE], var["name"]
    for path in _sql_dashboards():
        names = {v["name"] for v in _dashboard(path)["templating"]["list"]}
        assert {"machine_id", "metric"} <= names, path.name
    timed = [sql for _, sql in _dashboard_queries() if "$__timeFilter(" in sql]
    assert len(timed) == len(_dashboard_queries())
    assert any("$__timeGroupAlias(" in sql for sql in timed)


def test_dashboard_queries_use_only_tables_and_columns_of_the_pipeline_ddl() -> None:
    tables = _pipeline_tables()
    used = set()
    for where, raw in _dashboard_queries():
        refs = _TABLE_REF.findall(raw)
        assert len(refs) == 1, f"{where}: expected one table, found {refs}"
        (table,) = refs
        assert table in tables, f"{where}: ot.{table} is not created by the pipeline"
        used.add(table)
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "", raw)  # literals and quoted aliases
        text = re.sub(r"\$__\w+|\$\w+", " ", _TABLE_REF.sub(" ", text))
        aliases = set(re.findall(r"\bAS\s+(\w+)", text, flags=re.I))
        words = {w for w in re.findall(r"[A-Za-z_]\w*", text)}
        unknown = {w for w in words if w.lower() not in SQL_WORDS} - tables[table] - aliases
        assert not unknown, f"{where}: not columns of ot.{table}: {sorted(unknown)}"
    assert {"readings_1m", "readings_5m", "anomalies", "machine_health_hourly"} <= used


def test_fleet_dashboard_has_gauges_per_machine_raw_vs_processed_and_alert_history() -> None:
    board = _dashboard(ROOT / "deploy/grafana/dashboards/ot-fleet.json")
    kinds = {p["title"]: p["type"] for p in board["panels"]}
    gauges = [p for p in board["panels"] if p["type"] == "gauge"]
    assert len(gauges) >= 2
    for gauge in gauges:  # one gauge per row: per machine
        (target,) = gauge["targets"]
        assert target["format"] == "table" and "machine_id" in target["rawSql"]
        assert gauge["options"]["reduceOptions"]["values"] is True
    (raw,) = [p for p in board["panels"] if p["title"].startswith("Raw vs processed")]
    tables = {_TABLE_REF.findall(t["rawSql"])[0] for t in raw["targets"]}
    assert tables == {"readings_1m", "readings_5m", "readings_hourly", "anomalies"}
    assert any("history" in title.lower() and kind == "table" for title, kind in kinds.items())


def _exported_samples() -> set[str]:
    """The sample names the code's metrics export (counters add _total, histograms three)."""
    from prometheus_client.metrics import MetricWrapperBase

    from streaming.observability import metrics

    names = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names |= {f"{family.name}{suffix}" for suffix in _SUFFIXES[family.type]}
    return names


_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def test_metrics_dashboards_query_only_metrics_the_code_exports() -> None:
    exported = _exported_samples()
    assert "ot_consumer_messages_total" in exported and "ot_consumer_batch_seconds_bucket" in (
        exported
    )
    prom = [
        (path.name, p["title"], t["expr"])
        for path in DASHBOARDS
        for p in _dashboard(path)["panels"]
        for t in p["targets"]
        if t["datasource"]["type"] == "prometheus"
    ]
    assert prom, "no dashboard reads the Prometheus metrics"
    used = set()
    for name, title, expr in prom:
        for metric in re.findall(r"\b(ot_[a-z_]+)", expr):
            assert metric in exported, f"{name}: {title!r} reads {metric}, which no code exports"
            used.add(metric)
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    for rule in (r for group in rules for r in group["rules"]):
        for metric in re.findall(r"\b(ot_[a-z_]+)", rule["expr"]):
            assert metric in exported, f"alert {rule['alert']} reads {metric}: no code exports it"
    assert {"ot_consumer_lag_messages", "ot_dead_letters_total"} <= used


def test_prometheus_scrapes_every_project_service_on_its_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    from streaming.observability.metrics import METRICS_PORTS, SCRAPE_JOBS
    from streaming.stack.prometheus import RULES

    prometheus = services["prometheus"]
    assert _mounts(prometheus)["/etc/prometheus"] == "./deploy/prometheus"
    assert _published(prometheus) == [("127.0.0.1", LocalStack().prometheus_port, 9090)]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    # The rules are the file the local stack loads, at its path inside the container.
    assert config["rule_files"] == [f"/etc/prometheus/{RULES.name}"]
    assert RULES.parent == ROOT / "deploy/prometheus"
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {SCRAPE_JOBS[c]: [f"{SCRAPE_JOBS[c]}:{p}"] for c, p in METRICS_PORTS.items()}
    for job in jobs:  # each job is a service that serves its metrics to the compose network
        command = services[job]["command"]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0", job
        assert "--metrics-port" not in command, f"{job}: the default port is the scraped one"


@pytest.mark.stack
def test_dashboard_queries_run_on_the_tables_the_pipeline_creates(isolated: Settings) -> None:
    """Creates the pipeline's schema (plain PostgreSQL here; TimescaleDB in compose), then plans
    and runs every expanded panel and variable query: a wrong column or type fails here."""
    import psycopg

    from ot_pipeline.warehouse import Warehouse

    warehouse = Warehouse(isolated.pg_dsn, isolated.pg_schema)
    warehouse.ensure_schema()
    try:
        with psycopg.connect(isolated.pg_dsn) as conn:
            for where, raw in _dashboard_queries():
                try:
                    conn.execute(expand_grafana_sql(raw, isolated.pg_schema)).fetchall()
                except psycopg.Error as exc:
                    pytest.fail(f"{where}: {exc}")
    finally:
        warehouse.drop_schema()


def test_every_option_the_compose_commands_pass_is_one_the_command_accepts(
    services: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    from streaming.cli import main as ot

    for name in (*WORKERS, API):
        command = services[name]["command"]
        assert command[0] == "ot", name
        words = command[1:3] if command[1] == "bridge" else command[1:2]  # `ot bridge mqtt`
        with pytest.raises(SystemExit) as done:
            ot([*words, "--help"])
        assert done.value.code == 0, name
        usage = capsys.readouterr().out
        for option in (arg for arg in command[1 + len(words) :] if arg.startswith("--")):
            assert re.search(rf"(^|\s|\[){re.escape(option)}\b", usage), f"{name}: {option}?"


# ---------------------------------------------------------------------------------------------
# The HTTP API


def test_api_serves_the_local_port_with_keys_from_the_environment_and_a_health_probe(
    services: dict[str, dict[str, Any]],
) -> None:
    from streaming.api.keys import Role, new_key

    api = services[API]
    command = api["command"]
    assert command[:2] == ["ot", "api"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the port mapping
    assert _published(api) == [("127.0.0.1", DEFAULT_API_PORT, port)]  # as `make run` serves
    # The entries come from the environment of `compose up`, never from this file.
    assert api["environment"]["OT_API_KEYS"] == "${OT_API_KEYS:-}"
    assert Settings.from_env(_env(api)).api_keys == ()  # unset: no key, every webhook a 401
    _, key = new_key("plant-a", Role.INGEST)
    assert Settings.from_env(_env(api, {"OT_API_KEYS": key.entry})).api_keys == (key,)
    probe = api["healthcheck"]["test"]
    assert probe[:2] == ["CMD", "python"] and f"http://127.0.0.1:{port}/health" in probe[-1]
    assert {"topics-init", "redis"} <= set(api["depends_on"])
