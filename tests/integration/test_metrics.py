"""/metrics after real traffic (C-ECHO, C-STORE of corpus files, C-FIND, C-GET, a refused peer),
parsed with prometheus_client's text parser and held against the README's metric table."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from pydicom import dcmread

from gateway.metrics import ArchiveCollector, IndexSizeCollector, Metrics
from storage.index import IndexCounts
from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, dataset_bytes, send_files
from tests.ops.helpers import (
    echo,
    exposed_name,
    find_studies,
    get_study,
    readme_metric_table,
    scrape,
    scrape_until,
    sendable,
    series_files,
    study_uid,
    value,
)

CT_SERIES = "ct/pancreas_ct_philips_series"
MR_SERIES = "mr/brain_tumor_progression_t1post_siemens_series"
_UID = re.compile(r"^[0-9]+(\.[0-9]+){3,}$")


def _labels_of(family: Metric) -> set[str]:
    return {name for sample in family.samples for name in sample.labels} - {"le"}


def _monotone_samples(families: dict[str, Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample that may never decrease: counters, and histograms' buckets, counts and sums."""
    out = {}
    for family in families.values():
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_after_real_traffic_match_the_readme_and_what_was_sent(
    make_gateway: GatewayFactory, pg_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway(database_url=pg_url, dicom={"allowed_calling_aets": ["TESTSCU"]})
    assert gateway.http is not None
    port, http = gateway.dicom_port, gateway.http.port

    ct = series_files(corpus, CT_SERIES, 6)
    mr = series_files(corpus, MR_SERIES, 2)
    # Lossy input of another modality, kept as received.
    lossy = next(f for f in sendable(corpus) if f.entry["ts_lossy"] and f.entry["modality"] == "NM")
    first = [*ct[:4], *mr, lossy]

    assert echo(port) == 0x0000
    assert echo(port, calling_aet="INTRUDER") == -1  # refused: not an allowed calling AE
    assert set(send_files(port, [f.path for f in first]).values()) == {0x0000}
    assert find_studies(port) >= 2
    ct_study = study_uid(ct[0].path)
    sop_classes = {str(dcmread(f.path, stop_before_pixels=True).SOPClassUID) for f in ct}
    assert get_study(port, ct_study, sop_classes) == (0x0000, 4)

    before = scrape_until(http, "pacsgw_associations_total", 4, result="released")
    documented = readme_metric_table()

    # Every metric of the README table is exposed, with its type and, where it has samples, its labels.
    exposed = {exposed_name(family): family for family in before.values()}
    assert set(documented) == set(exposed)
    for name, doc in documented.items():
        family = exposed[name]
        # The text format (0.0.4) has no info type: an info metric is a gauge of value 1.
        assert family.type == ("gauge" if doc.type == "info" else doc.type), name
        if family.samples:
            assert _labels_of(family) == doc.labels, name

    # Bounded labels: nothing that looks like an instance UID outside the transfer syntax label.
    sent_uids = {str(dcmread(f.path, stop_before_pixels=True).SOPInstanceUID) for f in first}
    for family in before.values():
        for sample in family.samples:
            for label, label_value in sample.labels.items():
                assert label_value not in sent_uids
                if label != "transfer_syntax":
                    assert not _UID.match(label_value), (sample.name, label, label_value)

    # Counts that follow from what was sent.
    assert value(before, "pacsgw_dimse_requests_total", service="c_echo", status_category="success") == 1
    assert value(before, "pacsgw_dimse_requests_total", service="c_store", status_category="success") == len(first)
    assert value(before, "pacsgw_dimse_requests_total", service="c_find", status_category="success") == 1
    assert value(before, "pacsgw_dimse_requests_total", service="c_get", status_category="success") == 1
    assert value(before, "pacsgw_dimse_request_duration_seconds_count", service="c_store",
                 status_category="success") == len(first)
    assert value(before, "pacsgw_associations_rejected_total", reason="calling_ae_not_allowed") == 1
    assert value(before, "pacsgw_associations_total", result="accepted") == 4
    assert value(before, "pacsgw_associations_total", result="released") == 4
    assert value(before, "pacsgw_associations_active") == 0

    # Bytes: exactly the datasets sent; lossless CT is stored smaller than received.
    ct_received = sum(len(dataset_bytes(f.path)) for f in ct[:4])
    assert value(before, "pacsgw_received_bytes_total", modality="CT") == ct_received
    ct_stored = value(before, "pacsgw_stored_bytes_total", modality="CT")
    assert 0 < ct_stored < ct_received
    assert value(before, "pacsgw_stored_bytes_total", modality="CT", storage_mode="pixcodec") == ct_stored
    assert value(before, "pacsgw_compression_saved_bytes_total", modality="CT", budget="ingest") == (
        ct_received - ct_stored)
    assert value(before, "pacsgw_compression_ratio_count", modality="CT", budget="ingest") == 4
    # No rule configured: the built-in default decided, and the savings say so.
    assert value(before, "pacsgw_compression_ratio_count", modality="CT", rule="builtin-default") == 4
    assert value(before, "pacsgw_compression_ratio_sum", modality="CT", budget="ingest") > 4 * 1.5
    assert value(before, "pacsgw_codec_duration_seconds_count", op="encode") == len(first)
    assert value(before, "pacsgw_codec_duration_seconds_count", op="verify") == len(first)
    assert value(before, "pacsgw_codec_verification_failures_total") == 0
    assert "jpeg-ls" in {s.labels["codec"] for s in before["pacsgw_codec_verification_failures"].samples}
    lossy_modality = str(lossy.entry["modality"])
    assert value(before, "pacsgw_stored_bytes_total", modality=lossy_modality, codec="none",
                 storage_mode="verbatim") > 0

    # The index gauges are the index's totals.
    total_received = sum(len(dataset_bytes(f.path)) for f in first)
    assert value(before, "pacsgw_index_instances") == len(first)
    assert value(before, "pacsgw_index_studies") == len({study_uid(f.path) for f in first})
    assert value(before, "pacsgw_index_original_bytes") == total_received
    assert value(before, "pacsgw_index_stored_bytes") < total_received

    # Storage latency, where it happened: a put per instance, gets for the C-GET, SQL statements.
    store = gateway.settings.blobs.store_name
    assert value(before, "pacsgw_blob_operation_duration_seconds_count", store=store, op="put") == len(first)
    assert value(before, "pacsgw_blob_operation_duration_seconds_count", store=store, op="get") >= 4
    assert value(before, "pacsgw_blob_operation_errors_total") == 0
    assert value(before, "pacsgw_index_operation_duration_seconds_count", op="record") == len(first)
    assert value(before, "pacsgw_database_statement_duration_seconds_count", statement="insert") >= len(first)
    assert value(before, "pacsgw_database_statement_duration_seconds_count", statement="select") > 0
    assert value(before, "pacsgw_dependency_up", dependency="database") == 1
    assert value(before, "pacsgw_dependency_up", dependency="blob_store") == 1

    # The pool as configured, idle now; retrieval counted per sub-operation.
    assert value(before, "pacsgw_codec_pool_workers") == 1
    assert value(before, "pacsgw_codec_pool_slots") == gateway.settings.queue_limit
    assert value(before, "pacsgw_compression_queue_depth") == 0
    assert value(before, "pacsgw_codec_pool_waiting") == 0
    # Each stored instance and each retrieved one took a codec worker slot.
    assert value(before, "pacsgw_codec_pool_wait_seconds_count") == len(first) + 4
    assert value(before, "pacsgw_retrieve_suboperations_total", service="c_get", status="sent") == 4
    assert next(iter(before["pacsgw_build_info"].samples)).labels["version"]

    # More traffic: no counter, bucket, count or sum goes down; the new instances show.
    assert set(send_files(port, [f.path for f in ct[4:]]).values()) == {0x0000}
    after = scrape(http)
    old, new = _monotone_samples(before), _monotone_samples(after)
    for key, old_value in old.items():
        assert new.get(key, -1) >= old_value, key
    assert value(after, "pacsgw_dimse_requests_total", service="c_store", status_category="success") == len(ct) + 3
    assert value(after, "pacsgw_index_instances") == len(first) + 2


def test_readme_metric_table_and_registry_agree_both_ways() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="0", codecs=["jpeg-ls"])
    registry.register(IndexSizeCollector(lambda: IndexCounts(0, 0, 0, 0, 0, 0)))
    registry.register(ArchiveCollector(lambda: (0, False)))
    documented = readme_metric_table()

    families = {exposed_name(family): family for family in registry.collect()}
    assert set(documented) - set(families) == set(), "documented but not in the registry"
    assert set(families) - set(documented) == set(), "in the registry but not documented"

    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    for wrapper in wrappers:
        family = next(iter(wrapper.collect()))
        name = exposed_name(family)
        assert documented[name].type == family.type, name
        labels = set(next(iter(family.samples)).labels) if family.type == "info" else set(wrapper._labelnames)
        assert labels == documented[name].labels, name


