"""API keys through drover's CLI and the real `openai` client: a key
created with `drover keys create` (printed once) runs inference, a call
without it is an `AuthenticationError`, and `drover keys revoke` stops it at
the next request."""

from __future__ import annotations

import re
import subprocess

import openai
import pytest

from conftest import CLIENT_TIMEOUT, child_env, drover_binary, drover_cli, http_json, spawn, wait_until


def ask(hub_url: str, key: str) -> str:
    with openai.OpenAI(base_url=hub_url + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT) as c:
        r = c.chat.completions.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    return r.choices[0].message.content


def test_keys_created_listed_and_revoked_through_the_cli(tmp_path):
    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], tmp_path)
    hub = None
    try:
        sim.wait_for_url()
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", sim.url], tmp_path)
        hub.wait_for_url()
        wait_until("the hub knows the model", lambda: http_json(hub.url + "/v1/models")["data"], 20)
        assert ask(hub.url, "anything")  # no keys yet: open, as before

        created = drover_cli(hub.url, "keys", "create", "batch")
        key = created.stdout.strip()
        assert key.startswith("drv_c_"), created.stdout
        assert "shown this once" in created.stderr, created.stderr
        assert ask(hub.url, key)
        with pytest.raises(openai.AuthenticationError):
            ask(hub.url, "not-a-key")

        listing = drover_cli(hub.url, "keys", "ls").stdout
        row = next(line for line in listing.splitlines() if " batch " in line)
        assert row.split()[2:] == ["client", key[:12] + "...", "active"], listing
        assert key not in listing
        key_id = row.split()[0]
        assert "revoked batch" in drover_cli(hub.url, "keys", "revoke", key_id).stdout
        with pytest.raises(openai.AuthenticationError):
            ask(hub.url, key)
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()


def offline_keys(data_dir, *args: str) -> "subprocess.CompletedProcess":
    """`drover keys ARGS --data-dir DIR`: no hub involved."""
    out = subprocess.run(
        [str(drover_binary()), "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )
    assert out.returncode == 0, out.stderr
    return out


def test_keys_made_before_the_hub_runs_and_a_way_back_in(tmp_path):
    """Keys made straight in a data directory (before any hub, or beside a
    running one), revoked by name; what each change does is said; purging
    the revoked keys opens inference again."""
    data = tmp_path / "data"
    created = offline_keys(data, "create", "first")
    key = created.stdout.strip()
    assert key.startswith("drv_c_"), created.stdout
    assert "inference now needs a client key" in created.stderr, created.stderr
    assert (data.stat().st_mode & 0o777) == 0o700

    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], tmp_path)
    hub = None
    try:
        sim.wait_for_url()
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", sim.url], tmp_path,
                    env={"DROVER_DATA_DIR": str(data)})
        hub.wait_for_url()
        wait_until("the hub answers", lambda: http_json(hub.url + "/health")["status"] == "ok", 20)
        assert ask(hub.url, key)
        with pytest.raises(openai.AuthenticationError):
            ask(hub.url, "anything")

        # Beside the running hub: a second key works within seconds.
        second = offline_keys(data, "create", "second").stdout.strip()
        wait_until("the hub picks up the new key", lambda: _works(hub.url, second), 10)

        # Through the hub, by name; the last active one says what follows.
        assert "revoked first" in drover_cli(hub.url, "keys", "revoke", "first").stdout
        last = drover_cli(hub.url, "keys", "revoke", "second")
        assert "inference stays closed" in last.stderr, last.stderr
        with pytest.raises(openai.AuthenticationError):
            ask(hub.url, "anything")
        purged = drover_cli(hub.url, "keys", "purge")
        assert "forgot 2 revoked key(s)" in purged.stdout, purged.stdout
        assert "open to anyone again" in purged.stderr, purged.stderr
        assert ask(hub.url, "anything")
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()


def _works(hub_url: str, key: str) -> bool:
    try:
        return bool(ask(hub_url, key))
    except openai.AuthenticationError:
        return False


def test_keys_can_be_tried_on_the_demo(tmp_path):
    demo = spawn("demo", ["demo", "--listen", "127.0.0.1:0"], tmp_path)
    try:
        found = {}

        def dashboard_url() -> bool:
            m = re.search(rb"the dashboard is at (http://127\.0\.0\.1:\d+)/", demo.log.read_bytes())
            if m:
                found["url"] = m.group(1).decode()
            return bool(m)

        wait_until("the demo prints its URL", dashboard_url, 30)
        demo.url = found["url"]
        created = drover_cli(demo.url, "keys", "create", "try-me")
        assert created.stdout.strip().startswith("drv_c_"), created.stdout
        listing = drover_cli(demo.url, "keys", "ls").stdout
        assert " try-me " in listing, listing
        # What the hub does on an operator's word shows in the demo's log.
        drover_cli(demo.url, "models", "pin", "qwen2.5-7b-instruct")
        drover_cli(demo.url, "backends", "drain", "studio-2")
        log = lambda: demo.log.read_text()
        wait_until("the actions are logged", lambda: all(
            words in log() for words in ("API key created", "model pin changed", "drain state changed")), 10)
    finally:
        demo.stop()
