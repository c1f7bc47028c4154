"""The shipped Prometheus configuration, alert rules and Grafana dashboard, checked by promtool and by
a real Prometheus that scrapes a gateway after it stored and served corpus files."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom import dcmread

from gateway.app import Gateway
from tests.conftest import REPO_ROOT, CorpusFile
from tests.integration.conftest import GatewayFactory, send_files
from tests.ops.helpers import find_studies, get_study, series_files, study_uid

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "pacs-gateway.json"

# Panels that must show data once instances were stored and retrieved; the others show failures,
# errors and fallbacks, which this traffic has none of.
MAIN_PANELS = {
    "Archive backlog",
    "Archive throughput (instances/s by outcome)",
    "Ingest rate (instances/s by modality)",
    "Received and stored bytes/s",
    "DIMSE requests by service and status category",
    "DIMSE latency p95 by service",
    "Associations",
    "Storage saved by modality (since start)",
    "Compression ratio p50 by modality",
    "Codec latency percentiles",
    "Codec pool",
    "Mode decisions by candidate",
    "Retrieve throughput (sub-operations/s)",
    "Database statement latency p95",
    "Blob store latency p95",
    "Dependencies up",
    "Index size",
    "Index bytes",
    "Index storage saved",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/test installs Debian's `prometheus` package")
    return path


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_configuration_and_the_rules() -> None:
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 7 rules found" in rules.stdout


def test_alert_rule_unit_tests_fire_on_a_verification_failure() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")
    }
    assert {"PacsGatewayVerificationFailure", "PacsGatewayCStoreFailureRate", "PacsGatewayDatabaseUnreachable",
            "PacsGatewayCodecPoolSaturated", "PacsGatewayArchiveBacklogGrowing"} <= fired


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_dashboard_is_provisioned_against_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "pacs-gateway.yml").read_text())
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{providers['providers'][0]['options']['path']}:ro" in mounts

    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in _panels()}
    assert MAIN_PANELS <= titles
    for panel in _panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == uid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        pytest.fail(f"Prometheus never returned data for {expr}")


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start a real Prometheus scraping one gateway every second, with the shipped alert rules."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(gateway: Gateway) -> Prometheus:
        assert gateway.http is not None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [{"job_name": "pacs-gateway",
                                "static_configs": [{"targets": [f"127.0.0.1:{gateway.http.port}"]}]}],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(subprocess.Popen(
            [_tool("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=log))
        prometheus = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if prometheus.wait_for('up{job="pacs-gateway"} == 1', timeout=1):
                    return prometheus
            except (OSError, pytest.fail.Exception):
                time.sleep(0.5)
        pytest.fail(f"Prometheus did not scrape the gateway:\n{(tmp_path / 'prometheus.log').read_text()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def test_prometheus_scrapes_the_gateway_and_every_panel_query_runs(
    make_gateway: GatewayFactory, prometheus_for: Any, corpus: list[CorpusFile]
) -> None:
    gateway = make_gateway()
    prometheus: Prometheus = prometheus_for(gateway)

    # Traffic after the first scrape, so rates see it happen.
    ct = series_files(corpus, "ct/pancreas_ct_philips_series", 6)
    mr = series_files(corpus, "mr/brain_tumor_progression_t1post_siemens_series", 3)
    assert set(send_files(gateway.dicom_port, [f.path for f in [*ct, *mr]]).values()) == {0x0000}
    assert find_studies(gateway.dicom_port) >= 2
    sop_classes = {str(dcmread(ct[0].path, stop_before_pixels=True).SOPClassUID)}
    assert get_study(gateway.dicom_port, study_uid(ct[0].path), sop_classes) == (0x0000, len(ct))
    prometheus.wait_for("pacsgw_index_instances == 9")
    prometheus.wait_for('pacsgw_retrieve_suboperations_total{status="sent"} > 0')
    time.sleep(3)  # a few more scrapes, so every rate has two samples after the traffic

    empty = []
    for panel in _panels():
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            result = prometheus.query(expr)
            if panel["title"] in MAIN_PANELS and target["refId"] == "A" and not result:
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    saved = prometheus.query('1 - sum by (modality) (pacsgw_stored_bytes_total) '
                             '/ sum by (modality) (pacsgw_received_bytes_total)')
    assert {r["metric"]["modality"]: 0 < float(r["value"][1]) < 1 for r in saved} == {"CT": True, "MR": True}

    rules = prometheus.get("/api/v1/rules")["data"]["groups"]
    alerting = [rule for group in rules for rule in group["rules"]]
    assert len(alerting) == 7
    deadline = time.monotonic() + 10
    while any(rule["health"] != "ok" for rule in alerting) and time.monotonic() < deadline:
        time.sleep(0.5)
        alerting = [rule for group in prometheus.get("/api/v1/rules")["data"]["groups"] for rule in group["rules"]]
    assert all(rule["health"] == "ok" for rule in alerting), alerting
    assert prometheus.get("/api/v1/alerts")["data"]["alerts"] == []
