"""The status page (``/status``): a static shell served to anyone, and the live view behind the admin key.

``traffic``: the per-second traffic aggregator the metrics feed once per request; ``view``: the JSON
``GET /admin/status`` answers; ``page``: the endpoints; ``static/``: the page's HTML, CSS and script
(no build step, no third-party code), read through importlib.resources.
"""
