"""The coding agents' APIs through drover, with their official clients
(pinned): the OpenAI Responses API (`openai`, as Codex CLI and the Agents
SDK use it) and the Anthropic Messages API (`anthropic`, as Claude Code
uses it), plain and streamed, against the real llama.cpp server."""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import CLIENT_TIMEOUT


@pytest.fixture
def oa(llama_fleet):
    with openai.OpenAI(base_url=llama_fleet.url + "/v1", api_key="anything", max_retries=0, timeout=CLIENT_TIMEOUT) as c:
        yield c


@pytest.fixture
def ant(llama_fleet):
    # The anthropic client adds /v1 itself and sends its key as x-api-key.
    with anthropic.Anthropic(base_url=llama_fleet.url, api_key="anything", max_retries=0, timeout=CLIENT_TIMEOUT) as c:
        yield c


def test_responses_plain(oa, llama_fleet):
    r = oa.responses.create(model=llama_fleet.model, input="Say hi", max_output_tokens=8)
    assert r.id.startswith("resp")
    assert r.output, r
    assert isinstance(r.output_text, str)


def test_responses_streamed(oa, llama_fleet):
    # The raw event stream: the client's accumulating `responses.stream`
    # helper needs `content_index` on text deltas, which this llama-server
    # build leaves out (direct to it, the helper fails the same way).
    kinds = []
    completed = None
    for event in oa.responses.create(model=llama_fleet.model, input="Say hi", max_output_tokens=8, stream=True):
        kinds.append(event.type)
        if event.type == "response.completed":
            completed = event.response
    assert "response.created" in kinds
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed", kinds
    assert completed is not None and completed.id.startswith("resp")


def test_messages_plain(ant, llama_fleet):
    m = ant.messages.create(
        model=llama_fleet.model,
        max_tokens=8,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.content and m.content[0].type == "text"
    assert m.usage.output_tokens >= 1


def test_messages_streamed(ant, llama_fleet):
    # This llama-server build leaves out `message_start` in about one
    # stream in five (seen direct to it); the SDK's stream helper, which
    # Claude Code's kind of client uses, fails without it. Through drover
    # every stream opens with one: twenty in a row, with the helper.
    for i in range(20):
        with ant.messages.stream(
            model=llama_fleet.model,
            max_tokens=8,
            messages=[{"role": "user", "content": f"Hi {i}"}],
        ) as stream:
            kinds = [event.type for event in stream]
            message = stream.get_final_message()
        assert kinds[0] == "message_start", kinds
        assert kinds[-1] == "message_stop", kinds
        assert message.role == "assistant"
        assert message.usage.output_tokens >= 1


def test_messages_count_tokens(ant, llama_fleet):
    n = ant.messages.count_tokens(model=llama_fleet.model, messages=[{"role": "user", "content": "Hello there"}])
    assert n.input_tokens > 0


def test_messages_errors_are_anthropic_errors(ant):
    with pytest.raises(anthropic.NotFoundError) as e:
        ant.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 404
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"


# The same clients through drover to simulated LM Studio servers (two of
# them serve chat-a): stored responses must be continued on the server that
# holds them, whichever that is.


@pytest.fixture
def sim_oa(fleet):
    with fleet.client() as c:
        yield c


@pytest.fixture
def sim_ant(fleet):
    with anthropic.Anthropic(base_url=fleet.url, api_key="anything", max_retries=0, timeout=CLIENT_TIMEOUT) as c:
        yield c


def test_sim_responses_continue_where_they_are_stored(sim_oa):
    for _ in range(8):
        first = sim_oa.responses.create(model="chat-a", input="start a conversation")
        second = sim_oa.responses.create(model="chat-a", input="go on", previous_response_id=first.id)
        third = sim_oa.responses.create(model="chat-a", input="and on", previous_response_id=second.id)
        assert third.status == "completed"


def test_sim_responses_stream_with_the_accumulating_helper(sim_oa):
    with sim_oa.responses.stream(model="chat-a", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text


def test_sim_messages_plain_and_streamed(sim_ant):
    m = sim_ant.messages.create(model="chat-a", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text
    with sim_ant.messages.stream(model="chat-a", max_tokens=4, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == final.content[0].text
    assert final.stop_reason == "max_tokens"
