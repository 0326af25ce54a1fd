"""The async client: concurrent streams through the hub, none mixed up."""

import asyncio

from conftest import OUTPUT_TOKENS

N = 6


async def _stream(client, i):
    raw = await client.chat.completions.with_raw_response.create(
        model="chat-a",
        messages=[{"role": "user", "content": f"concurrent question {i}"}],
        stream=True,
    )
    text, finish = [], []
    async for chunk in raw.parse():
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            if chunk.choices[0].finish_reason:
                finish.append(chunk.choices[0].finish_reason)
    return raw.headers["x-drover-backend"], raw.headers["x-request-id"], "".join(text), finish


def test_concurrent_async_streams(fleet, client):
    async def main():
        async with fleet.async_client() as aclient:
            return await asyncio.gather(*(_stream(aclient, i) for i in range(N)))

    results = asyncio.run(main())
    assert len({request_id for _, request_id, _, _ in results}) == N
    for i, (backend, _, text, finish) in enumerate(results):
        assert backend in {"studio-1", "studio-2"}
        assert finish == ["stop"], (i, finish)
        assert len(text.split()) == OUTPUT_TOKENS, (i, text)
        # Each stream carries its own answer, not a neighbour's: the same
        # question asked alone gets the same words.
        alone = client.chat.completions.create(
            model="chat-a", messages=[{"role": "user", "content": f"concurrent question {i}"}]
        )
        assert alone.choices[0].message.content == text, i
    assert len({text for _, _, text, _ in results}) == N, "different questions, different answers"
    assert {backend for backend, _, _, _ in results} == {"studio-1", "studio-2"}
