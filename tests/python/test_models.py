"""GET /v1/models and /v1/models/{id} through the openai client."""

import openai
import pytest


def test_list_is_the_union_of_the_fleet_with_each_model_once(client):
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids)), f"a model is listed twice: {ids}"
    assert sorted(ids) == ["chat-a", "chat-b", "chat-c", "embed-small"]
    for m in models:
        assert m.object == "model"
        assert isinstance(m.created, int) and m.created > 0
        assert m.owned_by


def test_list_says_which_backends_serve_each_model(client):
    models = {m.id: m for m in client.models.list()}
    where = {id: {b["backend"] for b in m.model_extra["backends"]} for id, m in models.items()}
    assert where == {
        "chat-a": {"studio-1", "studio-2"},
        "chat-b": {"studio-1"},
        "chat-c": {"studio-2"},
        "embed-small": {"studio-1", "studio-2"},
    }
    for b in models["chat-b"].model_extra["backends"]:
        assert b["state"] == "loaded"
        assert b["slots"] == 2


def test_retrieve_one_model(client):
    m = client.models.retrieve("chat-b")
    assert m.id == "chat-b"
    assert m.object == "model"
    assert [b["backend"] for b in m.model_extra["backends"]] == ["studio-1"]


def test_retrieve_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert "no-such-model" in e.value.message

