"""Capability workers as real processes: examples/worker.py (the Python
example users copy) and `drover worker -- COMMAND` beside it, against a
real hub with worker and client keys. What a user relies on: both serve one
capability, a worker killed with SIGKILL mid-task loses nothing, a cancel
reaches the Python code, SIGTERM and the hub's drain let running tasks
finish, and a hub restart is survived."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, Proc, child_env, drover_binary, spawn, wait_until

WORKER = REPO / "examples" / "worker.py"

# A hub with a quick rhythm, so that a killed worker's task moves on within
# seconds: workers heartbeat every second (gone after three missed), a task
# not heartbeaten for two runs elsewhere, a retry waits at most half a second.
QUICK_HUB = {
    "DROVER_WORKERS__HEARTBEAT": "1s",
    "DROVER_WORKERS__LEASE": "2s",
    "DROVER_WORKERS__POLL_WAIT_MAX": "5s",
    "DROVER_JOBS__BACKOFF": "100ms",
    "DROVER_JOBS__MAX_BACKOFF": "500ms",
    "DROVER_JOBS__POLL_INTERVAL": "100ms",
}

# The same capability as a command for `drover worker`: JSON on stdin,
# JSON on stdout.
COUNT_WORDS = 'import json, sys; print(json.dumps({"words": len(json.load(sys.stdin)["text"].split())}))'

TASK_TIMEOUT = 20.0  # seconds for any one task to reach the state awaited


def offline_key(data_dir: Path, name: str, kind: str) -> str:
    """A key made straight in the hub's data directory, before it runs."""
    out = subprocess.run(
        [str(drover_binary()), "keys", "create", name, "--kind", kind, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def call(url: str, method: str, body: object = None, key: str | None = None) -> tuple[int, object]:
    """One request; its status and JSON body (None when empty), errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if key:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw) if raw else None


def log_has(proc: Proc, pattern: str) -> re.Match | None:
    return re.search(pattern, proc.log.read_text(errors="replace"), re.MULTILINE)


@dataclass
class Hub:
    proc: Proc
    logdir: Path
    worker_key: str
    client_key: str
    # The workers started against it, stopped before it.
    workers_started: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proc.url

    def submit(self, capability: str, input: object) -> str:
        body = {"capability": capability, "input": input}
        status, task = call(self.url + "/v1/tasks", "POST", body, self.client_key)
        assert status == 200, task
        return task["id"]

    def task(self, task_id: str) -> dict:
        status, task = call(f"{self.url}/v1/tasks/{task_id}", "GET", key=self.client_key)
        assert status == 200, task
        return task

    def wait_task(self, task_id: str, state: str, timeout: float = TASK_TIMEOUT) -> dict:
        return wait_until(
            f"task {task_id} {state}", lambda: (t := self.task(task_id))["state"] == state and t, timeout
        )

    def workers(self) -> dict[str, dict]:
        """The workers the hub knows now, by id (GET /v1/workers takes a worker key)."""
        status, listed = call(self.url + "/v1/workers", "GET", key=self.worker_key)
        assert status == 200, listed
        return {w["id"]: w for w in listed["workers"]}

    def python_worker(self, name: str, *capabilities: str) -> tuple[Proc, str]:
        """examples/worker.py offering `capabilities`, its key from the
        environment as a user would pass it; the process and its worker id
        once it says it registered."""
        args = [str(WORKER), "--hub", self.url, "--name", name]
        for c in capabilities:
            args += ["--capability", c]
        proc = spawn(name, args, self.logdir, env={"DROVER_WORKER_KEY": self.worker_key}, binary=Path(sys.executable))
        self.workers_started.append(proc)
        offering = re.escape(", ".join(capabilities))
        line = rf"^worker (wrk_\S+) registered with {re.escape(self.url)} offering {offering}$"
        found = wait_until(f"{name} registered", lambda: log_has(proc, line), 20, procs=[proc, self.proc])
        return proc, found.group(1)


@pytest.fixture
def hub(tmp_path) -> Hub:
    """A hub with a worker key and a client key (so neither API is open),
    its store in tmp_path, and no LLM server: tasks need none."""
    data = tmp_path / "data"
    worker_key = offline_key(data, "workers", "worker")
    client_key = offline_key(data, "app", "client")
    proc = spawn("hub", ["serve", "--listen", "127.0.0.1:0"], tmp_path, env={"DROVER_DATA_DIR": str(data), **QUICK_HUB})
    hub = Hub(proc, tmp_path, worker_key, client_key)
    try:
        proc.wait_for_url()
        yield hub
    finally:
        for p in [*hub.workers_started, hub.proc]:
            p.stop()


def gone(proc: Proc) -> None:
    """Takes a process that ended on purpose off the list of those that
    must stay up."""
    assert proc.popen.poll() is not None
    proc.stop()


def test_a_python_worker_and_a_command_worker_serve_one_capability(hub, tmp_path):
    _, py_id = hub.python_worker("py-words", "word-count")
    command = spawn(
        "cmd-words",
        ["worker", "--hub", hub.url, "--key", hub.worker_key, "--capability", "word-count,max=1",
         "--", sys.executable, "-c", COUNT_WORDS],
        tmp_path,
    )  # fmt: skip
    hub.workers_started.append(command)
    found = wait_until(
        "the command worker registered", lambda: log_has(command, r"worker (wrk_\S+) \(.*\) offers word-count"), 20
    )
    command_id = found.group(1)
    assert set(hub.workers()) == {py_id, command_id}

    tasks = {hub.submit("word-count", {"text": " ".join(["word"] * n)}): n for n in range(1, 21)}
    served = Counter()
    for task_id, words in tasks.items():
        done = hub.wait_task(task_id, "completed")
        assert done["response"]["body"] == {"words": words}, done
        assert len(done["attempts"]) == 1, done
        (attempt,) = done["attempts"]
        assert attempt["status"] == 200 and attempt["error"] is None, done
        (worker,) = attempt["backends"]  # each attempt names the one worker that ran it
        served[worker] += 1
    assert set(served) == {py_id, command_id}, f"both languages serve it: {served}"


def test_a_worker_killed_mid_task_its_task_finishes_on_another_once(hub):
    first, first_id = hub.python_worker("sleeper-1", "sleep")
    task_id = hub.submit("sleep", {"seconds": 3})
    wait_until("the first worker runs the task", lambda: log_has(first, rf"{task_id} sleep: started \(attempt 1\)"), 10)
    # Registered only now, so the task was the first one's to run.
    second, second_id = hub.python_worker("sleeper-2", "sleep")
    first.popen.send_signal(signal.SIGKILL)  # no drain, no goodbye: it falls silent
    first.popen.wait(5)
    gone(first)

    done = hub.wait_task(task_id, "completed")
    attempts = done["attempts"]
    assert [a["backends"] for a in attempts] == [[first_id], [second_id]], done
    assert first_id in attempts[0]["error"], done  # its lease lapsed, or the worker was given up on
    assert attempts[1]["status"] == 200 and attempts[1]["error"] is None, done
    assert done["response"]["body"] == {"slept": 3}, done
    # Ran once on the second worker, answered once, and it still serves.
    log = second.log.read_text()
    assert log.count(f"{task_id} sleep: started") == 1, log
    assert log.count(f"{task_id} sleep: completed") == 1, log


def test_a_worker_killed_in_a_long_poll_is_forgotten(hub):
    """A worker parked in a long poll counts as alive; one killed there must
    stop counting when its connection dies, or it is never swept and keeps
    being given tasks whose leases then lapse."""
    killed, killed_id = hub.python_worker("killed", "sleep")
    time.sleep(0.5)  # in its long poll, as a worker is nearly all the time
    killed.popen.send_signal(signal.SIGKILL)
    killed.popen.wait(5)
    gone(killed)
    # Three missed heartbeats (1 s each), or the poll's own wait (5 s) and then those.
    wait_until("the killed worker forgotten", lambda: killed_id not in hub.workers(), 10)


def test_a_cancel_stops_the_python_handler_and_the_worker_takes_the_next_task(hub):
    worker, worker_id = hub.python_worker("sleeper", "sleep")
    task_id = hub.submit("sleep", {"seconds": 60})
    wait_until("the worker runs the task", lambda: log_has(worker, rf"{task_id} sleep: started"), 10)
    status, answer = call(f"{hub.url}/v1/tasks/{task_id}/cancel", "POST", {}, hub.client_key)
    assert status == 200, answer
    hub.wait_task(task_id, "cancelled")
    # The worker hears it at its next heartbeat, stops the handler and says
    # so with `fail`, which ends its lease: it holds nothing any more.
    wait_until("the worker gives the cancelled task up", lambda: hub.workers()[worker_id]["in_flight"] == 0, 10)
    assert log_has(worker, rf"{task_id} sleep: failed: cancelled$"), worker.log_tail()
    assert hub.task(task_id)["state"] == "cancelled"

    next_id = hub.submit("sleep", {"seconds": 0.2})
    done = hub.wait_task(next_id, "completed")
    assert done["attempts"][0]["backends"] == [worker_id], done
    assert done["response"]["body"] == {"slept": 0.2}, done
    assert worker.popen.poll() is None


def test_sigterm_drains_the_python_worker(hub):
    worker, worker_id = hub.python_worker("drainer", "sleep")
    task_id = hub.submit("sleep", {"seconds": 2})
    wait_until("the worker runs the task", lambda: log_has(worker, rf"{task_id} sleep: started"), 10)
    worker.popen.send_signal(signal.SIGTERM)
    wait_until("the worker drains", lambda: log_has(worker, r"draining"), 5)
    later_id = hub.submit("sleep", {"seconds": 0.1})  # comes while it drains
    assert worker.popen.wait(15) == 0, worker.log_tail()
    gone(worker)

    done = hub.task(task_id)
    assert done["state"] == "completed", done
    assert [a["backends"] for a in done["attempts"]] == [[worker_id]], done
    assert done["response"]["body"] == {"slept": 2}, done
    assert worker_id not in hub.workers()
    assert not log_has(worker, rf"{later_id} sleep: started"), worker.log_tail()

    # The task that came during the drain was not given there (the worker
    # told the hub it drains before it said so in its log): it waits for,
    # and runs on, the next worker, at its first attempt.
    _, other_id = hub.python_worker("next", "sleep")
    later = hub.wait_task(later_id, "completed")
    assert [a["backends"] for a in later["attempts"]] == [[other_id]], later


def test_a_drain_from_the_hub_makes_the_python_worker_finish_and_leave(hub):
    worker, worker_id = hub.python_worker("drained", "sleep")
    task_id = hub.submit("sleep", {"seconds": 1})
    wait_until("the worker runs the task", lambda: log_has(worker, rf"{task_id} sleep: started"), 10)
    # No admin key made: a loopback hub lets the operator's own machine in.
    status, answer = call(f"{hub.url}/admin/workers/{worker_id}/drain", "POST", {})
    assert status == 204, answer
    assert worker.popen.wait(15) == 0, worker.log_tail()
    gone(worker)
    assert hub.task(task_id)["state"] == "completed"
    assert worker_id not in hub.workers()


def test_the_python_worker_registers_again_when_the_hub_restarts(hub, tmp_path):
    """The hub keeps workers in memory: after a restart it answers the
    worker's calls with 404, and the worker registers anew."""
    worker, first_id = hub.python_worker("survivor", "word-count")
    port = hub.url.rsplit(":", 1)[1]
    hub.proc.stop()
    hub.proc = spawn(
        "hub-again", ["serve", "--listen", f"127.0.0.1:{port}"], tmp_path,
        env={"DROVER_DATA_DIR": str(tmp_path / "data"), **QUICK_HUB},
    )  # fmt: skip
    hub.proc.wait_for_url()
    registered = re.compile(r"^worker (wrk_\S+) registered with", re.MULTILINE)
    again = wait_until("the worker registered again", lambda: registered.findall(worker.log.read_text())[1:], 20)
    assert again[0] != first_id and set(hub.workers()) == {again[0]}
    done = hub.wait_task(hub.submit("word-count", {"text": "still here"}), "completed")
    assert done["attempts"][0]["backends"] == [again[0]], done
    assert done["response"]["body"] == {"words": 2}, done
