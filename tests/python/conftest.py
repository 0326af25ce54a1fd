"""Real processes for the client-compatibility tests.

Nothing here builds: scripts/test runs `cargo build -p drover` first, and
these fixtures start `target/debug/drover` (under $CARGO_TARGET_DIR if set):
simulated LM Studio servers (`drover sim`) and a hub (`drover serve`) in
front of them, all on free loopback ports picked by the processes
themselves (port 0; each prints the URL it got). Every process started is
stopped when its fixture ends, pass or fail, again at interpreter exit, and
by the kernel if the test process is killed outright (Linux).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]

# The main fleet: two LM Studio servers sharing chat-a and embed-small, each
# with a model of its own. chat-c is on studio-2's disk but not loaded (LM
# Studio's JIT loading). Same seed on both, so an answer depends on the
# request and not on which backend served it, as with real copies of a model.
OUTPUT_TOKENS = 12
EMBEDDING_DIMS = 16
FLEET = {
    "studio-1": {"models": ["chat-a", "chat-b", "embed-small"], "loaded": ["chat-a", "chat-b", "embed-small"]},
    "studio-2": {"models": ["chat-a", "chat-c", "embed-small"], "loaded": ["chat-a", "embed-small"]},
}

STARTUP_TIMEOUT = 20.0  # seconds, for any one process to come up
STOP_TIMEOUT = 5.0  # seconds of grace after SIGTERM before SIGKILL
CLIENT_TIMEOUT = 15.0  # seconds, the openai client's per-request bound

# Loopback only, never through a proxy someone's environment names.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in [os.environ.get(_var, ""), "127.0.0.1", "localhost"] if x)

_LISTENING = re.compile(rb"listening on (http://127\.0\.0\.1:\d+)")
_running: list["Proc"] = []


def drover_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    binary = target / "debug" / "drover"
    if not binary.is_file():
        pytest.exit(f"{binary} is missing: run `cargo build -p drover` first (scripts/test does)", returncode=2)
    return binary


def drover_cli(hub_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `drover ARGS --hub HUB_URL` to success; its output as text."""
    out = subprocess.run(
        [str(drover_binary()), *args, "--hub", hub_url],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )
    assert out.returncode == 0, out.stderr
    return out


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without anything that could reconfigure drover
    behind the test's back (DROVER_*, RUST_LOG), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_") and k != "RUST_LOG"}
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str = ""

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def fail(self, why: str) -> None:
        raise RuntimeError(f"{self.name}: {why}\n--- last lines of {self.log} ---\n{self.log_tail()}")

    def wait_for_url(self, timeout: float = STARTUP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.log.read_bytes())
            if m:
                self.url = m.group(1).decode()
                return self.url
            if self.popen.poll() is not None:
                self.fail(f"exited with {self.popen.returncode} before listening")
            time.sleep(0.02)
        self.fail(f"printed no 'listening on' line within {timeout} s")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)


