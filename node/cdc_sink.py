"""The CDC sink: the WatchEvents stream, published block by block to a NATS JetStream stream.

Delivery is **at-least-once, with the height as the consumers' idempotency key**:

1. The sink reads blocks with the SDK's :meth:`LedgerClient.watch_events` (in order, no
   gap, resumed on another validator when one fails) from ``last_acked + 1``.
2. Each block is one JSON message (:func:`block_json`) published to ``subject`` with the
   header ``Nats-Msg-Id: <chain_id>/<height>``; the sink waits for JetStream's PubAck
   (the broker has stored it, replicated as the stream is configured).
3. Only then is the height written to the state file (:class:`SinkState`: written to a
   temporary file, fsynced, renamed over the old one, the directory fsynced), so the file
   never names a height the broker did not acknowledge.

A sink killed between 2 and 3 re-publishes at most the blocks after the state file's
height: JetStream drops a message whose Msg-Id it saw within the stream's
``duplicate_window`` (:data:`DUPLICATE_WINDOW_S`, JetStream's de-duplication;
docs.nats.io "JetStream model deep dive", Message Deduplication), and past that window a
consumer that keeps the heights it applied drops it. Nothing is lost: the file only
advances past acknowledged heights.

Message (UTF-8 JSON, keys sorted): ``{"chain_id", "height", "block_hash" (hex),
"timestamp" (ns), "accounts": [...], "transfers": [...]}``; each event carries
``result`` (the lower-case result name), ``tx_hash`` (hex), ``index`` and the record's
fields. 128-bit values (ids, amounts, balances, ``user_data_128``) are decimal strings,
as JSON numbers lose precision past 2^53 in most parsers; the rest are numbers.

Failure contract: the broker unreachable or not acknowledging within ``ack_timeout_s``:
:class:`SinkError` (nothing is written to the state file; a restart resumes from it).
The cluster unreachable past the client's retry deadline: the sink waits
``cluster_retry_s`` and resumes from the last acknowledged height, for ever.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import asdict
from typing import Callable

from raft_ledger_client import Unavailable
from raft_ledger_client.cdc import BlockEvents

log = logging.getLogger("ledger.cdc_sink")

#: JetStream stream the sink creates (or reuses) for its subject.
STREAM_NAME = "LEDGER_BLOCKS"
#: Seconds JetStream remembers a Nats-Msg-Id (the stream's duplicate_window).
DUPLICATE_WINDOW_S = 600.0
#: Seconds the sink waits for a PubAck before it gives up (SinkError).
ACK_TIMEOUT_S = 10.0
#: Seconds between two attempts when no validator answers.
CLUSTER_RETRY_S = 1.0
#: Seconds to connect to the broker.
CONNECT_TIMEOUT_S = 5.0
_U128_FIELDS = {"id", "debit_account_id", "credit_account_id", "amount", "pending_id", "user_data_128",
                "debits_pending", "debits_posted", "credits_pending", "credits_posted"}


class SinkError(RuntimeError):
    """The broker refused, did not acknowledge, or cannot be reached; or the state file is unreadable."""


def msg_id(chain_id: str, height: int) -> str:
    """The Nats-Msg-Id of block ``height``: ``<chain_id>/<height>``."""
    return f"{chain_id}/{height}"


def _record(obj) -> dict:
    return {k: (str(v) if k in _U128_FIELDS else v) for k, v in asdict(obj).items()}


def block_json(chain_id: str, b: BlockEvents) -> bytes:
    """The message of one block (module docstring), deterministic for the same block."""
    doc = {
        "chain_id": chain_id,
        "height": b.height,
        "block_hash": b.block_hash.hex(),
        "timestamp": b.timestamp,
        "accounts": [dict(_record(e.account), result=e.result.name, tx_hash=e.tx_hash.hex(), index=e.index)
                     for e in b.accounts],
        "transfers": [dict(_record(e.transfer), result=e.result.name, tx_hash=e.tx_hash.hex(), index=e.index,
                           pending_status=e.pending_status) for e in b.transfers],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class SinkState:
    """The last height the broker acknowledged, in a small file: ``<height>\\n``.

    :meth:`save` replaces it atomically and durably (temporary file, fsync, rename,
    fsync of the directory), so after a crash the file holds the old or the new height,
    never a torn one. Raises SinkError for a file that does not hold a height."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> int:
        """The saved height, 0 if there is no file."""
        try:
            with open(self.path) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise SinkError(f"{self.path} does not hold a height: {text[:40]!r}")
        return int(text)

    def save(self, height: int) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{height}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class JetStreamPublisher:
    """A NATS connection with JetStream on its own event-loop thread, used synchronously:
    :meth:`publish` blocks until the PubAck. ``connect`` is nats-py's ``nats.connect``
    (passed in for tests). Raises SinkError."""

    def __init__(self, url: str, subject: str, *, stream: str = STREAM_NAME,
                 duplicate_window_s: float = DUPLICATE_WINDOW_S, ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self.subject = subject
        self._ack_timeout_s = ack_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats", daemon=True)
        self._thread.start()
        try:
            self._nc, self._js = self._run(self._connect(url, stream, duplicate_window_s), CONNECT_TIMEOUT_S + 5)
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro, timeout_s: float):
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)
        except SinkError:
            raise
        except Exception as e:  # nats errors, TimeoutError: the broker's side
            raise SinkError(f"NATS: {type(e).__name__}: {e}") from e

    async def _connect(self, url: str, stream: str, duplicate_window_s: float):
        import nats
        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError

        nc = await nats.connect(url, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=-1,
                                allow_reconnect=True)
        js = nc.jetstream(timeout=self._ack_timeout_s)
        cfg = StreamConfig(name=stream, subjects=[self.subject], duplicate_window=duplicate_window_s)
        try:
            await js.add_stream(cfg)
        except BadRequestError:  # exists with another configuration: make it ours
            await js.update_stream(cfg)
        return nc, js

    def publish(self, msg_id_: str, data: bytes) -> tuple[int, bool]:
        """Publish with ``Nats-Msg-Id``; (stream sequence, duplicate) from the PubAck."""
        async def go():
            ack = await self._js.publish(self.subject, data, timeout=self._ack_timeout_s,
                                         headers={"Nats-Msg-Id": msg_id_})
            return ack.seq, bool(ack.duplicate)

        return self._run(go(), self._ack_timeout_s + 5)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def close(self) -> None:
        try:
            self._run(self._nc.drain(), 10)
        except SinkError:
            pass
        finally:
            self._stop_loop()


