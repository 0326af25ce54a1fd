"""API keys through drover's CLI and the real `openai` client: a key
created with `drover keys create` (printed once) runs inference, a call
without it is an `AuthenticationError`, and `drover keys revoke` stops it at
the next request."""

from __future__ import annotations

import openai
import pytest

from conftest import CLIENT_TIMEOUT, drover_cli, http_json, spawn, wait_until


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