def _die_with_the_tests() -> None:
    """In the child before exec: on Linux, have the kernel send SIGTERM if
    the test process dies without its cleanup (SIGKILL, a crash)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(
    name: str,
    args: list[str],
    logdir: Path,
    env: dict[str, str] | None = None,
    binary: Path | None = None,
) -> Proc:
    """Starts `binary` (drover by default) with `args`, its output in
    `logdir/name.log`."""
    log = logdir / f"{name}.log"
    # Its own key store, never the user's.
    env = {"DROVER_DATA_DIR": str(logdir / f"{name}-data"), **(env or {})}
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [str(binary or drover_binary()), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            cwd=logdir,
            preexec_fn=_die_with_the_tests,
        )
    proc = Proc(name, popen, log)
    _running.append(proc)
    return proc


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_running):
        proc.stop()


def http_json(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def http_post_json(url: str, body, timeout: float = 10.0):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def wait_until(what: str, condition, timeout: float, interval: float = 0.02, procs: list[Proc] | None = None):
    """Polls `condition` until it returns something truthy, which it returns;
    fails after `timeout` seconds, or at once if one of `procs` (by default
    every process the tests started) died."""
    procs = list(_running) if procs is None else procs
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - not up yet
            last_error = e
        for p in procs:
            if p.popen.poll() is not None:
                p.fail(f"exited with {p.popen.returncode} while waiting for {what}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout} s (last error: {last_error!r})")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def _processes_stay_up():
    """Fails a test, naming the process, if a hub or simulator it relied on
    exited while it ran: a crash, or something outside killing drover."""
    yield
    gone = [p for p in _running if p.popen.poll() is not None]
    if gone:
        pytest.fail(
            "\n".join(
                f"{p.name} exited with {p.popen.returncode} during the test; its log ends:\n{p.log_tail()}"
                for p in gone
            )
        )


def placements(hub_url: str, timeout: float = 2.0) -> dict[str, set[str]]:
    """model -> names of the backends the hub lists it on."""
    listing = http_json(hub_url + "/v1/models", timeout=timeout)
    return {m["id"]: {b["backend"] for b in m.get("backends", [])} for m in listing["data"]}


@dataclass
class Fleet:
    """A hub and the simulated servers behind it."""

    hub: Proc
    sims: dict[str, Proc]

    @property
    def url(self) -> str:
        return self.hub.url

    @property
    def base_url(self) -> str:
        return self.hub.url + "/v1"

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("timeout", CLIENT_TIMEOUT)
        return openai.OpenAI(base_url=self.base_url, api_key="anything", max_retries=0, **kw)

    def async_client(self, **kw) -> openai.AsyncOpenAI:
        kw.setdefault("timeout", CLIENT_TIMEOUT)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="anything", max_retries=0, **kw)

    def stop(self) -> None:
        # The hub first, so it does not see its backends vanish mid-request.
        for p in [self.hub, *self.sims.values()]:
            p.stop()


def start_fleet(
    logdir: Path,
    sims: dict[str, list[str]],
    hub_env: dict[str, str] | None = None,
    expect: dict[str, set[str]] | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> Fleet:
    """Starts one `drover sim` per entry of `sims` (name -> its flags) and a
    hub with them as backends, and returns once the hub lists every model
    of `expect` (model -> backends) on at least those backends. `timeout`
    bounds each process's start and the wait for the listing."""
    logdir.mkdir(parents=True, exist_ok=True)
    started: list[Proc] = []
    try:
        for name, flags in sims.items():
            started.append(spawn(name, ["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", *flags], logdir))
        for p in started:
            p.wait_for_url(timeout)
        backends = []
        for p in started:
            backends += ["--backend", f"lmstudio={p.url},name={p.name}"]
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", *backends], logdir, hub_env)
        started.append(hub)
        hub.wait_for_url(timeout)

        def ready():
            seen = placements(hub.url)
            return all(want <= seen.get(model, set()) for model, want in (expect or {}).items())

        wait_until("the hub listing the fleet's models", ready, timeout, procs=started)
        return Fleet(hub=hub, sims={p.name: p for p in started[:-1]})
    except BaseException:
        for p in reversed(started):
            p.stop()
        raise


def fleet_fixture(fleet: Fleet):
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Fleet:
    """The shared fleet: two LM Studio sims, quick answers, a default hub."""
    sims = {}
    for name, spec in FLEET.items():
        sims[name] = [
            "--models", ",".join(spec["models"]),
            "--loaded", ",".join(spec["loaded"]),
            "--slots", "2",
            "--ttft-ms", "20",
            "--tokens-per-sec", "400",
            "--output-tokens", str(OUTPUT_TOKENS),
            "--load-ms", "50",
            "--embedding-dims", str(EMBEDDING_DIMS),
            "--seed", "7",
        ]  # fmt: skip
    expect: dict[str, set[str]] = {}
    for name, spec in FLEET.items():
        for model in spec["models"]:
            expect.setdefault(model, set()).add(name)
    yield from fleet_fixture(start_fleet(tmp_path_factory.mktemp("fleet"), sims, expect=expect))