def test_metric_names_follow_the_prometheus_conventions() -> None:
    registry = CollectorRegistry()
    Metrics(registry, version="0")
    registry.register(IndexSizeCollector(lambda: IndexCounts(0, 0, 0, 0, 0, 0)))
    forbidden_labels = re.compile(r"uid|patient|peer|address|error|exception|path", re.IGNORECASE)
    for family in registry.collect():
        assert family.name.startswith("pacsgw_"), family.name
        assert not family.name.endswith("_total"), f"{family.name}: _total belongs to counters only"
        assert not re.search(r"_(ms|milliseconds|kb|mb|minutes)$", family.name), family.name
        if family.type == "histogram":
            # PSNR is logarithmic by definition: decibels are its unit, not a scaled base unit.
            assert family.name.endswith(("_seconds", "_bytes", "_ratio", "_decibels")), family.name
        for sample in family.samples:
            for label in sample.labels:
                assert not forbidden_labels.search(label), (family.name, label)


@pytest.mark.parametrize("backend", ["filesystem", "database"])
def test_blob_store_errors_and_dependency_down_are_counted(
    make_gateway: GatewayFactory, corpus: list[CorpusFile], tmp_path: Path, backend: str
) -> None:
    gateway = make_gateway(blobs={"backend": backend})
    assert gateway.http is not None
    file = series_files(corpus, CT_SERIES, 1)[0]
    store = gateway.settings.blobs.store_name
    if backend == "filesystem":
        # A file where the store's temp directory must be: every write fails, as on a lost volume.
        temp = gateway.settings.blob_path / "tmp"
        shutil.rmtree(temp, ignore_errors=True)
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text("not a directory")
    else:
        with gateway.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE blob_chunks")
            connection.exec_driver_sql("DROP TABLE blobs")
    assert set(send_files(gateway.dicom_port, [file.path]).values()) == {0xA700}
    gateway.readiness.check()
    families = scrape(gateway.http.port)
    assert value(families, "pacsgw_blob_operation_errors_total", store=store, op="put") == 1
    assert value(families, "pacsgw_dimse_failures_total", service="c_store", reason="out_of_resources") == 1
    assert value(families, "pacsgw_dependency_up", dependency="blob_store") == 0
    assert value(families, "pacsgw_dependency_up", dependency="database") == 1
    if backend == "database":
        assert value(families, "pacsgw_database_errors_total") >= 1
