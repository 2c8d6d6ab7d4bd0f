"""Log lines: valid logfmt (or JSON) whatever the values hold, UTC timestamps, one line per record."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from node.ops import logs
from node.ops.logs import NodeFormatter, configure_logging, parse_fields, quote
from node.ops.ratelog import RateLog

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

NASTY = [
    "plain", "two words", 'say "hi"', "a=b", "key=value other=x", "line\nbreak", "tab\there", "back\\slash",
    "", " ", "'single'", "ünïcödé", "\x00\x1b[31m", "\u2028", "end\\", '"', "=",
]


def record(msg: str, *args: Any, level: int = logging.INFO, name: str = "alliance.node",
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def line(rec: logging.LogRecord, fmt: str = "logfmt", syslog_prefix: bool = False) -> str:
    return NodeFormatter(fmt, syslog_prefix).format(rec)


@pytest.mark.parametrize("value", NASTY)
def test_a_substituted_value_is_quoted_and_reads_back_as_itself(value: str) -> None:
    text = line(record("event=peer_refused address=%s reason=%r n=%d", value, value, 7))
    assert "\n" not in text
    fields = parse_fields(text)
    assert fields is not None, text
    assert dict(fields) == {
        "ts": dict(fields)["ts"], "level": "info", "logger": "alliance.node",
        "event": "peer_refused", "address": value, "reason": value, "n": "7",
    }


@pytest.mark.parametrize("value", NASTY)
def test_json_format_has_the_same_fields(value: str) -> None:
    obj = json.loads(line(record("event=x address=%s n=%d", value, 3), "json"))
    assert obj["address"] == value and obj["n"] == "3" and obj["event"] == "x"
    assert obj["level"] == "info" and obj["logger"] == "alliance.node" and TS.fullmatch(obj["ts"])


def test_the_exact_logfmt_line() -> None:
    rec = record("event=synced height=%d peer=%s reason=%r", 12, "node 1", "timed out")
    rec.created, rec.msecs = 1796582757.873, 873.0
    assert line(rec) == (
        'ts=2026-12-06T18:45:57.873Z level=info logger=alliance.node '
        'event=synced height=12 peer="node 1" reason="timed out"'
    )


def test_a_lone_surrogate_is_escaped_not_an_encoding_error() -> None:
    text = line(record("event=x key=%s", "\ud800"))
    text.encode("utf-8")
    assert dict(parse_fields(text) or [])["key"] == "\ud800"
    assert json.loads(line(record("event=x key=%s", "\ud800"), "json"))["key"] == "\ud800"


def test_a_traceback_is_one_escaped_exc_field() -> None:
    text = line(record("event=rpc_internal_error method=%s", "get block", level=logging.ERROR, exc=True))
    assert "\n" not in text
    fields = dict(parse_fields(text) or [])
    assert fields["level"] == "error" and fields["method"] == "get block"
    assert fields["exc"].startswith("Traceback (most recent call last):") and "ValueError: bad\nthing" in fields["exc"]
    obj = json.loads(line(record("event=e", level=logging.ERROR, exc=True), "json"))
    assert obj["exc"].endswith("ValueError: bad\nthing")


@pytest.mark.parametrize("msg", ["Error in ASGI application: %s", "event=x detail=two words %s", "event=x n=%d"])
def test_a_message_not_in_field_form_becomes_msg(msg: str) -> None:
    text = line(record(msg, "a b", name="hypercorn.error"))
    fields = dict(parse_fields(text) or [])
    assert fields["logger"] == "hypercorn.error"
    assert "msg" in fields and "event" not in fields


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
     (logging.CRITICAL, "<2>")],
)
def test_syslog_prefix_for_the_journal(level: int, prefix: str) -> None:
    text = line(record("event=x", level=level), syslog_prefix=True)
    assert text.startswith(prefix + "ts=")
    assert line(record("event=x", level=level)).startswith("ts=")


@pytest.fixture
def stderr_file(tmp_path: Any) -> Iterator[io.TextIOWrapper]:
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    with open(tmp_path / "stderr", "w+") as out:
        yield out
    root.handlers, root.level = handlers, level


def test_configure_logging_prefixes_levels_only_when_stderr_is_the_journal(
    stderr_file: io.TextIOWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr_file)  # here, not in the fixture: pytest resets it between phases
    st = os.fstat(stderr_file.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.stderr_is_journal()
    configure_logging("info")
    logging.getLogger("alliance.node").error("event=boom")
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # stderr redirected elsewhere
    configure_logging("info", "json")
    logging.getLogger("alliance.node").warning("event=careful")
    stderr_file.seek(0)
    first, second = stderr_file.read().splitlines()
    assert first.startswith("<3>ts=") and "level=error" in first
    assert json.loads(second)["level"] == "warning"


def test_a_rate_limited_event_is_logged_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    repeated = RateLog(logging.getLogger("alliance.http"), clock=lambda: 0.0)
    with caplog.at_level(logging.WARNING, "alliance.http"):
        for _ in range(3):
            repeated.log("event=http_accept_failed reason=EMFILE")
    assert len(caplog.records) == 1
    fields = dict(parse_fields(line(caplog.records[0]).split(" ", 3)[3]) or [])
    assert fields == {"event": "http_accept_failed", "reason": "EMFILE", "count": "1"}
    assert json.loads(line(caplog.records[0], "json"))["event"] == "http_accept_failed"
