"""The deployment files, checked without Docker: the image, the compose file and its monitoring
profile, the Grafana dashboard against the metrics the service defines, the packaging."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "veriflow.json"
# Added to service/metrics.py separately, with exactly this name and label.
PENDING_METRICS = {"veriflow_limit_refusals_total": {"limit"}}
VERIFLOW_SERVICES = ("api", "worker", "simulator")
MONITORING = {"prometheus": "prom/prometheus:", "grafana": "grafana/grafana-oss:"}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> repository path of a service's `./…` volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts[target] = source
    return mounts


class TestCompose:
    def test_every_veriflow_service_waits_for_a_healthy_redis(self):
        found = services()
        veriflow = {name for name, s in found.items() if s.get("build") == "." or
                    s.get("command", [""])[0] == "veriflow"}
        assert veriflow == set(VERIFLOW_SERVICES)
        for name in veriflow:
            assert found[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        check = found["redis"]["healthcheck"]["test"]
        assert check[0] in {"CMD", "CMD-SHELL"}
        assert "redis-cli" in " ".join(check[1:])
        assert "ping" in " ".join(check[1:])

    def test_redis_and_the_required_variables_are_kept(self):
        found = services()
        command = found["redis"]["command"]
        flags = dict(zip(command[1::2], command[2::2], strict=True))
        assert flags["--appendonly"] == "yes"
        assert flags["--maxmemory-policy"] == "noeviction"
        assert flags["--hash-max-listpack-value"] == "256"
        for name in VERIFLOW_SERVICES:
            env = found[name]["environment"]
            for variable in ("VERIFLOW_API_KEYS", "VERIFLOW_PROVIDER_SECRET", "VERIFLOW_SECRET_KEY"):
                assert env[variable].startswith(f"${{{variable}:?"), f"{name} must require {variable}"

    def test_services_without_readyz_override_the_image_check(self):
        """The image checks /readyz on 8080; only the api serves it."""
        found = services()
        assert "healthcheck" not in found["api"]
        assert found["worker"]["healthcheck"] == {"disable": True}
        simulator = " ".join(found["simulator"]["healthcheck"]["test"])
        assert "8081" in simulator
        assert "/readyz" not in simulator

    def test_monitoring_services_exist_only_under_their_profile(self):
        found = services()
        profiled = {name: s["profiles"] for name, s in found.items() if "profiles" in s}
        assert profiled == {name: ["monitoring"] for name in MONITORING}
        for name, image in MONITORING.items():
            assert found[name]["image"].startswith(image)
        for name in found.keys() - MONITORING.keys():
            assert not str(found[name].get("image", "")).startswith(tuple(MONITORING.values())), name

    def test_mounted_provisioning_files_exist(self):
        found = services()
        mounts = {name: bind_mounts(found[name]) for name in MONITORING}
        assert set(mounts["prometheus"]) == {"/etc/prometheus/prometheus.yml"}
        assert set(mounts["grafana"]) >= {"/etc/grafana/provisioning"}
        for name, table in mounts.items():
            for source in table.values():
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        for service in found.values():  # and no other service mounts something missing
            for source in bind_mounts(service).values():
                assert (ROOT / source).exists(), source

    def test_prometheus_scrapes_the_api(self):
        """The worker runs no HTTP server (`veriflow worker` has no app), so only the api is scraped."""
        config = load_yaml("deploy/prometheus/prometheus.yml")
        targets = [target for job in config["scrape_configs"] for static in job["static_configs"]
                   for target in static["targets"]]
        assert targets == ["api:8080"]
        assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"])
        assert services()["api"]["command"][-2:] == ["--port", "8080"]

    def test_grafana_provisioning_points_at_the_mounted_dashboard_and_datasource(self):
        grafana = services()["grafana"]
        mounts = bind_mounts(grafana)
        provisioning = ROOT / mounts["/etc/grafana/provisioning"]
        datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
        (datasource,) = datasources["datasources"]
        assert datasource["type"] == "prometheus"
        assert datasource["url"] == "http://prometheus:9090"
        providers = yaml.safe_load((provisioning / "dashboards" / "veriflow.yml").read_text(encoding="utf-8"))
        (provider,) = providers["providers"]
        dashboards = provider["options"]["path"]
        assert (ROOT / mounts[dashboards] / DASHBOARD.name).resolve() == DASHBOARD
        uids = {target["datasource"]["uid"] for panel in panels() for target in panel["targets"]}
        uids |= {panel["datasource"]["uid"] for panel in panels()}
        assert uids == {datasource["uid"]}


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, by stage: (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for statement in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        if not statement.strip():
            continue
        instruction, _, arguments = statement.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


class TestDockerfile:
    def test_builds_a_wheel_and_installs_it_not_editable(self):
        stages = dockerfile_stages()
        assert len(stages) >= 2, "a build stage and a runtime stage"
        *builders, runtime = stages
        runs = [args for stage in stages for op, args in stage if op == "RUN"]
        assert not [r for r in runs if re.search(r"pip install\b.*(\s-e\s|--editable)", r)]
        assert any("pip wheel" in args for stage in builders for op, args in stage if op == "RUN")
        installs = [args for op, args in runtime if op == "RUN" and "pip install" in args]
        assert installs
        assert all("/wheels" in args or ".whl" in args for args in installs)
        copies = [args for op, args in runtime if op in {"COPY", "ADD"}]
        assert not [c for c in copies if "--from=" not in c], "the runtime stage takes no source"

    def test_runs_as_a_non_root_user(self):
        runtime = dockerfile_stages()[-1]
        users = [args for op, args in runtime if op == "USER"]
        assert users, "the runtime stage names a USER"
        assert users[-1].split(":")[0] not in {"root", "0"}
        assert any("useradd --system" in args and users[-1] in args.split() for op, args in runtime
                   if op == "RUN")

    def test_healthcheck_calls_readyz_and_port_is_exposed(self):
        runtime = dockerfile_stages()[-1]
        (check,) = [args for op, args in runtime if op == "HEALTHCHECK"]
        assert "CMD" in check
        assert "http://127.0.0.1:8080/readyz" in check
        assert "urllib" in check, "slim images have no curl"
        assert ("EXPOSE", "8080") in runtime

    def test_dockerignore_keeps_what_the_build_needs(self):
        patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.startswith("#")]
        assert ".git" in patterns
        assert "bench/results" in patterns or "bench" in patterns
        for needed in ("pyproject.toml", "README.md", "config/defaults.yaml", "config/catalog.yaml",
                       "service/__init__.py", "machines/__init__.py"):
            assert not [p for p in patterns if fnmatch.fnmatch(needed, p) or needed.startswith(p + "/")], needed


class TestPackaging:
    def pyproject(self) -> dict[str, Any]:
        return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    def test_every_package_in_the_tree_is_listed(self):
        """The packages are listed (find cannot map config/ into service/_config): a new package
        directory left out of the list would be missing from the wheel."""
        tool = self.pyproject()["tool"]["setuptools"]
        on_disk = {".".join(init.parent.relative_to(ROOT).parts)
                   for top in ("service", "machines") for init in (ROOT / top).rglob("__init__.py")}
        assert set(tool["packages"]) == on_disk | {"service._config"}

    def test_config_files_are_package_data(self):
        tool = self.pyproject()["tool"]["setuptools"]
        assert tool["package-dir"] == {"service._config": "config"}
        patterns = tool["package-data"]["service._config"]
        files = [p.name for p in (ROOT / "config").iterdir() if p.is_file()]
        assert files
        for name in files:
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"config/{name} is not shipped"


    def test_console_files_are_package_data(self):
        """The console's page, scripts, styles and vendored library ship in the wheel."""
        patterns = self.pyproject()["tool"]["setuptools"]["package-data"]["service.console"]
        static = ROOT / "service" / "console"
        files = [str(p.relative_to(static)) for p in (static / "static").rglob("*") if p.is_file()]
        assert "static/index.html" in files
        for name in files:
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} is not shipped"


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        found.extend([panel, *panel.get("panels", [])])  # panels inside collapsed rows
    return [panel for panel in found if panel.get("targets")]


