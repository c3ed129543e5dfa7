"""settings.CONTENT_SECURITY_POLICY: every page but the developer's (which sets its own,
stricter one) gets this policy: scripts and styles from our own static files only (style
attributes allowed: the admin and the email preview use them), images also as data:
URIs, no framing, forms posted back to us alone."""

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
