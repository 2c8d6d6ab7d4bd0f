"""The load process of `alliance bench`: pre-signed batches over keep-alive JSON-RPC connections.

It runs in its own process (forked once the transactions are signed) so that sending does not share an
interpreter with the watcher that measures commits. Two modes:

* a fixed offered rate: batch k is handed to node k % n at t0 + k * batch / rate; each node has a few
  connections that send what they are handed, in order, and then what is left to retry;
* as fast as possible (rate 0): each connection sends the next batch as soon as the previous one is answered.

A transaction answered -32004 (mempool full) is sent again later, after a back-off; the connection that got
the answer also pauses before its next batch. Any other error answer is final and counted as rejected.
"""

from __future__ import annotations

import collections
import json
import math
import queue
import signal
import threading
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from node.client import Client, NodeUnreachable

OVERLOADED = -32004
DUPLICATE = -32003
RETRY_DELAY_S = 0.1
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 0.8
HTTP_TIMEOUT_S = 60.0


class LoadError(Exception):
    """The load cannot go on (a node is unreachable or answers nonsense)."""


@dataclass(frozen=True)
class LoadPlan:
    urls: tuple[str, ...]
    rate: float  # offered transactions per second; 0 means as fast as possible
    batch: int
    connections_per_node: int
    duration_s: float


@dataclass
class LoadResult:
    accepted_at: bytes  # array("d") of monotonic send times per transaction; NaN where never accepted
    sent: int = 0  # distinct transactions sent at least once
    accepted: int = 0
    rejected: int = 0  # final refusals other than -32004
    rejected_codes: dict[int, int] = field(default_factory=dict)
    mempool_full: int = 0  # -32004 answers (one transaction can collect several)
    retry_pending: int = 0  # transactions whose last answer was -32004 when the time was up
    requests: int = 0
    exhausted: bool = False  # as fast as possible: every pre-signed transaction was sent before the time was up
    cpu_s: float = 0.0  # CPU time of the load process from the start of the window to its last answer


