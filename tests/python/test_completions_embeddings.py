"""POST /v1/completions and /v1/embeddings through the openai client."""

import math

from conftest import EMBEDDING_DIMS, OUTPUT_TOKENS


def test_completion(client):
    raw = client.completions.with_raw_response.create(model="chat-b", prompt="Once upon a time")
    assert raw.headers["x-drover-backend"] == "studio-1"
    done = raw.parse()
    assert done.object == "text_completion"
    assert done.model == "chat-b"
    assert len(done.choices[0].text.split()) == OUTPUT_TOKENS
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == OUTPUT_TOKENS
    assert done.usage.prompt_tokens > 0


def test_completion_stream(client):
    chunks = list(client.completions.create(model="chat-a", prompt="Once upon a time", stream=True))
    assert len(chunks) >= OUTPUT_TOKENS
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert len(text.split()) == OUTPUT_TOKENS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_completion_stream_matches_the_whole_answer(client):
    whole = client.completions.create(model="chat-b", prompt="A tale of two hubs").choices[0].text
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model="chat-b", prompt="A tale of two hubs", stream=True)
    )
    assert streamed == whole


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_embedding_of_one_input(client):
    raw = client.embeddings.with_raw_response.create(model="embed-small", input="hello world")
    assert raw.headers["x-drover-backend"] in {"studio-1", "studio-2"}
    result = raw.parse()
    assert result.model == "embed-small"
    assert len(result.data) == 1
    item = result.data[0]
    assert item.index == 0
    assert len(item.embedding) == EMBEDDING_DIMS
    assert all(isinstance(x, float) for x in item.embedding)
    assert abs(_norm(item.embedding) - 1.0) < 1e-3
    assert result.usage.prompt_tokens == 2


def test_embeddings_of_several_inputs(client):
    inputs = ["the first", "the second one", "a third"]
    result = client.embeddings.create(model="embed-small", input=inputs)
    assert [d.index for d in result.data] == [0, 1, 2]
    vectors = [tuple(d.embedding) for d in result.data]
    assert all(len(v) == EMBEDDING_DIMS for v in vectors)
    assert len(set(vectors)) == 3, "different inputs, different vectors"
    # The same text gives the same vector, alone or in a batch.
    alone = client.embeddings.create(model="embed-small", input="the second one").data[0].embedding
    assert [round(x, 5) for x in alone] == [round(x, 5) for x in vectors[1]]


def test_embeddings_as_floats_when_asked(client):
    result = client.embeddings.create(model="embed-small", input="plain floats", encoding_format="float")
    assert len(result.data[0].embedding) == EMBEDDING_DIMS
