"""The OpenAI Files and Batch API exactly as the official `openai` client
uses it, against `drover serve` with simulated LM Studio servers behind it:
upload, create, poll, read the output; validation naming the line; cancel;
and a hub killed with SIGKILL in the middle of a batch, which resumes and
writes each line once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from conftest import Fleet, fleet_fixture, spawn, start_fleet, wait_until

FINAL = {"completed", "failed", "cancelled", "expired"}


def write_batch(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def chat_line(custom_id: str, model: str, content: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def wait_for_batch(client: openai.OpenAI, batch_id: str, timeout: float = 60.0, statuses=FINAL):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} is still {batch.status}"
        time.sleep(0.05)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_batch_runs_on_the_fleet_each_line_on_its_own_model(fleet: Fleet, client: openai.OpenAI, tmp_path):
    lines = [chat_line(f"req-{i}", "chat-a" if i % 2 else "chat-b", f"question {i}") for i in range(20)]
    upload = client.files.create(file=open(write_batch(tmp_path / "in.jsonl", lines), "rb"), purpose="batch")
    assert upload.purpose == "batch"
    assert upload.bytes == (tmp_path / "in.jsonl").stat().st_size
    assert client.files.retrieve(upload.id).filename == "in.jsonl"

    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status in {"validating", "in_progress"}
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.total == 20
    assert done.request_counts.completed == 20
    assert done.request_counts.failed == 0
    assert done.error_file_id is None
    out = lines_of(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"req-{i}" for i in range(20))
    for line in out:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"]
        want = "chat-a" if int(line["custom_id"].split("-")[1]) % 2 else "chat-b"
        assert line["response"]["body"]["model"] == want
    # The output is a file of the caller's, listed and deletable like any.
    listed = [f.id for f in client.files.list()]
    assert done.output_file_id in listed and upload.id in listed
    assert any(b.id == batch.id for b in client.batches.list())
    # A completed batch cannot be cancelled.
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    assert client.files.delete(upload.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)


def test_embeddings_and_a_line_that_fails_go_to_their_files(fleet: Fleet, client: openai.OpenAI, tmp_path):
    lines = [
        {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "embed-small", "input": "a"}},
        {"custom_id": "e2", "method": "POST", "url": "/v1/embeddings", "body": {"model": "no-such-model", "input": "b"}},
    ]
    upload = client.files.create(file=open(write_batch(tmp_path / "emb.jsonl", lines), "rb"), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    done = wait_for_batch(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    [ok] = lines_of(client, done.output_file_id)
    assert ok["custom_id"] == "e1"
    assert len(ok["response"]["body"]["data"][0]["embedding"]) > 0
    [bad] = lines_of(client, done.error_file_id)
    assert bad["custom_id"] == "e2"
    assert bad["response"]["status_code"] == 404
    assert bad["response"]["body"]["error"]["code"] == "model_not_found"


def test_a_bad_input_file_fails_the_batch_naming_each_line(client: openai.OpenAI, tmp_path):
    lines = [
        chat_line("a", "chat-a", "fine"),
        chat_line("a", "chat-a", "the same custom_id"),
        {**chat_line("c", "chat-a", "x"), "url": "/v1/embeddings"},
        {**chat_line("d", "chat-a", "x"), "body": {"model": "chat-a", "stream": True, "messages": []}},
    ]
    path = write_batch(tmp_path / "bad.jsonl", lines)
    with open(path, "a") as f:
        f.write("{not json\n")
    upload = client.files.create(file=open(path, "rb"), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = wait_for_batch(client, batch.id)
    assert batch.status == "failed"
    errors = {e.line: e for e in batch.errors.data}
    assert set(errors) == {2, 3, 4, 5}, batch.errors
    assert errors[2].code == "duplicate_custom_id"
    assert "stream" in errors[4].message
    assert errors[5].code == "invalid_json_line"
    # Nothing of it ran.
    assert batch.request_counts.total == 0


def test_bad_requests_are_named(client: openai.OpenAI, tmp_path):
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id="file-x", endpoint="/v1/images/generations", completion_window="24h")
    assert "endpoint" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=open(write_batch(tmp_path / "x.jsonl", []), "rb"), purpose="fine-tune")
    assert "purpose" in str(e.value)


@pytest.fixture(scope="module")
def slow_fleet(tmp_path_factory) -> Fleet:
    """One slot and slow answers: a batch takes long enough to cancel."""
    sims = {"slow-1": ["--models", "slow", "--loaded", "slow", "--slots", "1", "--ttft-ms", "300"]}
    yield from fleet_fixture(start_fleet(tmp_path_factory.mktemp("slow"), sims, expect={"slow": {"slow-1"}}))


def test_cancel_keeps_what_ran_and_cancels_the_rest(slow_fleet: Fleet, tmp_path):
    with slow_fleet.client() as client:
        lines = [chat_line(f"c{i}", "slow", f"q{i}") for i in range(10)]
        upload = client.files.create(file=open(write_batch(tmp_path / "c.jsonl", lines), "rb"), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_until("a line completed", lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1, 30)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in {"cancelling", "cancelled"}
        done = wait_for_batch(client, batch.id)
        assert done.status == "cancelled"
        assert done.cancelled_at is not None
        out = lines_of(client, done.output_file_id)
        errors = lines_of(client, done.error_file_id)
        assert len(out) >= 1
        assert len(out) + len(errors) == 10
        assert all(e["error"]["code"] == "batch_cancelled" for e in errors)
        assert {line["custom_id"] for line in out + errors} == {f"c{i}" for i in range(10)}
        # Cancelling again says what it is; nothing changes.
        assert client.batches.cancel(batch.id).status == "cancelled"


def test_a_hub_killed_mid_batch_resumes_and_writes_each_line_once(tmp_path):
    sims = {"resume-1": ["--models", "m", "--loaded", "m", "--slots", "2", "--ttft-ms", "50"]}
    fleet = start_fleet(tmp_path, sims, hub_env={"DROVER_JOBS__POLL_INTERVAL": "100ms"}, expect={"m": {"resume-1"}})
    try:
        with fleet.client() as client:
            lines = [chat_line(f"r{i}", "m", f"q{i}") for i in range(60)]
            upload = client.files.create(file=open(write_batch(tmp_path / "r.jsonl", lines), "rb"), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
            wait_until("some lines completed", lambda: client.batches.retrieve(batch.id).request_counts.completed >= 10, 30)
        # SIGKILL: no shutdown, nothing flushed.
        fleet.hub.popen.kill()
        fleet.hub.popen.wait()
        fleet.hub.stop()  # only forgets it: it is gone
        backend = fleet.sims["resume-1"].url
        # The same name: the same data directory, so the same store.
        fleet.hub = spawn(
            "hub",
            ["serve", "--listen", "127.0.0.1:0", "--backend", f"lmstudio={backend},name=resume-1"],
            tmp_path,
            {"DROVER_JOBS__POLL_INTERVAL": "100ms"},
        )
        fleet.hub.wait_for_url()
        with fleet.client() as client:
            done = wait_for_batch(client, batch.id)
            assert done.status == "completed", done
            assert done.request_counts.completed == 60
            out = lines_of(client, done.output_file_id)
            ids = [line["custom_id"] for line in out]
            assert sorted(ids) == sorted(f"r{i}" for i in range(60)), "each line once"
            assert done.error_file_id is None
    finally:
        fleet.stop()


def test_a_batch_past_its_window_expires_keeping_what_ran(slow_fleet: Fleet, tmp_path):
    with slow_fleet.client() as client:
        lines = [chat_line(f"x{i}", "slow", f"q{i}") for i in range(8)]
        upload = client.files.create(file=open(write_batch(tmp_path / "x.jsonl", lines), "rb"), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="1s")
        done = wait_for_batch(client, batch.id)
        assert done.status == "expired", done
        assert done.expired_at is not None
        out = lines_of(client, done.output_file_id)
        errors = lines_of(client, done.error_file_id)
        assert len(out) >= 1 and len(errors) >= 1
        assert len(out) + len(errors) == 8
        assert all(e["error"]["code"] == "batch_expired" for e in errors), errors
        assert done.request_counts.completed == len(out)
