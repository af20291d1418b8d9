"""The production compose stacks: one host (profiles ``embedded`` and ``server``) and the cluster.

Without Docker: the compose files are validated against the Compose
Specification's JSON schema (the copy check-jsonschema ships), and they, the
ClickHouse configuration, nginx and provisioning files are parsed and
cross-checked per profile (services, health checks, volumes, every mounted file
exists, users and passwords line up).

With a Docker engine (tests marked ``docker``): the stack is built and started
with pytest-docker, webhooks are sent to the ingest service, and every panel
query goes through Grafana's ``/api/ds/query`` — the real plugin's macros —
and must come back without error. Where no engine is reachable these tests
skip, naming the reason.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ingest.testing import free_port, spec_example_urls
from tests.e2e.dashboards import grafana_sim as gs

REPO = Path(__file__).resolve().parents[3]
COMPOSE = REPO / "compose"
SINGLE = COMPOSE / "docker-compose.yml"
CLUSTER = COMPOSE / "docker-compose.cluster.yml"
#: (compose file, profile): every shape the product can be started in.
STACKS = [
    pytest.param(SINGLE, "embedded", id="single-embedded"),
    pytest.param(SINGLE, "server", id="single-server"),
    pytest.param(CLUSTER, None, id="cluster"),
]
ONE_SHOT = {"migrate"}
DATASOURCES = REPO / "dashboards/provisioning/datasources"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _services(path: Path, profile: str | None) -> dict[str, Any]:
    """The services ``docker compose --profile <profile> up`` starts (no profile: those without one)."""
    services = _load(path)["services"]
    return {n: s for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}


def test_compose_files_follow_the_compose_specification_schema():
    """Validated as `docker compose config` would, without Docker: the Compose Specification's own schema."""
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    for path in (SINGLE, CLUSTER):
        jsonschema.validate(_load(path), schema)
    broken = _load(SINGLE)
    broken["services"]["grafana"]["profiles"] = "server"  # a string where the spec wants a list
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_the_single_host_file_has_two_disjoint_profiles_and_embedded_runs_no_clickhouse_server():
    services = _load(SINGLE)["services"]
    assert all(s.get("profiles") in (["server"], ["embedded"]) for s in services.values()), "every service in one"
    embedded = _services(SINGLE, "embedded")
    assert set(embedded) == {"ingest-embedded", "grafana-embedded"}
    assert not any("clickhouse-server" in s.get("image", "") for s in embedded.values())
    env = _env(embedded["ingest-embedded"])
    assert env["PBX_CLICKHOUSE_URL"].startswith("chdb:///") and env["PBX_QUERY_PORT"] == "8123"
    # The engine directory is a named volume: the data outlives the container.
    engine_dir = env["PBX_CLICKHOUSE_URL"].removeprefix("chdb://")
    assert any(m.split(":")[1] == engine_dir for m in embedded["ingest-embedded"]["volumes"])
    # Bound beyond loopback, so it has a password, and Grafana's data source uses it.
    assert env["PBX_QUERY_HOST"] == "0.0.0.0" and env["PBX_QUERY_PASSWORD"].startswith("${PBX_QUERY_PASSWORD:-")
    grafana = _env(embedded["grafana-embedded"])
    assert grafana["PBX_GRAFANA_CLICKHOUSE_HOST"] == "ingest-embedded"
    assert grafana["PBX_GRAFANA_CLICKHOUSE_USER"] == env["PBX_QUERY_USER"]
    assert grafana["PBX_GRAFANA_CLICKHOUSE_PASSWORD"] == env["PBX_QUERY_PASSWORD"]
    published = [p for p in embedded["ingest-embedded"]["ports"] if p.endswith(":8123")]
    assert published and all(p.startswith("127.0.0.1:") for p in published), "query port on the host's loopback only"


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _defaults(text: str) -> dict[str, str]:
    """``${VAR:-default}`` occurrences of a compose file."""
    return dict(re.findall(r"\$\{(\w+):-([^}]*)\}", text))


# -- structure (no Docker needed) ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "profile"), STACKS)
def test_every_long_running_service_has_a_health_check_and_restarts(path: Path, profile: str | None):
    services = _services(path, profile)
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        assert service.get("restart") == "unless-stopped", name


@pytest.mark.parametrize("path", [SINGLE, CLUSTER], ids=["single", "cluster"])
def test_data_lives_in_named_volumes_and_every_mounted_file_exists(path: Path):
    compose = _load(path)
    declared = set(compose["volumes"])
    used = set()
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
        build = service.get("build")
        if build:
            assert (COMPOSE / build["context"] / build["dockerfile"]).resolve().is_file()
    assert declared == used, f"declared but unused: {declared - used}"


