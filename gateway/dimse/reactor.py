"""Event-driven reactors for pynetdicom's associations.

pynetdicom runs two loops per association, both polling: the DUL thread (socket and state
machine) sleeps 1 ms whenever a turn found nothing to do, and the association thread (DIMSE
dispatch) sleeps 1 ms on every turn. A request therefore waits up to a millisecond to be read,
another to be dispatched, and each response up to one more before it is written: about 1.5 ms of
every C-FIND, C-STORE or C-GET sub-operation round trip spent asleep, and two threads per idle
association waking a thousand times a second.

install() replaces both sleeps with waits that end as soon as there is work:

- the DUL thread waits in select() on its socket and on a wake-up socket pair, which is written
  whenever a primitive or event is queued for it (by the association thread or by itself);
- the association thread waits on an event the DUL thread sets after each state-machine action
  (every received DIMSE message, release or abort passes through one), and that pynetdicom's
  send_*() methods set when they ask the reactor to pause for them (a C-MOVE's sub-operations,
  an SCU's requests).

Both waits also end after IDLE_WAIT, so the timers both loops check (ARTIM, network idle) keep
their meaning. The loops are pynetdicom's own (3.0.4, MIT licence), with only the waits changed;
pynetdicom is pinned, and every DIMSE test runs through them.
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
from typing import Any

import pynetdicom.association
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import LOGGER as DUL_LOGGER
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

# The longest either loop sleeps with nothing to do: the resolution of the timers it checks.
IDLE_WAIT = 0.05

_library_run_reactor = Association._run_reactor
_library_init = Association.__init__


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls `wake` after every put."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _Checkpoint(threading.Event):
    """The association's reactor checkpoint. pynetdicom's send_*() methods clear it and then wait
    until the reactor has paused at it: clearing also wakes the reactor, so that happens at once."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.set()
        self._wake = wake

    def clear(self) -> None:
        super().clear()
        self._wake.set()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL service provider, waiting for its socket or its queues instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.event_queue = _WakingQueue(self._poke)
        self.to_provider_queue = _WakingQueue(self._poke)
        # Set after every state-machine action: the association thread's wake-up.
        self.user_wake = threading.Event()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # full: a wake-up is already pending; closed: the reactor has ended

    def kill_dul(self) -> None:
        super().kill_dul()
        self._poke()

    def stop_dul(self) -> bool:
        """As pynetdicom's: stop the reactor if the state machine is idle (Sta1); waking it, so
        the caller does not wait out an idle wait."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._poke()
        if self.is_alive():
            self.join()
        return True

    def _wait_for_work(self) -> None:
        """Until the socket is readable, something was queued, or IDLE_WAIT has passed."""
        watched: list[Any] = [self._wake_r]
        transport = self.socket
        peer = getattr(transport, "socket", None) if transport is not None else None
        if peer is not None and getattr(transport, "_is_connected", False):
            if isinstance(peer, ssl.SSLSocket) and peer.pending():
                return  # bytes the TLS layer holds are invisible to select()
            watched.append(peer)
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return  # a socket closed under us: the transport check reports it
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, with its idle sleep replaced by _wait_for_work()."""
        try:
            self._run()
        finally:
            self.user_wake.set()
            self._wake_r.close()
            self._wake_w.close()

    def _run(self) -> None:
        self._idle_timer.start()
        wait = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if wait:
                self._wait_for_work()
            if self._kill_thread:
                break
            # The ARTIM timer first, so its event is queued ahead of any other this turn.
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Each turn either encodes and sends one primitive or reads and decodes one PDU.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                DUL_LOGGER.error("Exception in DUL.run(), aborting association")
                DUL_LOGGER.exception(exc)
                # Past the state machine, which an exception here may have left inconsistent.
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                wait = True
                continue
            self.state_machine.do_action(event)
            self.user_wake.set()
            wait = False


def _run_association_reactor(self: Association) -> None:
    """pynetdicom's association loop, with its 1 ms sleep replaced by a wait on the DUL."""
    dul = self.dul
    if not isinstance(dul, EventDrivenDUL):
        _library_run_reactor(self)
        return
    self._is_paused = False
    while not self._kill:
        dul.user_wake.wait(IDLE_WAIT)
        dul.user_wake.clear()
        # pynetdicom's send_*() methods clear the checkpoint and wait until the reactor says it
        # is paused, so that the response they wait for is not taken off the queue here. Unlike
        # pynetdicom's loop, this one says so only once it has seen the checkpoint cleared: a
        # reactor that says "paused" on its way past an open checkpoint takes the sender's
        # response as an unexpected message whenever it arrives first, and the sender waits
        # until the DIMSE timeout (pydicom/pynetdicom#435, #875; C-MOVE sub-operations to a
        # fast destination hit it often).
        if not self._reactor_checkpoint.is_set():
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            dul.user_wake.set()  # what came while paused is looked at now
            continue
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, context_id)  # type: ignore[arg-type]
            dul.user_wake.set()  # more may have arrived while serving
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            pynetdicom.association.LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return
        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            pynetdicom.association.LOGGER.info(log_msg)
            # So that EVT_ACSE_RECV fires for subscribers.
            dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return
        if not dul.is_alive():
            self.kill()
            return
        if dul.idle_timer_expired():
            pynetdicom.association.LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def _init_association(self: Association, *args: Any, **kwargs: Any) -> None:
    _library_init(self, *args, **kwargs)
    if isinstance(self.dul, EventDrivenDUL):
        self._reactor_checkpoint = _Checkpoint(self.dul.user_wake)


def install() -> None:
    """Make every association created from now on use the event-driven reactors (idempotent)."""
    setattr(pynetdicom.association, "DULServiceProvider", EventDrivenDUL)
    setattr(Association, "__init__", _init_association)
    setattr(Association, "_run_reactor", _run_association_reactor)

