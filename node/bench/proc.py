"""Child processes that speak JSON lines on stdin/stdout, with a deadline on every wait."""
from __future__ import annotations

import json
import queue
import subprocess
import threading


class ChildDied(RuntimeError):
    pass


class JsonLineProcess:
    """A child process; ``send`` writes one JSON line, ``recv`` returns the next JSON line it printed."""

    def __init__(self, argv: list[str], *, log_path: str, cwd: str | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, cwd=cwd,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self._lines.put(json.loads(line))
            except json.JSONDecodeError:
                self._log.write(line.encode() + b"\n")
        self._lines.put(None)

    def send(self, obj) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout_s: float) -> dict:
        try:
            msg = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no answer within {timeout_s:.0f}s from pid {self.pid} (log: {self.log_path})") from None
        if msg is None:
            raise ChildDied(f"pid {self.pid} exited with code {self.proc.wait()} (log: {self.log_path})")
        return msg

    def recv_event(self, event: str, silence_s: float, on_other=None) -> dict:
        """Skip to the next message whose ``event`` is ``event``; others go to ``on_other``.

        Raises TimeoutError when the child prints nothing for ``silence_s`` seconds.
        """
        while True:
            msg = self.recv(silence_s)
            if msg.get("event") == event:
                return msg
            if on_other is not None:
                on_other(msg)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self._log.close()
