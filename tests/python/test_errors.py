"""Errors reach the openai client as its own exception classes, with the
OpenAI error body's code."""

import openai
import pytest

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_in_chat_is_not_found(client, stream):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=stream)
    err = e.value
    assert err.status_code == 404
    assert err.code == "model_not_found"
    assert err.type == "invalid_request_error"
    assert err.param == "model"
    assert "no-such-model" in err.message
    assert err.response.headers["x-request-id"].strip()


def test_unknown_model_in_completions_and_embeddings_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="x")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="no-such-model", input="x")
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("model", ["", "   ", None])
def test_empty_model_is_a_bad_request(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert e.value.status_code == 400
    assert e.value.code == "missing_required_parameter"
    assert e.value.param == "model"


def test_missing_model_is_a_bad_request(client):
    # The typed methods insist on a model; the client's generic post does not.
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/chat/completions", body={"messages": MESSAGES}, cast_to=object)
    assert e.value.code == "missing_required_parameter"
    assert e.value.param == "model"


def test_bad_priority_header_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat-a", messages=MESSAGES, extra_headers={"x-drover-priority": "high"})
    assert e.value.code == "invalid_priority"


def test_unknown_path_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.post("/no/such/endpoint", body={"model": "chat-a"}, cast_to=object)