@pytest.fixture
def client(fleet) -> openai.OpenAI:
    with fleet.client() as c:
        yield c


@pytest.fixture(scope="module")
def stuck_fleet(tmp_path_factory) -> Fleet:
    """A server that never answers (until the caller leaves), one slot, and
    a hub that lets one request wait: whatever holds the slot holds it for
    as long as the test wants, with no timing to race."""
    sims = {"stuck-1": ["--models", "stuck", "--loaded", "stuck", "--slots", "1", "--hang-rate", "1"]}
    yield from fleet_fixture(
        start_fleet(
            tmp_path_factory.mktemp("stuck"),
            sims,
            hub_env={"DROVER_QUEUE__MAX_WAITING": "1"},
            expect={"stuck": {"stuck-1"}},
        )
    )


@pytest.fixture(scope="module")
def breaking_fleet(tmp_path_factory) -> Fleet:
    """A server that kills the connection of every answer part-way. The
    breaker threshold is raised so the failures do not take the backend out
    of rotation between tests."""
    sims = {
        "flaky-1": [
            "--models", "flaky", "--loaded", "flaky", "--slots", "4",
            "--tokens-per-sec", "200", "--output-tokens", "16",
            "--close-mid-stream-rate", "1",
        ]
    }  # fmt: skip
    yield from fleet_fixture(
        start_fleet(
            tmp_path_factory.mktemp("breaking"),
            sims,
            hub_env={"DROVER_HEALTH__FAILURE_THRESHOLD": "1000"},
            expect={"flaky": {"flaky-1"}},
        )
    )


def metric(hub_url: str, name: str, labels: dict[str, str], timeout: float = 2.0) -> float | None:
    """One sample from the hub's /metrics, or None if it is not there."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in http_text(hub_url + "/metrics", timeout=timeout).splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        if "{" in key:
            metric_name, rest = key.split("{", 1)
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            metric_name, got = key, ""
        if metric_name == name and got == want:
            return float(value)
    return None


def from_env(var: str, script: str) -> Path:
    """A path scripts/test passes by environment; without it the tests that
    need it fail, saying how to set it."""
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run the suite with scripts/test, or set {var}=$({script})")
    return Path(value)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RealFleet:
    """A hub in front of the real llama.cpp server."""

    hub: Proc
    server: Proc
    model: str

    @property
    def url(self) -> str:
        return self.hub.url

    def stop(self) -> None:
        for p in (self.hub, self.server):
            p.stop()


@pytest.fixture(scope="module")
def llama_fleet(tmp_path_factory) -> RealFleet:
    """The real llama-server (scripts/llama-server) with a tiny real model
    (scripts/tiny-models), two slots, behind a hub."""
    binary = from_env("DROVER_LLAMA_SERVER", "scripts/llama-server")
    model = from_env("DROVER_TINY_GGUF_DIR", "scripts/tiny-models") / "tiny-a.gguf"
    logdir = tmp_path_factory.mktemp("llama")
    port = free_port()
    server = spawn(
        "llama-server",
        ["-m", str(model), "-np", "2", "-c", "4096", "--host", "127.0.0.1", "--port", str(port)],
        logdir,
        binary=binary,
    )
    server.url = f"http://127.0.0.1:{port}"
    hub = None
    try:
        wait_until("llama-server is ready", lambda: http_json(server.url + "/health"), STARTUP_TIMEOUT, procs=[server])
        # No kind, slots or paths: the hub detects llama.cpp and learns them.
        backend = f"{server.url},name=llama"
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", backend], logdir)
        hub.wait_for_url()
        listed = wait_until(
            "the hub listing llama-server's model",
            lambda: http_json(hub.url + "/v1/models")["data"],
            STARTUP_TIMEOUT,
            procs=[server, hub],
        )
        fleet = RealFleet(hub=hub, server=server, model=listed[0]["id"])
    except BaseException:
        for p in (hub, server):
            if p is not None:
                p.stop()
        raise
    try:
        yield fleet
    finally:
        fleet.stop()
