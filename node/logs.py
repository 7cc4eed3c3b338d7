"""The validator's log output: the usual text lines, or one JSON object per line.

``configure(log_format="json", validator_id="v1")`` makes every record one line of JSON
(``python-json-logger``'s JsonFormatter) with these fields::

    time          ISO 8601 with milliseconds, local time with its UTC offset
    level         DEBUG | INFO | WARNING | ERROR | CRITICAL
    logger        the logger's name (ledger.replication, ledger.service, ...)
    message       the formatted message
    validator_id  this validator's id (every record, added by a filter)
    height        the block height, where the log call names one (``extra={"height": h}``)
    tx_hash       a transaction hash (hex), where the log call names one
    raft_index    a Raft log index, where the log call names one
    exc_info      the traceback, when the call logged an exception

Any other ``extra=`` field of a call appears under its own name. The text format is the
one ``start`` always printed (``%(asctime)s %(levelname)s %(name)s: %(message)s``).
``configure`` replaces the root logger's handlers (one handler on ``stream``, stderr by
default) and turns pysyncobj's own logger down to WARNING. Raises ValueError for an
unknown format.
"""
from __future__ import annotations

import datetime
import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

#: Values of ``--log-format`` and of the config's ``log_format``.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: JSON field names of the LogRecord attributes that are always written.
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class ValidatorIdFilter(logging.Filter):
    """Adds ``validator_id`` to every record passing the handler."""

    def __init__(self, validator_id: str) -> None:
        super().__init__()
        self.validator_id = validator_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "validator_id"):
            record.validator_id = self.validator_id
        return True


class _JsonFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt=None) -> str:  # noqa: N802
        # ISO 8601 (RFC 3339) with milliseconds and the UTC offset.
        return datetime.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message, then the record's extras."""
    return _JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields=JSON_RENAMES)


def configure(*, log_format: str = "text", level: str | int = "INFO", validator_id: str = "",
              stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as text or JSON; returns the handler."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {list(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ValidatorIdFilter(validator_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    return handler
