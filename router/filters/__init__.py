"""Template filters: the heavy canonical → upstream conversions, one module per upstream codec.

Each module's ``FILTERS`` belongs to its upstream codec (``router.upstream_codecs.<name>.CODEC``); the
registry collects them all for the template environment (``router.registry.template_filters``).
"""
