"""A scriptable fake upstream speaking Gemini, OpenAI and Anthropic (standalone: aiohttp + orjson).

Replies are deterministic (derived from the last user message), streams are chunked on demand,
and faults are scripted per API key through ``POST /_sim/faults``; ``GET /_sim/requests`` shows
which key served which attempt.

    async with SimServer(port=0, chunks=4) as sim:
        client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k")
"""

from __future__ import annotations

from router.sim.app import SimServer, create_app, run

__all__ = ["SimServer", "create_app", "run"]
