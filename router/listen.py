"""The listening sockets: bound once, by the process that owns the port, before anything else starts.

Binding happens before the gateway loads anything, without ``SO_REUSEPORT``: a port that is taken
fails the way it fails for any other program, with one line saying which port and how to pick
another, instead of a second gateway quietly joining the first one's port and sharing its traffic.
With ``--workers N`` the parent binds and its children inherit the sockets (see ``workers.py``).
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 128  # pending connections per socket (aiohttp's default; each server re-applies it)
ANTIGRAVITY_PORT = 8045  # the default port, which Antigravity Tools also uses


class ListenError(Exception):
    """The port or address cannot be listened on; ``str()`` is the one line shown to the operator."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for ``host:port`` (one per address ``host`` resolves to).

    ``SO_REUSEADDR`` only lets a restart reuse a port whose old connections are in TIME_WAIT; on
    Linux it never lets two live listeners share a port (that would take ``SO_REUSEPORT``).
    """
    if not 0 <= port <= 65535:
        raise ListenError(f"port {port} is not a TCP port (0-65535): pick another with --port N or server.port")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ListenError(f"cannot listen on host '{host}': {e.strerror}: change --host or server.host") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            if sockets and port == 0:  # one port for every address of the host
                addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "::" must not also claim the IPv4 port of "0.0.0.0"
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise ListenError(_explain(e, host, port)) from None
    return sockets


def _explain(e: OSError, host: str, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        also = f" ({ANTIGRAVITY_PORT} is also Antigravity Tools' port)" if port == ANTIGRAVITY_PORT else ""
        return (f"port {port} on {host} is already in use by another program or gateway{also}: "
                f"pick another with --port N or server.port")
    if e.errno == errno.EACCES:
        return (f"no permission to listen on port {port} on {host} (ports below 1024 need privileges): "
                f"pick another with --port N or server.port")
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine: change --host or server.host"
    return (f"cannot listen on port {port} on {host}: {e.strerror or e}: change --port N / server.port "
            f"or --host / server.host")


def url(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
