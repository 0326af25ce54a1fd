#!/usr/bin/env python3
"""A drover capability worker in plain Python: the standard library only.

Copy this file, put your own functions in CAPABILITIES, and run it:

    python3 worker.py --hub http://127.0.0.1:8700 --key "$DROVER_WORKER_KEY"

It registers with the hub, long-polls for tasks, runs each in a thread
while heartbeating it, and answers each with `complete` or `fail`. SIGTERM
or Ctrl-C drains it: it takes no new task, lets the running ones finish,
leaves the hub and exits 0 (a second Ctrl-C stops it at once; the hub runs
what it held elsewhere). The protocol it speaks is docs/workers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable


class Retryable(Exception):
    """Raise it from a handler when another try, maybe on another worker,
    may succeed (a busy device, a flaky network). Any other exception
    fails the task for good, with its message."""


class Stopped(Exception):
    """Raised by `Task.sleep` once the task should stop: the client
    cancelled it, or the hub gave it to another worker."""


class Task:
    """One leased task: what a handler gets besides its input."""

    def __init__(self, leased: dict[str, Any]) -> None:
        self.id: str = leased["id"]
        self.capability: str = leased["capability"]
        self.input: Any = leased["input"]
        self.attempt: int = leased.get("attempt", 1)
        self.token: str = leased["lease_token"]
        # Set when the handler should give up. Python cannot kill a thread,
        # so a long handler watches this (or sleeps with `sleep` below).
        self.stop = threading.Event()
        self.cancelled = False  # the client cancelled it: say so with `fail`
        self.lost = False  # its lease went elsewhere (409): say nothing
        # Sent with each heartbeat: clients see how far along it is.
        self.progress: dict[str, Any] | None = None

    def sleep(self, seconds: float) -> None:
        """Waits, but wakes at once (raising Stopped) if the task must stop."""
        if self.stop.wait(seconds):
            raise Stopped()


# --- The capabilities: plain functions, input in, JSON-able output out. ---


def word_count(input: dict[str, Any], task: Task) -> dict[str, Any]:
    return {"words": len(input["text"].split())}


def sleep(input: dict[str, Any], task: Task) -> dict[str, Any]:
    # A step at a time so its progress moves; task.sleep wakes at a cancel.
    seconds = float(input["seconds"])
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        task.progress = {"done": round(1 - left / seconds, 2)}
        task.sleep(min(left, 0.25))
    return {"slept": input["seconds"]}


CAPABILITIES: dict[str, dict[str, Any]] = {
    "word-count": {
        "handler": word_count,
        # The hub checks each task's input against this before storing it.
        "input_schema": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
    },
    "sleep": {
        "handler": sleep,
        "input_schema": {
            "type": "object",
            "required": ["seconds"],
            "properties": {"seconds": {"type": "number", "minimum": 0}},
        },
    },
}


# --- The protocol. Nothing below needs changing to add a capability. ---


def log(message: str) -> None:
    print(f"worker: {message}", file=sys.stderr, flush=True)


class Hub:
    """The hub's HTTP API: JSON in, (status, JSON) out."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
        """Returns the status and the parsed body (None if empty) for every
        answer, errors included; raises OSError when the hub is unreachable."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.key:
            request.add_header("authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:  # a 4xx or 5xx is an answer too
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:  # not JSON (a proxy's error page): keep the text
            return status, raw.decode(errors="replace")


class Worker:
    """One registration with the hub: a thread polls for tasks, a thread
    per task runs its handler, and the main thread heartbeats them all
    (keeping the leases is what stops the hub giving them to another)."""

    def __init__(self, hub: Hub, name: str, capabilities: dict[str, dict[str, Any]], concurrency: int):
        self.hub = hub
        self.name = name
        self.capabilities = capabilities
        self.concurrency = concurrency
        self.id = ""
        self.heartbeat_s, self.lease_s, self.poll_wait_s = 10, 30, 25
        self.tasks: dict[str, Task] = {}  # the tasks it holds, by id
        self.lock = threading.Lock()  # guards tasks
        self.registering = threading.Lock()  # one re-registration at a time
        # Plain flags, not Events: a signal handler sets them, and it must
        # not take a lock the thread it interrupted may be holding.
        self.draining = False
        self.signalled = False
        self.failure = ""  # why it stopped, if it could not go on

    def register(self) -> bool:
        """Registers (again, after a hub restart), waiting for an unreachable
        hub; False if the hub refuses it or the worker drains meanwhile."""
        offer = [
            {
                "name": name,
                "max_concurrency": self.concurrency,
                "input_schema": spec["input_schema"],
            }
            for name, spec in self.capabilities.items()
        ]
        while not self.draining:
            try:
                asked = {"name": self.name, "capabilities": offer}
                status, answer = self.hub.call("POST", "/v1/workers", asked)
            except OSError as e:
                log(f"cannot reach {self.hub.url} ({e}); trying again")
                time.sleep(2)
                continue
            if status != 200:
                self.give_up(f"the hub refused the registration ({status}): {answer}")
                return False
            self.id = answer["worker_id"]
            self.heartbeat_s = answer["heartbeat_s"]
            self.lease_s = answer["lease_s"]
            self.poll_wait_s = answer["poll_wait_max_s"]
            # One line on stdout: scripts (and tests) wait for it.
            offering = ", ".join(self.capabilities)
            print(f"worker {self.id} registered with {self.hub.url} offering {offering}", flush=True)
            return True
        return False

    def register_again(self, forgotten: str) -> None:
        """A 404 means the hub forgot this worker (it restarted): register
        anew, once, however many threads noticed."""
        with self.registering:
            if self.id == forgotten and not self.draining:
                log(f"the hub no longer knows {forgotten}: registering again")
                self.register()

    def give_up(self, why: str) -> None:
        log(why)
        self.failure = why
        self.draining = True

    def poll(self) -> None:
        """The poll loop, in its own thread: a long poll that answers as
        soon as the hub gives this worker a task. The hub never gives more
        than each capability's max_concurrency, so it may ask for them all."""
        most = self.concurrency * len(self.capabilities)
        while not self.draining:
            worker = self.id
            try:
                status, answer = self.hub.call(
                    "POST",
                    f"/v1/workers/{worker}/poll",
                    {"max_tasks": most, "wait_s": self.poll_wait_s},
                    timeout=self.poll_wait_s + 10,
                )
            except OSError as e:
                log(f"poll failed ({e}); trying again")
                time.sleep(1)
                continue
            if status == 200:
                for leased in answer["tasks"]:
                    self.start(Task(leased))
            elif status == 404:
                self.register_again(worker)
            elif status != 204:  # 204: the wait ended empty; poll again
                self.give_up(f"the hub answered a poll with {status}: {answer}")

    def start(self, task: Task) -> None:
        with self.lock:
            draining = self.draining
            if not draining:
                self.tasks[task.id] = task
        if draining:
            # Given just as it began to drain: hand it back to run elsewhere.
            self.answer(task, "fail", {"error": "the worker is draining", "retryable": True})
            return
        threading.Thread(target=self.run, args=(task,), name=task.id, daemon=True).start()

    def run(self, task: Task) -> None:
        """Runs one task's handler in its own thread and answers for it."""
        log(f"{task.id} {task.capability}: started (attempt {task.attempt})")
        handler: Callable[[Any, Task], Any] = self.capabilities[task.capability]["handler"]
        try:
            verb, body = "complete", {"output": handler(task.input, task)}
        except Stopped:  # cancelled (said below) or lost (nothing is said)
            verb, body = "fail", {"error": "stopped", "retryable": False}
        except Retryable as e:
            verb, body = "fail", {"error": str(e) or "retryable failure", "retryable": True}
        except Exception as e:  # noqa: BLE001 - a handler's bug fails its task, not the worker
            verb, body = "fail", {"error": f"{type(e).__name__}: {e}", "retryable": False}
        if task.cancelled:  # whatever the handler did, the client asked it to stop
            verb, body = "fail", {"error": "cancelled", "retryable": False}
        try:
            self.answer(task, verb, body)
        finally:
            with self.lock:
                self.tasks.pop(task.id, None)

    def answer(self, task: Task, verb: str, body: dict[str, Any]) -> None:
        """`complete` or `fail`, fenced on the task's lease token; tried a
        few times, since a lost answer means the task runs again."""
        for _ in range(3):
            if task.lost:
                break
            try:
                path = f"/v1/tasks/{task.id}/{verb}"
                status, answer = self.hub.call("POST", path, {"lease_token": task.token, **body})
            except OSError as e:
                log(f"{task.id}: {verb} failed ({e}); trying again")
                time.sleep(1)
                continue
            if status == 204:
                outcome = "completed" if verb == "complete" else f"failed: {body['error']}"
                log(f"{task.id} {task.capability}: {outcome}")
            elif status == 409:
                log(f"{task.id}: its lease went elsewhere; its answer is dropped")
            else:
                log(f"{task.id}: the hub answered {verb} with {status}: {answer}")
            return

    def heartbeat(self) -> None:
        """Heartbeats every task held, then the worker itself."""
        with self.lock:
            held = list(self.tasks.values())
        for task in held:
            if task.lost:
                continue
            beat: dict[str, Any] = {"lease_token": task.token}
            if task.progress is not None:
                beat["progress"] = task.progress
            try:
                status, answer = self.hub.call("POST", f"/v1/tasks/{task.id}/heartbeat", beat)
            except OSError as e:
                log(f"{task.id}: heartbeat failed ({e})")
                continue
            if status == 200 and answer["cancel_requested"] and not task.cancelled:
                log(f"{task.id}: cancelled by the client")
                task.cancelled = True
                task.stop.set()
            elif status == 409:
                # Its lease lapsed and the task went to another worker (or
                # ended): stop it, and answer nothing.
                log(f"{task.id}: its lease went elsewhere; stopping it")
                task.lost = True
                task.stop.set()
        worker = self.id
        try:
            path = f"/v1/workers/{worker}/heartbeat"
            # A draining worker says so: the hub gives it nothing new, and
            # hands what it gave but was not polled yet to another worker.
            beat = {"in_flight": len(held), "draining": self.draining}
            status, answer = self.hub.call("POST", path, beat)
        except OSError as e:
            log(f"heartbeat failed ({e})")
            return
        if status == 404:
            self.register_again(worker)
        elif status == 200 and answer["state"] == "drain" and not self.draining:
            log("the hub asks this worker to drain")
            self.draining = True

    def serve(self) -> int:
        """Registers, polls in a thread, and heartbeats from this one until
        it drains and holds nothing; then leaves. The exit status."""
        if not self.register():
            return 1 if self.failure else 0
        threading.Thread(target=self.poll, name="poll", daemon=True).start()
        # Tasks well within their lease, the worker within its heartbeat.
        every = min(self.heartbeat_s, self.lease_s / 3)
        next_beat = time.monotonic() + every
        announced = False
        while True:
            with self.lock:  # both at once: `start` takes no task once draining
                draining, held = self.draining, len(self.tasks)
            if draining and not announced:
                self.heartbeat()  # tells the hub at once
                log(f"draining: {held} running task(s) finish, no new one is taken")
                announced = True
            if draining and not held:
                break
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + every
                self.heartbeat()
            # Short naps rather than one long wait: a drain is seen at once.
            time.sleep(0.1)
        try:
            # Leaving at once frees its place; any task the abandoned poll
            # was being given runs elsewhere.
            self.hub.call("DELETE", f"/v1/workers/{self.id}")
            log(f"{self.id} left")
        except OSError:  # the hub forgets it anyway, after missed heartbeats
            log(f"{self.id} stopped without reaching the hub to leave")
        return 1 if self.failure else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hub",
        default=os.environ.get("DROVER_HUB", "http://127.0.0.1:8700"),
        help="the hub's URL (env DROVER_HUB)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("DROVER_WORKER_KEY"),
        help="a worker key, from `drover keys create NAME --kind worker` (env DROVER_WORKER_KEY); "
        "a hub on loopback that has none takes workers without one",
    )
    parser.add_argument(
        "--name",
        # The hub takes letters, digits and . - _ : in names.
        default=re.sub(r"[^A-Za-z0-9.:_-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:64],
        help="how the hub shows it (default: HOST-PID)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="tasks of each capability it runs at once (default 1)",
    )
    parser.add_argument(
        "--capability",
        action="append",
        choices=sorted(CAPABILITIES),
        metavar="NAME",
        help=f"offer only this one; repeat for more (default: all of {', '.join(CAPABILITIES)})",
    )
    args = parser.parse_args()
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    offered = {name: CAPABILITIES[name] for name in args.capability or CAPABILITIES}
    worker = Worker(Hub(args.hub, args.key), args.name, offered, args.concurrency)

    def on_signal(signum: int, frame: object) -> None:
        if worker.signalled:
            raise SystemExit(1)  # a second one: stop now; the hub re-runs what it held
        worker.signalled = worker.draining = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())
