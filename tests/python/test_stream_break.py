"""A backend that dies part-way through an answer: the client must get an
error, never an answer that looks complete but is cut short."""

import openai
import pytest

from conftest import fleet_fixture, start_fleet

MESSAGES = [{"role": "user", "content": "this will not end well"}]


def test_chat_stream_broken_mid_way_raises_api_error(breaking_fleet):
    got = []
    with breaking_fleet.client() as client:
        stream = client.chat.completions.create(model="flaky", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as e:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    got.append(chunk.choices[0].delta.content)
    err = e.value
    # Raised from the stream's error event, not from an HTTP status.
    assert not isinstance(err, openai.APIStatusError), repr(err)
    assert "stream broke" in err.message, err.message
    assert err.code == "upstream_error"
    assert err.type == "server_error"
    # It broke mid-way: some tokens arrived, but not all 16.
    assert 0 < len(got) < 16, got


def test_completion_stream_broken_mid_way_raises_api_error(breaking_fleet):
    got = []
    with breaking_fleet.client() as client:
        with pytest.raises(openai.APIError) as e:
            for chunk in client.completions.create(model="flaky", prompt="x", stream=True):
                got.extend(c.text for c in chunk.choices)
    assert not isinstance(e.value, openai.APIStatusError), repr(e.value)
    assert e.value.code == "upstream_error"
    assert 0 < len(got) < 16, got


def test_unstreamed_answer_broken_before_its_body_is_a_server_error(breaking_fleet):
    # Nothing reached the client yet, so the hub would retry, but there is
    # no other backend: it answers 502 rather than an empty 200.
    with breaking_fleet.client() as client, pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="flaky", messages=MESSAGES)
    assert e.value.status_code == 502
    assert e.value.code == "upstream_error"


@pytest.fixture
def default_hub_before_a_breaking_server(tmp_path_factory):
    """As breaking_fleet, with the hub's default breaker (3 failures)."""
    sims = {"flaky-1": ["--models", "flaky", "--loaded", "flaky", "--slots", "4", "--close-mid-stream-rate", "1"]}
    yield from fleet_fixture(start_fleet(tmp_path_factory.mktemp("breaker"), sims, expect={"flaky": {"flaky-1"}}))


def test_one_failed_request_does_not_open_the_breaker_by_itself(default_hub_before_a_breaking_server):
    fleet = default_hub_before_a_breaking_server
    with fleet.client() as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="flaky", messages=MESSAGES)
        assert first.value.code == "upstream_error"
        # The backend still answers its probes. The next request should be
        # tried there (and break again: 502), not refused for a breaker that
        # a single request opened (503 no_healthy_backend).
        with pytest.raises(openai.InternalServerError) as second:
            client.chat.completions.create(model="flaky", messages=MESSAGES)
        assert second.value.code == "upstream_error", second.value.message
