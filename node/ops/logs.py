"""Logs to stderr, one line per event: logfmt (or JSON) with time, level, logger and the event's fields.

The node logs with templates such as `log.info("event=synced height=%d peer=%s", h, name)`. The
formatter quotes each substituted argument the logfmt way, so a value with spaces, quotes, `=` or a
newline cannot break the line or forge a field; then it reads the line back into fields, which the
JSON format writes as an object. A message not in that form (another library's) becomes `msg=...`.
A traceback is one escaped `exc=` field, never more lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any

# The syslog priority systemd reads from the start of each line of a service's stderr.
_SYSLOG_LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_BARE = re.compile(r'[^\s"=\\]+')
_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)(?=\s|$)')


def _printable(text: str) -> str:
    """`text` with any lone surrogate escaped, so that it always encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quote(value: str) -> str:
    """A logfmt value: bare when it can be, else double-quoted with JSON's escapes."""
    if _BARE.fullmatch(value) and value.isprintable():
        return value
    return _printable(json.dumps(value, ensure_ascii=False))


def _argument(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return value  # for %d and %.3f, and never in need of quotes
    return quote(str(value))


def parse_fields(text: str) -> list[tuple[str, str]] | None:
    """The key=value pairs of a logfmt line (values unquoted), or None when it is not one."""
    fields, pos = [], 0
    while pos < len(text.rstrip()):
        m = _PAIR.match(text, pos)
        if m is None:
            return None
        key, value = m.groups()
        fields.append((key, json.loads(value) if value.startswith('"') else value))
        pos = m.end()
    return fields


def event_fields(record: logging.LogRecord) -> list[tuple[str, str]]:
    """The fields of a record's message: the node's `event=...` templates with quoted arguments."""
    if isinstance(record.msg, str) and record.msg.startswith("event="):
        template = record.msg.replace("%r", "%s")
        try:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            fields = parse_fields(template % tuple(_argument(a) for a in args) if record.args else template)
        except (TypeError, ValueError):
            fields = None
        if fields is not None:
            return fields
    try:
        return [("msg", record.getMessage())]
    except (TypeError, ValueError):  # arguments that do not fit the template: show both
        return [("msg", str(record.msg)), ("args", repr(record.args))]


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"


class NodeFormatter(logging.Formatter):
    """One line per record, in logfmt or JSON; with `syslog_prefix`, led by `<level>` for the journal."""

    def __init__(self, fmt: str = "logfmt", syslog_prefix: bool = False) -> None:
        super().__init__()
        self.json = fmt == "json"
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        fields = [("ts", _timestamp(record)), ("level", record.levelname.lower()), ("logger", record.name)]
        fields += event_fields(record)
        if record.exc_info:
            fields.append(("exc", self.formatException(record.exc_info)))
        if record.stack_info:
            fields.append(("stack", self.formatStack(record.stack_info)))
        if self.json:
            line = _printable(json.dumps(dict(fields), ensure_ascii=False))
        else:
            line = " ".join(f"{key}={quote(str(value))}" for key, value in fields)
        if self.syslog_prefix:
            line = f"<{_SYSLOG_LEVELS.get(record.levelno, 6)}>{line}"
        return line


def stderr_is_journal() -> bool:
    """Whether stderr is the journal stream systemd connected (it says so in $JOURNAL_STREAM: device:inode)."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def configure_logging(level: str, fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(NodeFormatter(fmt, syslog_prefix=stderr_is_journal()))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
