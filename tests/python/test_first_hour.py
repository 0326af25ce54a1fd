"""What a new user meets in the first hour, through the real binary: adding
a backend that does not answer says so, and stopping the hub says what it
is finishing."""

from __future__ import annotations

import signal

from conftest import drover_cli, free_port, http_json, spawn, wait_until


def test_adding_a_backend_that_does_not_answer_says_so(tmp_path):
    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], tmp_path)
    hub = None
    try:
        sim.wait_for_url()
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0"], tmp_path)
        hub.wait_for_url()
        dead = f"http://127.0.0.1:{free_port()}"
        out = drover_cli(hub.url, "backends", "add", f"{dead},name=dead").stdout
        assert "added dead" in out, out
        assert "it does not answer yet" in out, out
        out = drover_cli(hub.url, "backends", "add", f"{sim.url},name=alive").stdout
        assert "it answers: openai, 1 model" in out, out
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()


def test_stopping_the_hub_says_what_it_finishes(tmp_path):
    hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0"], tmp_path)
    try:
        hub.wait_for_url()
        wait_until("the hub answers", lambda: http_json(hub.url + "/health")["status"] == "ok", 10)
        hub.popen.send_signal(signal.SIGINT)
        hub.popen.wait(timeout=10)
        log = hub.log.read_text()
        assert "shutting down: finishing 0 running requests" in log, log
    finally:
        hub.stop()