class _Connection:
    """One keep-alive HTTP connection to a node's RPC address, for raw pre-encoded bodies."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = Client(url, timeout_s=HTTP_TIMEOUT_S)

    def post(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        """The answers of a batch, and whether the body had to be sent a second time."""
        try:
            status, data, resent = self._client.post_raw(body)
        except NodeUnreachable as exc:
            raise LoadError(str(exc)) from None
        if status != 200:
            raise LoadError(f"{self.url} answered HTTP {status}: {data[:200]!r}")
        answers = json.loads(data)
        if not isinstance(answers, list):
            raise LoadError(f"{self.url} answered a batch with {str(answers)[:200]}")
        return answers, resent

    def close(self) -> None:
        self._client.close()


class _Load:
    def __init__(self, plan: LoadPlan, calls: list[bytes], batches: list[tuple[int, int, bytes]], t0: float) -> None:
        self.plan = plan
        self.calls = calls
        self.batches = batches
        self.t0 = t0
        self.end = t0 + plan.duration_s
        self.lock = threading.Lock()
        self.result = LoadResult(accepted_at=b"")
        self.accepted_at = array("d", [math.nan]) * len(calls)
        self.retries: collections.deque[tuple[float, list[int]]] = collections.deque()
        self.waiting_retry: set[int] = set()
        self.next_batch = 0
        self.failure: str | None = None

    # ---- shared bookkeeping ---------------------------------------------------------------

    def take_retries(self, now: float) -> list[int]:
        """Transactions whose back-off is over, at most one batch of them."""
        out: list[int] = []
        with self.lock:
            while self.retries and self.retries[0][0] <= now and len(out) < self.plan.batch:
                _, indices = self.retries.popleft()
                room = self.plan.batch - len(out)
                out += indices[:room]
                if indices[room:]:
                    self.retries.appendleft((now, indices[room:]))
        return out

    def take_fresh(self) -> tuple[int, int, bytes] | None:
        with self.lock:
            if self.next_batch >= len(self.batches):
                return None
            self.next_batch += 1
            return self.batches[self.next_batch - 1]

    def body(self, indices: list[int]) -> bytes:
        return b"[" + b",".join(self.calls[i] for i in indices) + b"]"

    def send(self, conn: _Connection, indices: range | list[int], body: bytes, fresh: bool) -> int:
        """Sends one batch and books its answers; returns the number of -32004 answers."""
        sent_at = time.monotonic()
        answers, resent = conn.post(body)
        retry: list[int] = []
        result = self.result
        with self.lock:
            result.requests += 1
            if fresh:
                result.sent += len(indices)
            answered = set()
            for answer in answers:
                i = answer.get("id")
                if not isinstance(i, int) or not 0 <= i < len(self.calls):
                    raise LoadError(f"{conn.url} answered with an unknown id {i!r}")
                answered.add(i)
                error = answer.get("error")
                code = error.get("code") if isinstance(error, dict) else None
                if error is None or (code == DUPLICATE and resent):
                    self.accepted_at[i] = sent_at
                    result.accepted += 1
                    self.waiting_retry.discard(i)
                elif code == OVERLOADED:
                    result.mempool_full += 1
                    retry.append(i)
                    self.waiting_retry.add(i)
                else:
                    self._reject(i, code)
            for i in indices:
                if i not in answered:
                    self._reject(i, None)
            if retry:
                self.retries.append((time.monotonic() + RETRY_DELAY_S, retry))
        return len(retry)

    def _reject(self, i: int, code: int | None) -> None:
        key = code if isinstance(code, int) else 0
        self.result.rejected += 1
        self.result.rejected_codes[key] = self.result.rejected_codes.get(key, 0) + 1
        self.waiting_retry.discard(i)

    def fail(self, message: str) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = message

    # ---- as fast as possible ----------------------------------------------------------------

    def run_closed_loop(self, conn: _Connection) -> None:
        backoff = 0.0
        while self.failure is None and time.monotonic() < self.end:
            indices: range | list[int] = self.take_retries(time.monotonic())
            fresh = False
            if indices:
                body = self.body(list(indices))
            else:
                batch = self.take_fresh()
                if batch is None:
                    with self.lock:
                        if not self.retries:
                            self.result.exhausted = True
                            return
                    time.sleep(0.01)
                    continue
                start, stop, body = batch
                indices, fresh = range(start, stop), True
            if self.send(conn, indices, body, fresh):
                backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, 2 * backoff))
                time.sleep(min(backoff, max(0.0, self.end - time.monotonic())))
            else:
                backoff = 0.0

    # ---- fixed offered rate --------------------------------------------------------------------

    def run_paced(self) -> None:
        """Hands batch k to node k % n at its due time; the node's connections send it."""
        n = len(self.plan.urls)
        queues: list[queue.SimpleQueue[tuple[range | list[int], bytes, bool] | None]] = [
            queue.SimpleQueue() for _ in range(n)
        ]
        threads = []
        for q_index, q in enumerate(queues):
            for _ in range(self.plan.connections_per_node):
                t = threading.Thread(target=self._drain_queue, args=(q, _Connection(self.plan.urls[q_index])),
                                     daemon=True)
                t.start()
                threads.append(t)
        interval = self.plan.batch / self.plan.rate
        k = 0
        while self.failure is None and k < len(self.batches):
            due = self.t0 + k * interval
            if due >= self.end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start, stop, body = self.batches[k]
            queues[k % n].put((range(start, stop), body, True))
            retry = self.take_retries(time.monotonic())
            if retry:
                queues[k % n].put((retry, self.body(retry), False))
            k += 1
        for q in queues:
            for _ in range(self.plan.connections_per_node):
                q.put(None)
        for t in threads:
            t.join()

    def _drain_queue(self, q: queue.SimpleQueue[tuple[range | list[int], bytes, bool] | None],
                     conn: _Connection) -> None:
        try:
            while True:
                item = q.get()
                if item is None:
                    self.send_leftover_retries(conn)
                    return
                indices, body, fresh = item
                if self.failure is not None or time.monotonic() >= self.end:
                    continue  # the time is up: what is still queued was never sent
                self.send(conn, indices, body, fresh)
        except LoadError as exc:
            self.fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
            self.fail(f"load: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def send_leftover_retries(self, conn: _Connection) -> None:
        """After the last batch: sends what -32004 left behind until none is left or the time is up.

        A connection returns only when no retry is pending, and one that books a retry checks again, so the
        last retries always have a connection left to send them.
        """
        while self.failure is None and time.monotonic() < self.end:
            indices = self.take_retries(time.monotonic())
            if indices:
                self.send(conn, indices, self.body(indices), False)
                continue
            with self.lock:
                if not self.retries:
                    return
            time.sleep(0.01)

    # ---- both ----------------------------------------------------------------------------------

    def run(self) -> LoadResult:
        cpu_start = time.process_time()
        if self.plan.rate > 0:
            self.run_paced()
        else:
            threads = []
            for j in range(self.plan.connections_per_node * len(self.plan.urls)):
                conn = _Connection(self.plan.urls[j % len(self.plan.urls)])
                t = threading.Thread(target=self._closed_loop_thread, args=(conn,), daemon=True)
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
        if self.failure is not None:
            raise LoadError(self.failure)
        self.result.cpu_s = time.process_time() - cpu_start
        self.result.retry_pending = len(self.waiting_retry)
        self.result.accepted_at = self.accepted_at.tobytes()
        return self.result

    def _closed_loop_thread(self, conn: _Connection) -> None:
        try:
            self.run_closed_loop(conn)
        except LoadError as exc:
            self.fail(str(exc))
        except Exception as exc:  # noqa: BLE001
            self.fail(f"load: {type(exc).__name__}: {exc}")
        finally:
            conn.close()


def make_batches(calls: list[bytes], batch: int) -> list[tuple[int, int, bytes]]:
    """Ready request bodies: (first index, last index + 1, JSON array of the calls)."""
    return [
        (start, min(start + batch, len(calls)), b"[" + b",".join(calls[start:start + batch]) + b"]")
        for start in range(0, len(calls), batch)
    ]


def load_process(pipe: Connection, plan: LoadPlan, calls: list[bytes], batches: list[tuple[int, int, bytes]]) -> None:
    """Entry point of the forked load process: waits for ("go", t0), loads, answers ("done", result)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it terminates us
    try:
        message = pipe.recv()
        if message[0] != "go":
            return
        load = _Load(plan, calls, batches, message[1])
        delay = load.t0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pipe.send(("done", load.run()))
    except LoadError as exc:
        pipe.send(("error", str(exc)))
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone
