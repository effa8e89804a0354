"""Keeping keys out of what the gateway logs and returns: secrets blanked, URLs cut to their path."""

from __future__ import annotations

from urllib.parse import urlsplit


def loggable_url(url: str, secrets: tuple[str, ...]) -> str:
    """``scheme://host[:port]/path`` of an upstream URL, for logs: no user info and no query (either
    may carry a key, e.g. Gemini's ``?key=``), and the account's key blanked should a path hold it."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if u.port:
        host += f":{u.port}"
    return redact(f"{u.scheme}://{host}{u.path}", secrets)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s and s in text:
            text = text.replace(s, "***")
    return text
