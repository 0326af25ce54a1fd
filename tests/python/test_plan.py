"""`drover plan --from-fleet` against a running hub: every backend's memory
budget from what it holds now (its loaded models' sizes and slots, its
config's memory, slot buffer, system and margin)."""

from __future__ import annotations

from conftest import drover_cli, http_json, spawn, wait_until


def test_plan_from_the_fleet(tmp_path):
    sim = spawn(
        "ollama",
        ["sim", "--dialect", "ollama", "--listen", "127.0.0.1:0",
         "--models", "qwen2.5:7b,llama3:8b", "--loaded", "qwen2.5:7b",
         "--model-size", "qwen2.5:7b=4096", "--model-size", "llama3:8b=5120"],
        tmp_path,
    )  # fmt: skip
    hub = None
    try:
        sim.wait_for_url()
        backend = f"{sim.url},name=gaming-pc,slots=2,memory=16G,slot_buffer=1G,system=2G,margin=1G"
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", backend], tmp_path)
        hub.wait_for_url()
        wait_until("the hub knows the backend", lambda: http_json(hub.url + "/v1/models")["data"], 20)
        out = drover_cli(hub.url, "plan", "--from-fleet", "--response-time", "3s")
        # One model of 4G with 2 slots of 1G, 2G of system: 8G of 16G used,
        # and beyond the 1G margin 7G free for more models.
        assert "gaming-pc (ollama):" in out.stdout, out.stdout
        assert "1 model loaded = 4G; 2 slots x 1G = 2G; system 2G" in out.stdout, out.stdout
        assert "used 8G of 16G, margin 1G: fits, 7G free for more models" in out.stdout, out.stdout
        assert "40 requests per minute" in out.stdout, out.stdout
    finally:
        for p in (hub, sim):
            if p is not None:
                p.stop()
