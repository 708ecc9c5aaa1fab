"""Security headers on every response: what a browser may load, frame or send along.

The UI is plain ES modules, a stylesheet and images (uploaded ones arrive as `blob:` URLs, fetched
with the token); nothing is inline, so the policy allows only this origin. Styles a script sets go
through CSSOM (`element.style`), which the policy permits, never through a `style` attribute.
`frame-ancestors 'none'` (and `X-Frame-Options` for older browsers) stops click-jacking;
`Referrer-Policy: no-referrer` keeps session ids in URLs from leaking to other sites.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
