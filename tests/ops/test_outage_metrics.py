"""What /metrics says while the index database is really down, and once it is back."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, send_files
from tests.integration.test_database_outage import ThrowawayPostgres, throwaway_postgres
from tests.ops.helpers import scrape, series_files, value

__all__ = ["throwaway_postgres"]  # the fixture, used by name below


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_database_outage_shows_in_the_metrics_that_alert_on_it(
    make_gateway: GatewayFactory, throwaway_postgres: ThrowawayPostgres, corpus: list[CorpusFile]
) -> None:
    files = [f.path for f in series_files(corpus, "ct/pancreas_ct_philips_series", 3)]
    gateway = make_gateway(throwaway_postgres.url)
    assert gateway.http is not None
    http = gateway.http.port
    assert send_files(gateway.dicom_port, files[:1]) == {files[0]: 0x0000}
    up = scrape(http)
    assert value(up, "pacsgw_dependency_up", dependency="database") == 1
    assert value(up, "pacsgw_index_instances") == 1

    throwaway_postgres.stop()
    assert send_files(gateway.dicom_port, files[1:2]) == {files[1]: 0xA700}
    assert _readyz(http) == 503  # runs the checks now, rather than waiting for the periodic ones
    down = scrape(http)  # the scrape itself still answers
    assert value(down, "pacsgw_dependency_up", dependency="database") == 0
    assert value(down, "pacsgw_dependency_up", dependency="blob_store") == 1
    assert value(down, "pacsgw_database_errors_total", reason="unavailable") >= 1
    assert value(down, "pacsgw_index_operation_errors_total", op="record") == 1
    assert value(down, "pacsgw_dimse_requests_total", service="c_store", status_category="failure") == 1
    assert "pacsgw_index_instances" not in down  # no stale size while the index cannot be read

    throwaway_postgres.start()
    assert send_files(gateway.dicom_port, files[1:]) == {files[1]: 0x0000, files[2]: 0x0000}
    assert _readyz(http) == 200
    back = scrape(http)
    assert value(back, "pacsgw_dependency_up", dependency="database") == 1
    assert value(back, "pacsgw_index_instances") == 3