def defined_metrics() -> dict[str, set[str]]:
    """Every series name the service's registry exposes -> its label names."""
    metrics = Metrics()
    labels = {c._name: set(c._labelnames) for c in vars(metrics).values() if isinstance(c, MetricWrapperBase)}
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = labels.get(family.name, set()) | ({"le"} if suffix == "_bucket" else set())
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def parse_expr(expr: str) -> tuple[list[str], set[str]]:
    """The metric names a PromQL expression selects, and the label names it groups or matches by."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations, $__rate_interval
    text = re.sub(r"\$\{?\w+\}?", "", text)  # dashboard variables
    labels: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    text = re.sub(r"\{[^}]*\}", " ", text)
    names = []
    for token in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[token.end():].lstrip()
        preceding = text[:token.start()]
        if rest.startswith("(") or token.group().lower() in PROMQL_WORDS or re.search(r"[0-9.]$", preceding):
            continue
        names.append(token.group())
    return names, labels


class TestDashboard:
    def test_expression_parser(self):
        assert parse_expr('histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x="y"}[5m])))') == (
            ["a_bucket"], {"route", "le", "x"})
        assert parse_expr("max(b) / on (i) group_left c offset 1h") == (["b", "c"], {"i"})

    def test_every_metric_in_a_panel_is_defined(self):
        defined = defined_metrics() | PENDING_METRICS
        for panel in panels():
            for target in panel["targets"]:
                names, labels = parse_expr(target["expr"])
                assert names, f"{panel['title']}: no metric in {target['expr']}"
                unknown = [n for n in names if n not in defined]
                assert not unknown, f"{panel['title']}: {unknown} not in service/metrics.py"
                known_labels = set().union(*(defined[n] for n in names))
                assert labels <= known_labels, f"{panel['title']}: labels {labels - known_labels} in {target['expr']}"
                legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                assert legend <= known_labels, f"{panel['title']}: legend {legend}"

    def test_the_dashboard_covers_the_service(self):
        used = {name for panel in panels() for target in panel["targets"] for name in parse_expr(target["expr"])[0]}
        for needed in ("veriflow_started_total", "veriflow_outcomes_total", "veriflow_http_request_seconds_bucket",
                       "veriflow_timer_lag_seconds_bucket", "veriflow_outbox_pending", "veriflow_live_verifications",
                       "veriflow_commit_conflicts_total", "veriflow_effects_total", "veriflow_limit_refusals_total"):
            assert needed in used, needed
        latency = [t["expr"] for p in panels() for t in p["targets"] if "veriflow_http_request_seconds_bucket" in t["expr"]]
        assert any("histogram_quantile(0.5," in e and "route" in e for e in latency)
        assert any("histogram_quantile(0.99," in e and "route" in e for e in latency)
        ids = [panel["id"] for panel in panels()]
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*.y*ml")))
def test_deploy_yaml_parses(path: str) -> None:
    assert isinstance(load_yaml(path), dict)
