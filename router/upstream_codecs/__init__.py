"""Upstream codecs: one module per provider wire format (the contract is :class:`router.codecs.UpstreamCodec`).

Each module ends with its ``CODEC`` record; :mod:`router.registry` lists them.
"""