def run_sink(client, publisher, state: SinkState, *, from_height: int = 1, until_height: int = 0,
             address: str | None = None,
             on_block: Callable[[BlockEvents, int, bool], None] | None = None,
             cluster_retry_s: float = CLUSTER_RETRY_S, sleep: Callable[[float], None] = time.sleep) -> int:
    """Publish every block after the state file's height (or from ``from_height`` when it
    has none) until ``until_height`` (0: for ever); returns the last height acknowledged.
    ``client``: a LedgerClient (its identity decides which events the blocks carry: an
    ``auditor`` sees all); ``address``: the validator to stream from first (the SDK moves to
    another when it fails). ``on_block(block, seq, duplicate)`` after each ack. Raises
    SinkError (the broker)."""
    chain = client.chain_id
    last = state.load()
    while True:
        start = last + 1 if last else from_height
        if until_height and start > until_height:
            return last
        try:
            for b in client.watch_events(start, address=address):
                seq, dup = publisher.publish(msg_id(chain, b.height), block_json(chain, b))
                state.save(b.height)
                last = b.height
                if on_block is not None:
                    on_block(b, seq, dup)
                if until_height and last >= until_height:
                    return last
        except Unavailable as e:
            log.warning("no validator streams blocks (%s); resuming at %d in %.1fs", e, last + 1, cluster_retry_s)
            sleep(cluster_retry_s)
