"""Coding-agent sessions against two real llama-servers: each session
resends its whole ~20,000-token system prompt and history every turn over
/v1/messages (as Claude Code does), streamed; time to first token of every
turn, measured by the pinned anthropic client.

usage: agent_sessions.py MODE URL [URL]
  MODE drover: every request to the one URL (a hub in front of both servers)
  MODE round-robin: requests alternate between the two URLs (a client-side
  round robin, as seed 000's bot did)
Prints one JSON object: every turn's TTFT, and the later turns' p50.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import sys
import threading
import time

import anthropic

SESSIONS = int(os.environ.get("SESSIONS", "4"))
TURNS = int(os.environ.get("TURNS", "3"))
# About 20,000 tokens of the tiny model's byte-level vocabulary.
PROMPT_BYTES = int(os.environ.get("PROMPT_BYTES", "15500"))


def system_prompt(session: int) -> str:
    rng = random.Random(session)
    words = []
    size = 0
    while size < PROMPT_BYTES:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        words.append(w)
        size += len(w) + 1
    return f"Session {session}. " + " ".join(words)


def main() -> None:
    mode, urls = sys.argv[1], sys.argv[2:]
    clients = [anthropic.Anthropic(base_url=u, api_key="bench", max_retries=0, timeout=600) for u in urls]
    turn_of = itertools.count()
    lock = threading.Lock()
    results: list[dict] = []

    def pick() -> anthropic.Anthropic:
        if mode == "drover":
            return clients[0]
        with lock:
            return clients[next(turn_of) % len(clients)]

    def session(s: int) -> None:
        system = system_prompt(s)
        history: list[dict] = []
        for turn in range(TURNS):
            history.append({"role": "user", "content": f"Turn {turn}: go on."})
            started = time.monotonic()
            ttft = None
            text = ""
            error = None
            try:
                # Raw events: this llama-server build sometimes leaves out
                # `message_start`, which the client's stream helper needs.
                events = pick().messages.create(
                    model=MODEL, max_tokens=8, system=system, messages=history, stream=True
                )
                for event in events:
                    if event.type == "content_block_delta":
                        if ttft is None:
                            ttft = time.monotonic() - started
                        text += getattr(event.delta, "text", "")
            except anthropic.APIError as e:
                error = f"{type(e).__name__}: {e}"
            total = time.monotonic() - started
            with lock:
                results.append(
                    {"session": s, "turn": turn, "ttft": ttft if ttft is not None else total, "total": total, "error": error}
                )
            # Random weights answer anything: keep it short and printable.
            history.append({"role": "assistant", "content": text.strip()[:40] or "ok"})

    threads = [threading.Thread(target=session, args=(s,)) for s in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    later = sorted(r["ttft"] for r in results if r["turn"] > 0 and not r["error"])
    print(
        json.dumps(
            {
                "mode": mode,
                "sessions": SESSIONS,
                "turns": TURNS,
                "prompt_bytes": PROMPT_BYTES,
                "later_turns": len(later),
                "later_ttft_p50": statistics.median(later),
                "later_ttft_max": max(later),
                "later_over_1s": sum(1 for t in later if t > 1.0),
                "errors": [r["error"] for r in results if r["error"]],
                "first_ttft_p50": statistics.median(r["ttft"] for r in results if r["turn"] == 0),
                "turns_detail": sorted(results, key=lambda r: (r["session"], r["turn"])),
            }
        )
    )


MODEL = "tiny-64k"

if __name__ == "__main__":
    main()
