"""POST /v1/chat/completions through the openai client, streamed and not."""

from conftest import OUTPUT_TOKENS

MESSAGES = [{"role": "user", "content": "Say something about rivers."}]


def test_chat_answer_with_usage_and_drover_headers(client):
    raw = client.chat.completions.with_raw_response.create(model="chat-b", messages=MESSAGES)
    # chat-b lives on studio-1 only: the header must name it.
    assert raw.headers["x-drover-backend"] == "studio-1"
    assert raw.headers["x-request-id"].strip()
    chat = raw.parse()
    assert chat.object == "chat.completion"
    assert chat.model == "chat-b"
    assert len(chat.choices) == 1
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert len(choice.message.content.split()) == OUTPUT_TOKENS
    assert choice.finish_reason == "stop"
    assert chat.usage.prompt_tokens > 0
    assert chat.usage.completion_tokens == OUTPUT_TOKENS
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens


def test_request_ids_differ_and_a_callers_id_is_kept(client):
    ids = {
        client.chat.completions.with_raw_response.create(model="chat-b", messages=MESSAGES).headers["x-request-id"]
        for _ in range(3)
    }
    assert len(ids) == 3, ids
    raw = client.chat.completions.with_raw_response.create(
        model="chat-b", messages=MESSAGES, extra_headers={"x-request-id": "trace-abc-123"}
    )
    assert raw.headers["x-request-id"] == "trace-abc-123"


def test_max_tokens_cuts_the_answer_short(client):
    chat = client.chat.completions.create(model="chat-a", messages=MESSAGES, max_tokens=3)
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 3
    assert len(chat.choices[0].message.content.split()) == 3


def test_both_backends_of_a_shared_model_answer(client):
    backends = set()
    for i in range(12):
        raw = client.chat.completions.with_raw_response.create(
            model="chat-a", messages=[{"role": "user", "content": f"question {i}"}]
        )
        backends.add(raw.headers["x-drover-backend"])
        assert raw.parse().choices[0].message.content
    # Idle backends share the work: ties between them are broken in turn.
    assert backends == {"studio-1", "studio-2"}


def test_a_model_not_loaded_yet_is_loaded_and_answers(client):
    # chat-c is on studio-2's disk, not in memory: LM Studio loads it on demand.
    raw = client.chat.completions.with_raw_response.create(model="chat-c", messages=MESSAGES)
    assert raw.headers["x-drover-backend"] == "studio-2"
    assert raw.parse().choices[0].message.content


def test_chat_stream(client):
    stream = client.chat.completions.create(model="chat-a", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert len(chunks) >= OUTPUT_TOKENS, f"only {len(chunks)} chunks"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1, "chunks of one answer share its id"
    assert all(c.model == "chat-a" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == OUTPUT_TOKENS
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked for"


def test_chat_stream_is_the_same_answer_as_without_streaming(client):
    prompt = [{"role": "user", "content": "Compare streamed and not."}]
    whole = client.chat.completions.create(model="chat-b", messages=prompt).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="chat-b", messages=prompt, stream=True)
        if c.choices
    )
    assert streamed == whole


def test_chat_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model="chat-a", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    last = chunks[-1]
    assert last is usage_chunks[0], "the usage chunk comes last"
    assert last.choices == []
    assert last.usage.completion_tokens == OUTPUT_TOKENS
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + OUTPUT_TOKENS


def test_chat_stream_headers(client):
    with client.chat.completions.with_streaming_response.create(
        model="chat-b", messages=MESSAGES, stream=True
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-drover-backend"] == "studio-1"
        assert resp.headers["x-request-id"].strip()
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
