"""`drover models` against the real llama.cpp server in router mode (three
tiny models, `--models-max 2`): loaded and unloaded through drover's CLI,
loaded on demand by a request naming a model, evicted by the server on its
own when a load goes past drover (and said so), and evicted by drover's
model manager under the router's own `--models-max`, read from its `/props`,
or `max_loaded=2`, with a pinned model kept."""

from __future__ import annotations

import time

import openai

from conftest import (
    CLIENT_TIMEOUT,
    drover_cli,
    free_port,
    from_env,
    http_json,
    http_post_json,
    http_text,
    spawn,
    wait_until,
)


def start_router(tmp_path, slots: int):
    """The real llama-server in router mode over the tiny models, at most two
    loaded, `slots` per model; its URL once it answers."""
    binary = from_env("DROVER_LLAMA_SERVER", "scripts/llama-server")
    models = from_env("DROVER_TINY_GGUF_DIR", "scripts/tiny-models")
    port = free_port()
    server = spawn(
        "llama-router",
        ["--models-dir", str(models), "--models-max", "2", "-np", str(slots), "-c", "2048",
         "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        binary=binary,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until("the router answers", lambda: http_json(url + "/models")["data"], 30, procs=[server])
    return server, url


def states(hub_url: str) -> dict[str, bool]:
    backend = http_json(hub_url + "/admin/backends")["backends"][0]
    return {m["id"]: m["loaded"] for m in backend["models"]}


def test_router_mode_through_the_cli_and_on_demand(tmp_path):
    server, url = start_router(tmp_path, slots=2)
    hub = None
    try:
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{url},name=router"], tmp_path)
        hub.wait_for_url()
        wait_until("the hub lists the router's models", lambda: "tiny-b" in states(hub.url), 20)
        assert not states(hub.url)["tiny-b"]
        listing = drover_cli(hub.url, "models", "ls").stdout
        assert any(line.split()[:3] == ["tiny-b", "router", "unloaded"] for line in listing.splitlines()), listing

        out = drover_cli(hub.url, "models", "load", "tiny-b").stdout
        assert "loaded tiny-b on router in" in out, out
        assert states(hub.url)["tiny-b"]
        listing = drover_cli(hub.url, "models", "ls").stdout
        assert any(line.split()[:3] == ["tiny-b", "router", "loaded"] for line in listing.splitlines()), listing

        # On demand: a request naming an unloaded model loads it.
        with openai.OpenAI(base_url=hub.url + "/v1", api_key="x", max_retries=0, timeout=CLIENT_TIMEOUT) as c:
            r = c.chat.completions.create(model="tiny-c", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        assert r.choices
        wait_until("tiny-c shows loaded", lambda: states(hub.url)["tiny-c"], 10)

        out = drover_cli(hub.url, "models", "unload", "tiny-b").stdout
        assert "unloaded tiny-b from router" in out, out
        wait_until("tiny-b shows unloaded", lambda: not states(hub.url)["tiny-b"], 10)
    finally:
        for p in (hub, server):
            if p is not None:
                p.stop()


def chat(hub_url: str, model: str) -> None:
    with openai.OpenAI(base_url=hub_url + "/v1", api_key="x", max_retries=0, timeout=CLIENT_TIMEOUT) as c:
        r = c.chat.completions.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert r.choices


def loaded(hub_url: str) -> set[str]:
    return {m for m, on in states(hub_url).items() if on}


def test_router_evictions_by_the_server_and_by_drover(tmp_path):
    server, url = start_router(tmp_path, slots=1)
    hubs = []
    try:

        # The hub reads the router's --models-max (its /props) and evicts
        # itself, the least recently used idle model: the router never has to.
        hub = spawn("hub", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{url},name=router"], tmp_path)
        hubs.append(hub)
        hub.wait_for_url()
        wait_until("the hub lists the router's models", lambda: "tiny-b" in states(hub.url), 20)
        for model in ("tiny-b", "tiny-c", "tiny-a"):
            chat(hub.url, model)
        wait_until("the eviction shows", lambda: loaded(hub.url) == {"tiny-c", "tiny-a"}, 10)
        routers = {m["id"]: m["status"]["value"] for m in http_json(url + "/models")["data"]}
        assert routers["tiny-b"] == "unloaded", routers
        unloads = [line for line in http_text(hub.url + "/metrics").splitlines()
                   if line.startswith('drover_model_unloads_total{backend="router",model="tiny-b"}')]
        assert unloads and unloads[0].split()[-1] == "1", unloads

        # A model loaded past drover, straight on the router, makes the
        # router evict one on its own: drover sees it and says so.
        http_post_json(url + "/models/load", {"model": "tiny-b"})
        wait_until("the router's own eviction shows", lambda: len(loaded(hub.url) & {"tiny-c", "tiny-a"}) == 1, 10)
        evicted = ({"tiny-c", "tiny-a"} - loaded(hub.url)).pop()
        out = drover_cli(hub.url, "models", "unload", evicted).stdout
        assert f"{evicted} was not loaded anywhere asked: router unloaded it on its own" in out, out
        hub.stop()
        # Back to tiny-c and tiny-a on the router, for the next hub.
        http_post_json(url + "/models/unload", {"model": "tiny-b"})
        router_state = lambda: {m["id"]: m["status"]["value"] for m in http_json(url + "/models")["data"]}
        wait_until("tiny-b is unloaded", lambda: router_state()["tiny-b"] == "unloaded", 10)
        http_post_json(url + "/models/load", {"model": evicted})
        wait_until("both are loaded again", lambda: router_state()[evicted] == "loaded", 10)

        # Told the limit, drover evicts itself: the least recently used idle
        # model that is not pinned.
        hub = spawn(
            "hub2", ["serve", "--listen", "127.0.0.1:0", "--backend", f"{url},name=router,max_loaded=2"], tmp_path
        )
        hubs.append(hub)
        hub.wait_for_url()
        wait_until("the second hub sees what is loaded", lambda: loaded(hub.url) == {"tiny-c", "tiny-a"}, 20)
        out = drover_cli(hub.url, "models", "pin", "tiny-c").stdout
        assert "tiny-c is pinned (loaded on router)" in out, out
        chat(hub.url, "tiny-a")
        chat(hub.url, "tiny-b")
        assert loaded(hub.url) == {"tiny-c", "tiny-b"}, states(hub.url)
        routers = {m["id"]: m["status"]["value"] for m in http_json(url + "/models")["data"]}
        assert routers["tiny-a"] == "unloaded" and routers["tiny-c"] == "loaded", routers
        listing = drover_cli(hub.url, "models", "ls").stdout
        rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
        assert rows["tiny-c"].rstrip().endswith("yes"), listing
        assert "s ago" in rows["tiny-b"] and rows["tiny-b"].split()[2] == "loaded", listing
    finally:
        for p in (*hubs, server):
            if p is not None:
                p.stop()
