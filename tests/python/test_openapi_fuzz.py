"""schemathesis (pinned) against the hub's own OpenAPI document, for a
bounded number of generated requests: every operation answers without a
5xx, with a status the document lists, in the content type and shape it
describes. `/ready` is left out: its 503 before a backend is usable is its
purpose; so is `/admin/events`, a stream that ends only with the hub. Whether every schema-valid request is accepted is not checked:
the schemas do not yet carry every validation the hub makes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import child_env, drover_cli, http_json, spawn, wait_until

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


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
            [str(schemathesis), "run", hub.url + "/openapi.json",
             "-H", f"Authorization: Bearer {key.stdout.strip()}",
             "--checks", CHECKS, "--exclude-path", "/ready", "--exclude-path", "/admin/events",
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
