"""Job callbacks checked by code nobody here wrote: the Standard Webhooks
reference library for Python (`standardwebhooks`, pinned in
scripts/requirements-test.txt) verifies every delivery a real hub (`drover
serve`, its store in its data directory) sends to a receiver on loopback,
with the secret the hub answered to `POST /admin/webhook-secret`, or the
one a key was given as its own (`drover keys webhook-secret`)."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import child_env, drover_binary, http_json, http_post_json, spawn, wait_until

DELIVERY_TIMEOUT = 20.0  # seconds, for a callback to arrive


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on a thread that records what it is sent and answers
    each request with the next of its statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None):
        self.deliveries: list[Delivery] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(self.path, headers, body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/drover"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int) -> list[Delivery]:
        def enough():
            with self.lock:
                return list(self.deliveries) if len(self.deliveries) >= n else None

        return wait_until(f"{n} deliveries", enough, DELIVERY_TIMEOUT)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub with a store (its data directory) and quick retries, in front
    of one simulated server."""
    logdir = tmp_path_factory.mktemp("callbacks")
    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], logdir)
    hub = None
    try:
        sim.wait_for_url()
        quick = {
            "DROVER_JOBS__BACKOFF": "50ms",
            "DROVER_JOBS__MAX_BACKOFF": "200ms",
            "DROVER_JOBS__POLL_INTERVAL": "50ms",
        }
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", sim.url], logdir, quick)
        hub.wait_for_url()
        wait_until("the hub knows the model", lambda: http_json(hub.url + "/v1/models")["data"], 20)
        yield hub
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()


def new_secret(hub_url: str) -> str:
    secret = http_post_json(hub_url + "/admin/webhook-secret", {})["secret"]
    assert secret.startswith("whsec_"), secret
    return secret


def submit(hub_url: str, model: str, callback_url: str) -> dict:
    return http_post_json(
        hub_url + "/v1/jobs",
        {
            "endpoint": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
            "callback_url": callback_url,
        },
    )


def verify(secret: str, delivery: Delivery) -> dict:
    return Webhook(secret).verify(delivery.body, delivery.headers)


def test_a_completed_jobs_callback_verifies_with_the_reference_library(hub, receiver):
    secret = new_secret(hub.url)
    job = submit(hub.url, "m", receiver.url)
    [delivery] = receiver.wait_for(1)
    event = verify(secret, delivery)
    assert delivery.path == "/hooks/drover"
    assert delivery.headers["content-type"] == "application/json"
    assert event["type"] == "job.completed", event
    # The job as GET /v1/jobs/{id} shows it, with its answer.
    assert event["data"] == http_json(f"{hub.url}/v1/jobs/{job['id']}")
    assert event["data"]["response"]["status_code"] == 200
    assert event["data"]["response"]["body"]["choices"][0]["message"]["content"]
    # When the job ended, RFC 3339 in UTC: the second it shows as ended_at.
    ended = datetime.fromisoformat(event["timestamp"])
    assert ended.tzinfo is not None and ended.utcoffset().total_seconds() == 0, event["timestamp"]
    assert int(ended.timestamp()) == event["data"]["ended_at"]

    # The library refuses what was not sent, or not signed with the secret.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(delivery.body.replace(b"completed", b"failed"), delivery.headers)
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(hub.url), delivery)


def test_retried_deliveries_verify_and_keep_their_id(hub):
    receiver = Receiver([500, 503])
    try:
        secret = new_secret(hub.url)
        submit(hub.url, "m", receiver.url)
        deliveries = receiver.wait_for(3)
        assert len({d.headers["webhook-id"] for d in deliveries}) == 1, deliveries
        events = [verify(secret, d) for d in deliveries]
        assert all(e == events[0] for e in events)
        url = f"{hub.url}/v1/jobs/{deliveries[0].headers['webhook-id']}"
        wait_until("the callback is delivered", lambda: http_json(url)["state"] == "completed", DELIVERY_TIMEOUT)
        callback = http_json(url)
        assert [a["status"] for a in callback["attempts"]] == [500, 503, 200], json.dumps(callback)
    finally:
        receiver.stop()


def test_a_failed_jobs_callback_verifies_and_says_job_failed(hub, receiver):
    secret = new_secret(hub.url)
    job = submit(hub.url, "no-such-model", receiver.url)
    [delivery] = receiver.wait_for(1)
    event = verify(secret, delivery)
    assert event["type"] == "job.failed", event
    assert event["data"]["id"] == job["id"]
    assert event["data"]["response"]["status_code"] == 404
    assert datetime.fromisoformat(event["timestamp"]) <= datetime.now(timezone.utc)


def offline_keys(data_dir, *args: str) -> str:
    """`drover keys ARGS --data-dir DIR`, beside whatever hub runs there:
    what it prints on standard output."""
    out = subprocess.run(
        [str(drover_binary()), "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_keys_own_secret_signs_its_jobs_callbacks(tmp_path, receiver):
    data = tmp_path / "data"
    key = offline_keys(data, "create", "tenant")
    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], tmp_path)
    hub = None
    try:
        sim.wait_for_url()
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", sim.url], tmp_path,
                    {"DROVER_DATA_DIR": str(data), "DROVER_JOBS__POLL_INTERVAL": "50ms"})
        hub.wait_for_url()
        hubs_secret = new_secret(hub.url)
        # Given beside the running hub, by the key's name: in force within
        # the hub's next look at its keys.
        own = offline_keys(data, "webhook-secret", "tenant")
        assert own.startswith("whsec_") and own != hubs_secret, own
        wait_until("the hub knows the key's secret",
                   lambda: http_json(hub.url + "/admin/keys")["keys"][0]["own_webhook_secret"], 10)

        request = urllib.request.Request(
            hub.url + "/v1/jobs",
            json.dumps({
                "endpoint": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                "callback_url": receiver.url,
            }).encode(),
            {"content-type": "application/json", "authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            job = json.loads(resp.read())
        [delivery] = receiver.wait_for(1)
        event = verify(own, delivery)
        assert event["data"]["id"] == job["id"], event
        with pytest.raises(WebhookVerificationError):
            verify(hubs_secret, delivery)
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()
