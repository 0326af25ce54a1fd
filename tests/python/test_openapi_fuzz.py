"""schemathesis (pinned) against the hub's own OpenAPI document, for a
bounded number of generated requests: every operation answers without a
5xx, with a status the document lists, in the content type and shape it
describes. `/ready` is left out: its 503 before a backend is usable is its
purpose; so is `/admin/events`, a stream that ends only with the hub.

The request schemas carry the hub's checks of single fields (names,
kinds, URLs, probe modes, counts of at least 1, priorities up to 100), so
most generated bodies reach the hub's logic; whether every schema-valid
request is accepted is not checked, because some checks span fields or the
disk (an admin key takes no limits, priority at most max_priority, a
ca_file that exists, per-model slots of at least 1)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import child_env, drover_cli, http_json, spawn, wait_until


def test_generated_requests_get_documented_answers(tmp_path):
    sim = spawn("sim", ["sim", "--dialect", "openai", "--listen", "127.0.0.1:0", "--models", "m"], tmp_path)
    hub = None
    try:
        sim.wait_for_url()
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{sim.url},name=s"], tmp_path)
        hub.wait_for_url()
        wait_until("the hub knows the model", lambda: http_json(hub.url + "/v1/models")["data"], 20)
        key = drover_cli(hub.url, "keys", "create", "ops", "--kind", "admin")
        schemathesis = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "schemathesis"
        run = subprocess.run(
            [str(schemathesis), "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
             "run", hub.url + "/openapi.json",
             "-H", f"Authorization: Bearer {key.stdout.strip()}",
             "--exclude-path", "/ready", "--exclude-path", "/admin/events",
             "--max-examples", "50", "--seed", "1", "--no-color"],
            capture_output=True,
            text=True,
            timeout=600,
            env=child_env(),
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "generated" in run.stdout, run.stdout
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()