@pytest.mark.parametrize(("path", "profile"), STACKS)
def test_services_wait_for_what_they_need(path: Path, profile: str | None):
    services = _services(path, profile)
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on {dep}, which profile {profile} does not start"
            wanted = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond["condition"] == wanted, f"{name} -> {dep}"
    ingest = [s for n, s in services.items() if n.startswith("ingest")]
    # A ClickHouse server is migrated first; the embedded engine is migrated by serve itself.
    assert ingest and all(("migrate" in s.get("depends_on", {})) == (profile != "embedded") for s in ingest)
    grafana = next(s for n, s in services.items() if n.startswith("grafana"))
    assert set(grafana["depends_on"]) <= set(services)


@pytest.mark.parametrize(("path", "profile"), [p for p in STACKS if p.values[1] != "embedded"])
def test_ingest_writes_as_writer_and_grafana_reads_as_the_read_only_user(path: Path, profile: str | None):
    services = _services(path, profile)
    ch_hosts = {n for n, s in services.items() if "clickhouse-server" in s.get("image", "")}
    assert ch_hosts
    for name, service in services.items():
        env = _env(service)
        if name.startswith("ingest") or name == "migrate":
            url = env["PBX_CLICKHOUSE_URL"]
            m = re.fullmatch(r"http://writer:\$\{PBX_CLICKHOUSE_WRITER_PASSWORD:-[^}]+\}@([\w-]+):8123(/pbx)?", url)
            assert m and m[1] in ch_hosts, f"{name}: {url}"
            assert bool(m[2]) == name.startswith("ingest"), "migrate creates pbx, so it connects without it"
        if name.startswith("ingest"):
            assert env["PBX_SPOOL_DIR"] and any(v.endswith(":" + env["PBX_SPOOL_DIR"]) for v in service["volumes"])
    grafana = services["grafana"]
    env = _env(grafana)
    assert env["PBX_GRAFANA_CLICKHOUSE_USER"] == "grafana" and env["PBX_GRAFANA_CLICKHOUSE_HOST"] in ch_hosts
    assert int(re.search(r"grafana:\$\{GRAFANA_VERSION:-(\d+)\.(\d+)", grafana["image"])[1]) >= 12


@pytest.mark.parametrize(("path", "profile"), STACKS)
def test_grafana_provisions_the_data_source_of_its_profile_with_every_variable_it_reads(path: Path, profile: str | None):
    services = _services(path, profile)
    (name,) = [n for n in services if n.startswith("grafana")]
    mounts = _mounts(services[name])
    kind = "embedded" if profile == "embedded" else "server"
    assert mounts[f"../dashboards/provisioning/datasources/{kind}"] == "/etc/grafana/provisioning/datasources"
    env = _env(services[name])
    # The plugin is pinned to the version the dashboards were checked against (docs/dashboards.md).
    assert env["GF_PLUGINS_PREINSTALL_SYNC"] == "${GRAFANA_CLICKHOUSE_PLUGIN:-grafana-clickhouse-datasource@4.20.0}"
    for var in re.findall(r"\$\{(\w+)\}", (DATASOURCES / kind / "pbx.yaml").read_text()):
        assert var in env, f"{name} does not set {var}"


def test_the_cluster_stack_migrates_on_cluster_and_each_ingest_instance_knows_the_cluster():
    services = _load(CLUSTER)["services"]
    cluster = ET.parse(COMPOSE / "cluster/config.d/cluster.xml").getroot()
    (name,) = [c.tag for c in cluster.find("remote_servers")]
    assert services["migrate"]["command"] == ["migrate", "--cluster", name]
    for n, s in services.items():
        if n.startswith("ingest"):
            assert _env(s)["PBX_CLICKHOUSE_CLUSTER"] == name
    shards = cluster.findall(f"remote_servers/{name}/shard")
    assert len(shards) == 1 and shards[0].findtext("internal_replication") == "true"
    replicas = {r.findtext("host") for r in shards[0].findall("replica")}
    assert replicas == {"clickhouse-01", "clickhouse-02"} and replicas <= set(services)
    for host in replicas:
        assert services[host]["hostname"] == host and _env(services[host])["CLICKHOUSE_REPLICA"] == host
    assert cluster.find(f"remote_servers/{name}/secret").get("from_env") == "PBX_CLUSTER_SECRET"
    assert cluster.findtext("zookeeper/node/host") == "keeper" and "keeper" in services
    assert {m.tag for m in cluster.find("macros")} >= {"shard", "replica"}
    keeper = ET.parse(COMPOSE / "cluster/keeper/keeper.xml").getroot()
    assert keeper.findtext("keeper_server/tcp_port") == cluster.findtext("zookeeper/node/port")


