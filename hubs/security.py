"""Origin checks shared by negotiate (CORS) and the WebSocket handshake."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.http.request import split_domain_port

from .conf import conduit_settings


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether a request with this ``Origin`` header, made to ``host``, may connect.

    No Origin (Node, Python and .NET clients send none) is accepted: the check exists to stop
    other web pages from using a visitor's session. A browser origin is accepted when it is the
    host the request was made to, or matches ``ALLOWED_ORIGINS`` (``"*"``, an exact
    ``scheme://host[:port]``, or ``scheme://.example.com`` for a domain and its subdomains).
    """
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname:
        return False
    if host and parts.netloc.lower() == host.lower():
        return True
    for pattern in conduit_settings.ALLOWED_ORIGINS:
        if pattern == "*" or _matches(parts.scheme, parts.netloc.lower(), pattern):
            return True
    return False


def _matches(scheme: str, netloc: str, pattern: str) -> bool:
    allowed = urlsplit(pattern.lower())
    if allowed.scheme != scheme.lower():
        return False
    domain, port = split_domain_port(netloc)
    allowed_domain, allowed_port = split_domain_port(allowed.netloc)
    if allowed_port and allowed_port != port:
        return False
    if allowed_domain.startswith("."):
        return domain == allowed_domain[1:] or domain.endswith(allowed_domain)
    return domain == allowed_domain


def host_allowed(host: str | None) -> bool:
    """Whether ``host`` (a ``Host`` header) is one of ``ALLOWED_HOSTS``, as Django's
    ``HttpRequest.get_host`` decides for the requests it handles (with ``DEBUG`` and no
    ``ALLOWED_HOSTS``, the local names)."""
    from django.conf import settings
    from django.http.request import validate_host

    if not host:
        return False
    domain, _ = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)
