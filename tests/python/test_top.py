"""`drover top` against a running hub: one frame with `--once`, and the
live screen in a real pseudo-terminal, redrawn in place and quitting on
`q` with the terminal restored."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import urllib.request

import openai

from conftest import child_env, drover_binary, drover_cli, http_json, spawn, wait_until


def start(tmp_path):
    sim = spawn("sim", ["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "alpha,beta",
                        "--slots", "2"], tmp_path)  # fmt: skip
    sim.wait_for_url()
    hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{sim.url},name=studio"], tmp_path)
    hub.wait_for_url()
    wait_until("the hub knows the models", lambda: len(http_json(hub.url + "/v1/models")["data"]) == 2, 20)
    return sim, hub


def test_one_frame_shows_backends_models_and_the_queue(tmp_path):
    sim, hub = start(tmp_path)
    try:
        out = drover_cli(hub.url, "top", "--once", "--interval", "0.3")
        lines = out.stdout.splitlines()
        assert lines[0].startswith(f"drover top  {hub.url}   requests/s"), out.stdout
        assert any(line.split() == ["studio", "closed", "alpha", "0/1", "unloaded"] for line in lines), out.stdout
        assert "QUEUE" in out.stdout and "RECENT ERRORS" in out.stdout, out.stdout
    finally:
        hub.stop()
        sim.stop()


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def test_one_frame_says_the_jobs_waiting_running_held_and_batches_open(tmp_path):
    # One slot that answers after 30 s, and two jobs in the hub's hands at
    # a time: two run (one on the slot, one waiting for it), the rest wait
    # in the store.
    sim = spawn("sim", ["sim", "--dialect", "lmstudio", "--listen", "127.0.0.1:0", "--models", "alpha",
                        "--slots", "1", "--ttft-ms", "30000"], tmp_path)  # fmt: skip
    sim.wait_for_url()
    hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{sim.url},name=studio"], tmp_path,
                env={"DROVER_JOBS__WINDOW": "2"})  # fmt: skip
    hub.wait_for_url()
    try:
        wait_until("the hub knows the model", lambda: len(http_json(hub.url + "/v1/models")["data"]) == 1, 20)
        out = drover_cli(hub.url, "top", "--once", "--interval", "0.3")
        assert "JOBS  0 waiting, 0 running, 0 held by this hub, 0 batches open" in out.stdout.splitlines(), out.stdout

        for i in range(4):
            post_json(hub.url + "/v1/jobs", {"endpoint": "/v1/chat/completions",
                                             "body": {"model": "alpha", "messages": [{"role": "user", "content": f"job {i}"}]}})  # fmt: skip
        client = openai.OpenAI(base_url=hub.url + "/v1", api_key="unused", max_retries=0)
        line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "alpha", "messages": [{"role": "user", "content": "in a batch"}]}}  # fmt: skip
        batch_input = tmp_path / "in.jsonl"
        batch_input.write_text(json.dumps(line) + "\n")
        with open(batch_input, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")

        def held_and_counted():
            jobs = http_json(hub.url + "/admin/overview")["jobs"]
            counts = {c["state"]: c["jobs"] for c in jobs["by_state"]}
            return jobs["held"] == 2 and counts.get("queued") == 3 and counts.get("running") == 2

        wait_until("the store holds them", held_and_counted, 20)
        out = drover_cli(hub.url, "top", "--once", "--interval", "0.3")
        assert "JOBS  3 waiting, 2 running, 2 held by this hub, 1 batch open" in out.stdout.splitlines(), out.stdout
    finally:
        hub.stop()
        sim.stop()


def test_with_keys_it_reads_the_whole_queue_with_the_admin_key(tmp_path):
    sim, hub = start(tmp_path)
    try:
        drover_cli(hub.url, "keys", "create", "app")
        admin = drover_cli(hub.url, "keys", "create", "ops", "--kind", "admin").stdout.strip()
        out = drover_cli(hub.url, "top", "--once", "--interval", "0.3", "--admin-key", admin)
        assert "QUEUE" in out.stdout and "studio" in out.stdout, out.stdout
    finally:
        hub.stop()
        sim.stop()


def test_the_live_screen_redraws_and_quits_on_q(tmp_path):
    sim, hub = start(tmp_path)
    main, replica = pty.openpty()
    top = subprocess.Popen(
        [str(drover_binary()), "top", "--interval", "0.2", "--hub", hub.url],
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env=child_env({"TERM": "xterm"}),
    )
    os.close(replica)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(b"requests/s") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                seen += os.read(main, 65536)
        assert seen.count(b"requests/s") >= 2, seen[-2000:]
        assert b"\x1b[?1049h" in seen, "the alternate screen"
        assert b"alpha" in seen and b"studio" in seen
        os.write(main, b"q")
        assert top.wait(timeout=10) == 0
        while True:
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert b"\x1b[?1049l" in seen, "the terminal is restored"
    finally:
        if top.poll() is None:
            top.kill()
        os.close(main)
        hub.stop()
        sim.stop()