def test_the_load_balancer_spreads_webhooks_over_every_ingest_instance():
    services = _load(CLUSTER)["services"]
    conf = (COMPOSE / "nginx/ingest-lb.conf").read_text()
    upstreams = set(re.findall(r"server ([\w-]+):8080", conf))
    assert upstreams == {n for n in services if n.startswith("ingest")}
    assert services["lb"]["ports"]
    for name in upstreams:
        # Behind nginx, X-Forwarded-For is trusted from any peer: only nginx may reach them.
        assert _env(services[name])["PBX_TRUSTED_PROXIES"] == "*" and "ports" not in services[name], name


def test_clickhouse_users_writer_may_migrate_grafana_may_only_read():
    users = ET.parse(COMPOSE / "clickhouse/users.d/pbx-users.xml").getroot()
    writer, grafana = users.find("users/writer"), users.find("users/grafana")
    assert writer.find("password").get("from_env") == "PBX_CLICKHOUSE_WRITER_PASSWORD"
    assert grafana.find("password").get("from_env") == "PBX_CLICKHOUSE_GRAFANA_PASSWORD"
    assert [q.text for q in grafana.findall("grants/query")] == ["GRANT SELECT ON pbx.*"]
    profile = users.find(f"profiles/{grafana.findtext('profile')}")
    assert profile.findtext("readonly") == "1"
    assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None
    assert "GRANT ALL ON pbx.*" in [q.text for q in writer.findall("grants/query")]
    # The ClickHouse containers get both passwords.
    for path in (SINGLE, CLUSTER):
        for name, s in _load(path)["services"].items():
            if "clickhouse-server" in s.get("image", ""):
                assert {"PBX_CLICKHOUSE_WRITER_PASSWORD", "PBX_CLICKHOUSE_GRAFANA_PASSWORD"} <= set(_env(s)), name


def test_env_example_documents_every_variable_with_the_compose_default():
    documented = dict(
        line.split("=", 1) for line in (COMPOSE / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    for path in (SINGLE, CLUSTER):
        for var, default in _defaults(path.read_text()).items():
            if var.endswith("_VERSION"):
                continue  # image versions: documented in docs/dashboards.md
            assert var in documented, f"{var} ({path.name}) is not in .env.example"
            assert documented[var] == default, f"{var}: .env.example says {documented[var]!r}, compose {default!r}"


def test_the_image_is_built_from_this_repository_with_pip():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'^RUN pip install "?\.', dockerfile, re.M)
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    sources = {s for line in copied for s in line.split()}
    assert {"pyproject.toml", "README.md", "ingest", "sql"} <= sources
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "ingest/", "sql/"):
        assert f"!{needed}" in ignore
    assert re.search(r'^ENTRYPOINT \["pbx-analytics"\]', dockerfile, re.M)


def test_only_services_on_the_embedded_engine_get_an_image_with_it():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any("chdb" in dep for dep in project["dependencies"])
    assert any("[chdb]" in dep for dep in project["optional-dependencies"]["embedded"])
    assert "pbx-analytics[embedded]" in project["optional-dependencies"]["test"]  # the suite runs embedded
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r'^ARG EXTRAS=""$', dockerfile, re.M)  # lean unless asked
    for path in (SINGLE, CLUSTER):
        for name, service in _load(path)["services"].items():
            build = service.get("build")
            if not build:
                continue
            embedded = _env(service).get("PBX_CLICKHOUSE_URL", "").startswith("chdb:")
            assert (build.get("args", {}).get("EXTRAS") == "embedded") == embedded, name
            # one tag per content: the lean and the embedded image never overwrite each other
            assert service["image"] == ("pbx-analytics:local-embedded" if embedded else "pbx-analytics:local"), name


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    return dict(m.rsplit(":", 2)[:2] if m.endswith(":ro") else m.split(":", 1) for m in service["volumes"])


def test_grafana_mounts_the_provisioning_and_dashboards_where_the_provider_looks():
    provider = _load(REPO / "dashboards/provisioning/dashboards/pbx.yaml")["providers"][0]
    for path in (SINGLE, CLUSTER):
        for name, service in _load(path)["services"].items():
            if name.startswith("grafana"):
                assert _mounts(service)["../dashboards/json"] == provider["options"]["path"], name


# -- the running stack (Docker) -----------------------------------------------------------------------


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "docker info timed out: no Docker engine reachable"
    if done.returncode != 0:
        return f"no Docker engine reachable (docker info: {done.stderr.strip().splitlines()[-1:]})"
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode != 0:
        return "docker compose (v2) is not installed"
    return None


def _wait(url: str, timeout: float, **kwargs: Any) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=3, **kwargs)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


