"""Inbound dialect codecs: one module per client API family.

Every module here exposes the same small interface (the engine looks them up by ``NAME``):

``NAME``
    handler family, e.g. ``"openai.chat"``.
``decode_request(body, params) -> CanonicalRequest``
    ``body`` is the parsed JSON (any JSON value: check its type), ``params`` the route's path
    parameters plus the query string (``{"model": ...}`` for Gemini paths). Raises
    ``router.errors.BadRequest(message, param=<field>)`` for anything malformed. Never anything else.
``encode_response(events, ctx) -> dict``
    the non-stream JSON body, built from ``router.canonical.aggregate(events)``.
``StreamEncoder(ctx)``
    ``start() -> bytes`` frames before the first event, ``feed(event) -> bytes``,
    ``finish() -> bytes`` the terminal frames, ``error(StreamError) -> bytes`` the dialect's
    mid-stream error form (also terminal).
``error_body(GatewayError) -> dict``
    the dialect's error JSON for a status/kind/message.
"""
