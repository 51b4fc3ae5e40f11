"""HMAC signatures of control requests between XHV computes.

A request carries ``X-XHV-Target`` (the ``host:port`` of the endpoint the
sender addresses, as in that compute's advertised exchange URL),
``X-XHV-Date`` (unix seconds), ``X-XHV-Nonce`` and ``X-XHV-Signature`` =
hex HMAC-SHA256 over method, target, path (query included), date, nonce
and the SHA-256 of the body, keyed with ``[xhv] exchange_secret``.

The receiver refuses a target other than its own (a request signed for
one compute and replayed to another), a wrong signature, a date outside
the allowed clock skew, and a nonce it has already seen within that
window (a replay to the same compute).

Since the target is signed, both ends of a move must run an XHV that
signs it (a release that does not sends no ``X-XHV-Target``: refused).
"""

import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse

TARGET_HEADER = 'X-XHV-Target'
DATE_HEADER = 'X-XHV-Date'
NONCE_HEADER = 'X-XHV-Nonce'
SIGNATURE_HEADER = 'X-XHV-Signature'
DEFAULT_PORTS = {'http': 80, 'https': 443}


class SignatureError(Exception):
    """A control request that must be refused (HTTP 401)."""

    def __init__(self, reason):
        super().__init__(reason)


def canonical_target(host, port):
    """``host:port`` as signed: lower case, IPv6 in brackets."""
    host = (host or '').strip().strip('[]').lower()
    if ':' in host:
        host = '[%s]' % host
    return '%s:%d' % (host, int(port))


def target_of_url(url):
    """The signed target of an exchange URL (``scheme://host[:port]``)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or port is None:
        raise ValueError('not an exchange URL: %s' % url)
    return canonical_target(parts.hostname, port)


def _digest(secret, method, target, path, date, nonce, body):
    if not secret:
        raise SignatureError(reason='no [xhv] exchange_secret configured')
    message = '\n'.join((method.upper(), target, path, str(date), nonce,
                         hashlib.sha256(body or b'').hexdigest()))
    return hmac.new(secret.encode('utf-8'), message.encode('utf-8'),
                    hashlib.sha256).hexdigest()


def sign(secret, method, target, path, body=b'', now=None):
    """Headers that authenticate one request to ``target`` (host:port)."""
    date = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return {TARGET_HEADER: target, DATE_HEADER: str(date),
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: _digest(secret, method, target, path, date,
                                      nonce, body)}


class Verifier(object):
    """Checks signatures and remembers nonces for the skew window."""

    def __init__(self, secret, clock_skew=300, targets=()):
        self._secret = secret
        self._skew = clock_skew
        self.targets = frozenset(targets)
        self._seen = {}
        self._lock = threading.Lock()

    def verify(self, method, path, headers, body, now=None):
        now = time.time() if now is None else now
        nonce = headers.get(NONCE_HEADER) or ''
        given = headers.get(SIGNATURE_HEADER) or ''
        target = headers.get(TARGET_HEADER) or ''
        if not nonce or not given:
            raise SignatureError(reason='unsigned request')
        if not target:
            raise SignatureError(reason='no %s header: the sender runs an '
                                 'XHV release that does not sign the '
                                 'target; upgrade both ends of the move'
                                 % TARGET_HEADER)
        if target not in self.targets:
            raise SignatureError(reason='request signed for %s, this '
                                 'endpoint is %s' % (
                                     target[:100],
                                     ', '.join(sorted(self.targets))))
        try:
            date = int(headers.get(DATE_HEADER, ''))
        except ValueError:
            raise SignatureError(
                reason='missing or malformed %s' % DATE_HEADER)
        if abs(now - date) > self._skew:
            raise SignatureError(reason='request date is %d s away from this '
                                 'host\'s clock (allowed: %d s); sync the '
                                 'clocks (NTP)' % (now - date, self._skew))
        expected = _digest(self._secret, method, target, path, date, nonce,
                           body)
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
