"""Client codecs: one module per client API (the contract is :class:`router.codecs.ClientCodec`).

Each public module ends with its ``CODEC`` record (and the family's first module with its
``FAMILY``); :mod:`router.registry` lists them. Modules starting with ``_`` are their helpers.
"""
