"""HMAC signatures of control requests between XHV computes.

A request carries ``X-XHV-Date`` (unix seconds), ``X-XHV-Nonce`` and
``X-XHV-Signature`` = hex HMAC-SHA256 over method, path, date, nonce and
the SHA-256 of the body, keyed with ``[xhv] exchange_secret``.  The
receiver refuses a wrong signature, a date outside the allowed clock skew,
and a nonce it has already seen within that window (replay).
"""

import hashlib
import hmac
import secrets
import threading
import time

DATE_HEADER = 'X-XHV-Date'
NONCE_HEADER = 'X-XHV-Nonce'
SIGNATURE_HEADER = 'X-XHV-Signature'


class SignatureError(Exception):
    """A control request that must be refused (HTTP 401)."""

    def __init__(self, reason):
        super().__init__(reason)


def _digest(secret, method, path, date, nonce, body):
    if not secret:
        raise SignatureError(reason='no [xhv] exchange_secret configured')
    message = '\n'.join((method.upper(), path, str(date), nonce,
                         hashlib.sha256(body or b'').hexdigest()))
    return hmac.new(secret.encode('utf-8'), message.encode('utf-8'),
                    hashlib.sha256).hexdigest()


def sign(secret, method, path, body=b'', now=None):
    """Headers that authenticate one request."""
    date = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {DATE_HEADER: str(date), NONCE_HEADER: nonce,
            SIGNATURE_HEADER: _digest(secret, method, path, date, nonce,
                                      body)}


class Verifier(object):
    """Checks signatures and remembers nonces for the skew window."""

    def __init__(self, secret, clock_skew=300):
        self._secret = secret
        self._skew = clock_skew
        self._seen = {}
        self._lock = threading.Lock()

    def verify(self, method, path, headers, body, now=None):
        now = time.time() if now is None else now
        try:
            date = int(headers.get(DATE_HEADER, ''))
        except ValueError:
            raise SignatureError(
                reason='missing or malformed %s' % DATE_HEADER)
        nonce = headers.get(NONCE_HEADER) or ''
        given = headers.get(SIGNATURE_HEADER) or ''
        if not nonce or not given:
            raise SignatureError(reason='unsigned request')
        if abs(now - date) > self._skew:
            raise SignatureError(reason='request date is %d s away from this '
                                 'host\'s clock (allowed: %d s); sync the '
                                 'clocks (NTP)' % (now - date, self._skew))
        expected = _digest(self._secret, method, path, date, nonce, body)
        if not hmac.compare_digest(expected, given):
            raise SignatureError(reason='bad signature: check that every XHV '
                                 'compute has the same [xhv] '
                                 'exchange_secret')
        with self._lock:
            for old, expires in list(self._seen.items()):
                if expires < now:
                    del self._seen[old]
            if nonce in self._seen:
                raise SignatureError(reason='replayed request')
            self._seen[nonce] = now + 2 * self._skew
