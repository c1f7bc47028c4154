"""The event-driven association reactors (gateway.dimse.reactor) with real peers: requests are
served, an idle association costs next to no CPU, and the timers the loops check still fire."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from gateway.app import Gateway
from gateway.dimse.reactor import EventDrivenDUL
from tests.integration.conftest import GatewayFactory

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _gateway_association(gateway: Gateway) -> Association:
    assert gateway.server is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if gateway.server.active_associations:
            return gateway.server.active_associations[0]
        time.sleep(0.01)
    raise AssertionError("the gateway has no association")


def _thread_cpu_ticks(thread: threading.Thread) -> int:
    """User plus system clock ticks the thread has used (Linux)."""
    fields = open(f"/proc/self/task/{thread.native_id}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_gateway_associations_run_the_event_driven_reactor(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = scu.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        served = _gateway_association(gateway)
        assert isinstance(served.dul, EventDrivenDUL)
        # Many requests in a row over one association, each answered.
        for _ in range(50):
            assert assoc.send_c_echo().Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = "NOBODY"
        query.StudyInstanceUID = ""
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in responses] == [0x0000]
    finally:
        assoc.release()
    assert assoc.is_released


def test_requests_sent_from_this_process_do_not_wait_out_the_idle_wait(make_gateway: GatewayFactory) -> None:
    """The SCU here runs the same reactors (install() is process-wide), as the gateway's own C-MOVE
    store associations do. Each request pauses the SCU's reactor first: the pause must take
    effect at once, not after the reactor's idle wait, and the reactor must never take a response
    off the queue before the request that waits for it (that request would hang until the DIMSE
    timeout). Requests come 10 ms apart, as a C-MOVE's do while the next instance is prepared,
    so the reactor is idle when each one asks: 100 of them take about 1.2 s, or about 6 s when
    each waits out the 50 ms idle wait."""
    gateway = make_gateway()
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    scu.dimse_timeout = 10
    assoc = scu.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    assert isinstance(assoc.dul, EventDrivenDUL)
    try:
        started = time.monotonic()
        statuses = []
        for _ in range(100):
            time.sleep(0.01)
            statuses.append(assoc.send_c_echo().Status)
        elapsed = time.monotonic() - started
    finally:
        assoc.release()
    assert statuses == [0x0000] * 100
    assert elapsed < 3.5, elapsed


def test_dcmtk_findscu_repeated_queries_in_one_association(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway()
    result = subprocess.run(["findscu", "-S", "-aec", "PACSGW", "--repeat", "20", "127.0.0.1",
                             str(gateway.dicom_port), "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=NOBODY",
                             "-k", "StudyInstanceUID"], capture_output=True, text=True, timeout=60, env=DCMTK_ENV)
    assert result.returncode == 0, result.stderr


def test_an_idle_association_does_not_spin(make_gateway: GatewayFactory) -> None:
    """pynetdicom's polling loops wake every millisecond: about 3 % of a core per thread, which
    is 6 ticks of 10 ms in two seconds. Waiting for work, both threads stay near zero."""
    gateway = make_gateway()
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        served = _gateway_association(gateway)
        threads = [served, served.dul]
        before = [_thread_cpu_ticks(thread) for thread in threads]
        time.sleep(2.0)
        used = [_thread_cpu_ticks(thread) - start for thread, start in zip(threads, before, strict=True)]
        assert max(used) <= 2, used
        assert assoc.send_c_echo().Status == 0x0000  # and it still answers at once
    finally:
        assoc.release()


def test_the_network_timeout_still_ends_an_idle_association(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(dicom={"network_timeout_seconds": 0.5})
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established
    started = time.monotonic()
    while (assoc.is_established and not (assoc.is_aborted or assoc.is_released)
           and time.monotonic() - started < 10):
        time.sleep(0.02)
    assert assoc.is_aborted or assoc.is_released
    assert time.monotonic() - started < 3


def test_a_connection_that_never_asks_for_an_association_is_closed(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(dicom={"acse_timeout_seconds": 0.5})
    with socket.create_connection(("127.0.0.1", gateway.dicom_port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the gateway, not by the 10 s timeout here
        assert time.monotonic() - started < 5
