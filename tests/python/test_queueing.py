"""Waiting for a slot, as the client sees it: a full queue is
openai.RateLimitError with Retry-After, a queue timeout is a 503, and a
client that gives up frees its place and cancels the work upstream.

The backend here never answers, so a request holds its slot for exactly as
long as its connection stays open; the slot holders are plain HTTP
connections the test closes itself.
"""

import http.client
import json
from contextlib import contextmanager
from urllib.parse import urlsplit

import openai
import pytest

from conftest import http_json, metric, wait_until

MODEL = "stuck"
MESSAGES = [{"role": "user", "content": "are you there?"}]


def busy(fleet):
    return sum(b["busy"] for b in http_json(fleet.url + "/v1/models/" + MODEL)["backends"])


def waiting(fleet):
    # The gauge's sample disappears when nothing waits.
    return metric(fleet.url, "drover_queue_depth", {"model": MODEL}) or 0


def sim_stats(fleet):
    return http_json(fleet.sims["stuck-1"].url + "/_sim/stats")["models"][MODEL]


@contextmanager
def held(fleet, how_many=1, timeout=10.0):
    """Opens `how_many` requests that stay in the hub (running, then
    waiting) until the block ends, then closes them and waits for the hub
    to let go of them; each of those waits fails after `timeout` seconds."""
    url = urlsplit(fleet.url)
    conns = []
    try:
        for i in range(how_many):
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps({"model": MODEL, "messages": [{"role": "user", "content": f"hold {i}"}]}),
                headers={"content-type": "application/json"},
            )
            conns.append(conn)
            if i == 0:
                wait_until("a request to take the slot", lambda: busy(fleet) == 1, timeout)
            else:
                wait_until(f"{i} request(s) to wait", lambda i=i: waiting(fleet) == i, timeout)
        yield
    finally:
        for conn in conns:
            conn.close()
        wait_until("the hub to let go of closed requests", lambda: busy(fleet) == 0 and waiting(fleet) == 0, timeout)


@pytest.mark.parametrize("stream", [False, True])
def test_queue_full_is_a_rate_limit_error_with_retry_after(stuck_fleet, stream):
    # One request runs, one waits (the queue holds one), the next is refused.
    with held(stuck_fleet, 2), stuck_fleet.client() as client:
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)
        assert (busy(stuck_fleet), waiting(stuck_fleet)) == (1, 1), "the refusal must come with the queue full"
    err = e.value
    assert err.status_code == 429
    assert err.code == "queue_full"
    assert err.type == "rate_limit_error"
    retry_after = err.response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, retry_after
    assert err.response.headers["x-request-id"].strip()


def test_queue_timeout_is_service_unavailable(stuck_fleet):
    with held(stuck_fleet), stuck_fleet.client() as client:
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_headers={"x-drover-queue-timeout": "0.3"}
            )
    assert e.value.status_code == 503
    assert e.value.code == "queue_timeout"
    assert e.value.type == "server_error"


def test_a_client_that_gives_up_waiting_frees_its_place(stuck_fleet):
    with held(stuck_fleet), stuck_fleet.client(timeout=0.5) as impatient:
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL, messages=MESSAGES)
        wait_until("the abandoned request to leave the queue", lambda: waiting(stuck_fleet) == 0, 5)
        # Its place is free: the next request waits instead of a 429.
        with pytest.raises(openai.APITimeoutError):
            impatient.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_a_client_timeout_cancels_the_request_upstream(stuck_fleet):
    before = sim_stats(stuck_fleet)["cancelled"]
    with stuck_fleet.client(timeout=0.5) as impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    # The server never answers on its own: only the hub closing the
    # upstream connection ends the request there, and frees the hub's slot.
    wait_until("the upstream request to be cancelled", lambda: sim_stats(stuck_fleet)["cancelled"] == before + 1, 5)
    wait_until("the hub's slot to be free", lambda: busy(stuck_fleet) == 0, 5)
