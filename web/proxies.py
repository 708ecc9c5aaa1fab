"""Which proxy headers to believe: `BOOCODE_TRUSTED_PROXIES` reverse proxies in front of us.

With N > 0, werkzeug's ProxyFix takes the client address, scheme, host and port from the last N
values of `X-Forwarded-For`, `-Proto`, `-Host` and `-Port`, which those proxies must set. Then a
request that reached the proxy over TLS is `https` here, so cookies are issued `Secure`, and the
sign-in throttle counts the real client's address. With 0 (the default) those headers are ignored:
anyone could send them.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def trust_proxies(app: Flask, count: int) -> None:
    if count > 0:
        # Flask's documented way to add WSGI middleware; its stubs declare wsgi_app a method
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count,  # type: ignore[method-assign]
                                x_port=count)