class Stack:
    def __init__(self, ingest: str, grafana: str) -> None:
        self.ingest, self.grafana = ingest, grafana
        self.auth = ("admin", "admin-test")


@pytest.fixture(scope="module", params=[pytest.param(p.values, id=p.id) for p in STACKS])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    from pytest_docker.plugin import get_docker_services

    path, profile = request.param
    ports = {"PBX_INGEST_PORT": free_port(), "GRAFANA_PORT": free_port(), "CLICKHOUSE_HTTP_PORT": free_port(),
             "PBX_QUERY_HTTP_PORT": free_port()}  # fmt: skip
    saved = dict(os.environ)
    os.environ.update({k: str(v) for k, v in ports.items()})
    os.environ["GRAFANA_ADMIN_PASSWORD"] = "admin-test"
    project = f"pbxtest{os.getpid()}{path.stem.replace('docker-compose', '').replace('.', '')}{profile or ''}"
    # The embedded profile's Grafana reads the engine through serve's ClickHouse HTTP interface.
    select = f"--profile {profile} " if profile else ""
    try:
        with get_docker_services("docker compose", [str(path)], project, [f"{select}up --build -d"],
                                 [f"{select}down -v"]):  # fmt: skip
            stack = Stack(f"http://127.0.0.1:{ports['PBX_INGEST_PORT']}", f"http://127.0.0.1:{ports['GRAFANA_PORT']}")
            _wait(f"{stack.ingest}/healthz", 600)
            _wait(f"{stack.grafana}/api/health", 600)
            yield stack
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.docker
def test_the_stack_stores_webhooks_and_grafana_answers_every_panel(stack: Stack):
    from ingest.simulation import SimConfig, simulate

    # The vendor's examples, then an hour of simulated traffic ending now.
    for url in spec_example_urls():
        assert httpx.get(url.replace("http://server", stack.ingest), timeout=10).status_code == 200
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sim = simulate(SimConfig(seed=3, start=now - dt.timedelta(hours=1), hours=1, end_mode="cut"))
    with httpx.Client(base_url=stack.ingest, timeout=10) as client:
        for event in sim.events:
            assert client.get(event.target).status_code == 200
    time.sleep(15)  # spool -> ClickHouse, then the 15-minute views' refresh (every 5 s)

    with httpx.Client(base_url=stack.grafana, auth=stack.auth, timeout=60) as grafana:
        health = grafana.get("/api/datasources/uid/pbx-clickhouse/health")
        assert health.status_code == 200 and health.json()["status"] == "OK", health.text
        for uid in {q.dashboard["uid"] for q in gs.panel_queries()}:
            assert grafana.get(f"/api/dashboards/uid/{uid}").status_code == 200, f"{uid} not provisioned"
        empty = []
        for query in gs.panel_queries():
            rng = gs.default_time_range(query.dashboard, now)
            # What the browser does (conditionalAll, variables); the plugin's backend expands the macros.
            # Every variable at its default (All, the FCR window's 1 day, empty text boxes); All needs no options.
            variables = [gs.dashboard_variable(v, []) for v in query.dashboard["templating"]["list"]]
            sql = gs.replace_variables(gs.apply_conditional_all(query.sql, variables), variables)
            body = {
                "from": str(rng.from_ms), "to": str(rng.to_ms),
                "queries": [{**query.target, "rawSql": sql, "intervalMs": query.interval_ms(rng),
                             "maxDataPoints": 1000}],
            }  # fmt: skip
            answer = grafana.post("/api/ds/query", json=body)
            result = answer.json()["results"]["A"]
            assert answer.status_code == 200 and "error" not in result, f"{query.id}: {answer.text[:500]}"
            frames = result.get("frames", [])
            if not frames or not frames[0]["data"]["values"] or not frames[0]["data"]["values"][0]:
                empty.append(query.panel["title"])
        assert len(empty) < len(gs.panel_queries()) / 3, f"too many empty panels: {empty}"


def test_the_first_start_script_creates_the_database_the_ingest_dsn_names(tmp_path: Path):
    from ingest.storing import clickhouse, migrations

    (script,) = (COMPOSE / "clickhouse/initdb").glob("*.sql")
    sql = script.read_text()
    assert re.search(r"CREATE DATABASE IF NOT EXISTS pbx ENGINE = Atomic", sql)
    client = clickhouse.connect(f"chdb://{tmp_path / 'chdata'}")
    try:
        client.command(re.sub(r"--[^\n]*\n", "", sql))
        migrations.apply_migrations(client)  # and migrations still apply on top of it
        assert client.query("SELECT engine FROM system.databases WHERE name = 'pbx'").result_rows == [("Atomic",)]
    finally:
        client.close()
