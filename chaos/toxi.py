"""A Toxiproxy server started and stopped by this process, and a client bound to it.

The server is the Go program ``toxiproxy-server`` (``deploy/local/setup.sh``
installs it into ``.venv/bin``). It is driven with ``toxiproxy-python``.

That library keeps the API address in class attributes of its ``APIConsumer``,
so it is process-wide: ``Toxiproxy.update_api_consumer(host, port)`` (the
library's own way to point it elsewhere) sets it for every client in the
process. Hence one running :class:`ToxiproxyServer` per process; starting a
second raises instead of silently redirecting the first one's calls. Its HTTP
calls carry no timeout; they go to a server on 127.0.0.1 that this process
started, which answers in milliseconds, and a dead server refuses the
connection at once.

Failure contract: :meth:`ToxiproxyServer.start` raises
:class:`ToxiproxyNotInstalled` (naming the setup command) when the binary is
missing and :class:`ToxiproxyError` when the server does not answer in time; it
never leaves a process behind. :meth:`ToxiproxyServer.stop` signals only the
PID it started.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from toxiproxy import Toxiproxy

from raft_ledger_node.localcluster import LocalClusterError, PortReservation, reserve_ports

BINARY_NAME = "toxiproxy-server"
SETUP_COMMAND = "bash deploy/local/setup.sh"
#: Time for a started server to answer its API.
SERVER_READY_TIMEOUT_S = 10.0
#: Time the server gets to exit after SIGTERM before it is SIGKILLed.
SERVER_STOP_TIMEOUT_S = 5.0
#: Attempts with a fresh port (a probed-free port can be taken before the server binds it).
SERVER_START_ATTEMPTS_MAX = 3
#: API ports are reserved (raft_ledger_node.localcluster.reserve_ports) from 40_050 in steps of
#: 100: their last two digits never match a cluster's base+1..3 / base+101..103 ports.
API_PORT_START = 40_050
API_PORT_STEP = 100

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_active_lock = threading.Lock()
_active: "ToxiproxyServer | None" = None


class ToxiproxyError(RuntimeError):
    """The Toxiproxy server could not be started or does not answer."""


class ToxiproxyNotInstalled(ToxiproxyError):
    """No toxiproxy-server binary in .venv/bin, the running venv or PATH."""


def _search_dirs() -> list[str]:
    dirs = [os.path.join(_REPO_ROOT, ".venv", "bin"), os.path.join(sys.prefix, "bin"), os.path.dirname(sys.executable)]
    return list(dict.fromkeys(os.path.realpath(d) for d in dirs))


def find_binary() -> str | None:
    """Path of toxiproxy-server: the repository's .venv, the running interpreter's venv, then PATH."""
    for d in _search_dirs():
        path = os.path.join(d, BINARY_NAME)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(BINARY_NAME)


class ToxiproxyServer:
    """One toxiproxy-server process on ``host`` with a free API port.

    >>> with ToxiproxyServer(log_path="toxiproxy.log") as server:
    ...     proxy = server.client.create(upstream="127.0.0.1:7101", name="a", listen="127.0.0.1:0")
    """

    def __init__(self, *, binary: str | None = None, host: str = "127.0.0.1", log_path: str | None = None, seed: int = 1) -> None:
        self.binary = binary
        self.host = host
        self.log_path = log_path
        #: Seeds the server's randomness (latency jitter, toxicity), so a run replays.
        self.seed = seed
        self.port: int | None = None
        self._port_reservation: PortReservation | None = None
        self._proc: subprocess.Popen | None = None
        self._client: Toxiproxy | None = None

    @property
    def api_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def client(self) -> Toxiproxy:
        """The toxiproxy-python client pointed at this server."""
        if self._client is None:
            raise ToxiproxyError("toxiproxy-server is not running; call start() first")
        return self._client

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
        global _active
        binary = self.binary or find_binary()
        if binary is None:
            raise ToxiproxyNotInstalled(
                f"{BINARY_NAME} not found in {', '.join(_search_dirs())} or PATH; "
                f"install it with `{SETUP_COMMAND}` (needs the Go toolchain)"
            )
        with _active_lock:
            if _active is not None and _active is not self and _active.running():
                raise ToxiproxyError(
                    f"a Toxiproxy server (PID {_active.pid}, API {_active.api_address}) is already running in this "
                    "process; toxiproxy-python's API address is process-wide, so run one server per process"
                )
            _active = self
        errors = []
        start = API_PORT_START
        for _ in range(SERVER_START_ATTEMPTS_MAX):
            try:
                self._port_reservation = reserve_ports([0], start=start, step=API_PORT_STEP, host=self.host)
            except LocalClusterError as e:
                errors.append(str(e))
                break
            self.port = self._port_reservation.base
            start = self.port + API_PORT_STEP
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            try:
                self._proc = subprocess.Popen(
                    [binary, "-host", self.host, "-port", str(self.port), "-seed", str(self.seed)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            finally:
                if log is not subprocess.DEVNULL:
                    log.close()
            client = Toxiproxy()
            client.update_api_consumer(self.host, self.port)
            if self._wait_api(client, timeout_s):
                self._client = client
                return
            errors.append(f"port {self.port}: exit code {self._proc.poll()}")
            self._terminate()
        with _active_lock:
            _active = None
        raise ToxiproxyError(
            f"{binary} did not answer on {self.host} within {timeout_s}s ({'; '.join(errors)})"
            + (f"; see {self.log_path}" if self.log_path else "")
        )

    def _wait_api(self, client: Toxiproxy, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False  # e.g. the port was taken between probe and bind
            if client.running():
                try:
                    if client.version() is not None:
                        return True
                except OSError:
                    pass  # listening but not serving yet
            time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        p = self._proc
        try:
            if p is not None:
                self._stop_process(p)
        finally:
            if self._port_reservation is not None:
                self._port_reservation.release()
                self._port_reservation = None

    @staticmethod
    def _stop_process(p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(SERVER_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server this object started (by PID). Idempotent."""
        global _active
        try:
            self._terminate()
        finally:
            self._client = None
            with _active_lock:
                if _active is self:
                    _active = None

    def __enter__(self) -> "ToxiproxyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
