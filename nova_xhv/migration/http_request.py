"""Strict, bounded reading of one HTTP/1.x request on the exchange.

The exchange endpoint faces the migration network, where anything may
connect.  This reads a request under a deadline and within fixed sizes,
and turns every malformed one into a ``Refusal`` (an HTTP 4xx) before any
body byte is read:

* the request line: ``METHOD /target HTTP/1.0|1.1``, printable ASCII, at
  most MAX_REQUEST_LINE bytes (414); HTTP/0.9 and other versions: 400;
* headers: at most MAX_HEADER_BYTES in all and MAX_HEADER_COUNT lines
  (431), ``name: value`` lines with token names, no line folding (400);
* the body's framing: no Transfer-Encoding (411), exactly one decimal
  Content-Length where a body may come (411 when a POST has none, 400 when
  malformed, negative or repeated), at most a caller's cap (413).

Reads go through DeadlineReader: every ``recv`` waits at most until the
connection's current deadline, so a client that trickles bytes is cut
like one that stays silent (``socket.timeout``, answered with 408).
"""

import http.client
import io
import re
import socket
import time

MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16384
MAX_HEADER_COUNT = 64
# Empty lines tolerated before a request line (RFC 9112 section 2.2).
MAX_LEADING_EMPTY_LINES = 4

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb'^(' + _TOKEN + rb') ([\x21-\x7e]+) '
                           rb'(HTTP/[0-9]\.[0-9])\r?\n$')
_HEADER_LINE = re.compile(rb'^(' + _TOKEN + rb'):[ \t]*([^\r\n]*?)[ \t]*'
                          rb'\r?\n$')
_NOT_TEXT = re.compile(rb'[^\x20-\x7e\r]')
_LENGTH = re.compile(r'^[0-9]{1,15}$')


class Refusal(Exception):
    """A request answered with ``status`` and a short reason, then closed."""

    def __init__(self, status, reason, headers=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class Deadline(object):
    """The moment the current phase of a connection must end by.

    Shared by the connection's reader and the server's accept loop, which
    shuts down sockets that overstay it (a TLS handshake trickled byte by
    byte makes many reads inside OpenSSL, each under the socket timeout).
    """

    def __init__(self, idle_timeout):
        self.idle_timeout = idle_timeout
        self.at = None

    def arm(self, seconds):
        self.at = time.monotonic() + seconds

    def disarm(self):
        self.at = None

    def remaining(self):
        """Seconds left, None without deadline; socket.timeout when over."""
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise socket.timeout('deadline passed')
        return left


class DeadlineReader(io.RawIOBase):
    """A socket's bytes, each ``recv`` bounded by the connection deadline.

    Without a deadline (while a response is written, or a disk streamed)
    each ``recv`` waits at most the idle timeout.
    """

    def __init__(self, sock, deadline):
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self._deadline.remaining()
        self._sock.settimeout(self._deadline.idle_timeout if left is None
                              else left)
        return self._sock.recv_into(buffer)


class Request(object):
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers


def read_request(rfile, methods):
    """The next request's line and headers; None when the client left.

    :param rfile: a buffered DeadlineReader
    :param methods: the methods served (others: 405)
    :raises Refusal: malformed request (answer it, then close)
    :raises socket.timeout: the deadline passed (answer 408, then close)
    """
    line = b''
    for _attempt in range(MAX_LEADING_EMPTY_LINES + 1):
        # Binary (a TLS hello, garbage) is refused as soon as it arrives,
        # not after waiting for a line end that may never come.
        if _NOT_TEXT.search(rfile.peek(1)[:MAX_REQUEST_LINE].split(
                b'\n', 1)[0]):
            raise Refusal(400, 'malformed request line (not text)')
        line = rfile.readline(MAX_REQUEST_LINE + 1)
        if line not in (b'\r\n', b'\n'):
            break
    if not line:
        return None
    if len(line) > MAX_REQUEST_LINE or not line.endswith(b'\n'):
        if len(line) > MAX_REQUEST_LINE:
            raise Refusal(414, 'request line longer than %d bytes'
                          % MAX_REQUEST_LINE)
        raise Refusal(400, 'incomplete request line')
    match = _REQUEST_LINE.match(line)
    if not match:
        raise Refusal(400, 'malformed request line (expected "METHOD '
                      '/path HTTP/1.1")')
    method, target, version = (part.decode('ascii')
                               for part in match.groups())
    if version not in ('HTTP/1.0', 'HTTP/1.1'):
        raise Refusal(400, 'unsupported protocol version %s' % version)
    headers = _read_headers(rfile)
    if method not in methods:
        raise Refusal(405, 'method %s not allowed' % method,
                      {'Allow': ', '.join(methods)})
    if not target.startswith('/') or '#' in target:
        raise Refusal(400, 'the request target must be an absolute path')
    hosts = headers.get_all('Host') or []
    if len(hosts) > 1 or (version == 'HTTP/1.1' and not hosts):
        raise Refusal(400, 'an HTTP/1.1 request names exactly one Host')
    return Request(method, target, version, headers)


def _read_headers(rfile):
    raw = []
    used = 0
    while True:
        line = rfile.readline(MAX_HEADER_BYTES - used + 1)
        used += len(line)
        if used > MAX_HEADER_BYTES:
            raise Refusal(431, 'request headers larger than %d bytes'
                          % MAX_HEADER_BYTES)
        if not line.endswith(b'\n'):
            raise Refusal(400, 'incomplete request headers')
        if line in (b'\r\n', b'\n'):
            break
        if len(raw) >= MAX_HEADER_COUNT:
            raise Refusal(431, 'more than %d request headers'
                          % MAX_HEADER_COUNT)
        match = _HEADER_LINE.match(line)
        if not match:
            raise Refusal(400, 'malformed header line')
        raw.append(b'%s: %s\r\n' % match.groups())
    return http.client.parse_headers(io.BytesIO(b''.join(raw) + b'\r\n'))


def body_length(request, max_body):
    """Bytes of body the request announces, checked before reading any.

    :raises Refusal: 411 (transfer coding, or a POST without a length),
        400 (malformed, negative, repeated length; a body where the method
        takes none), 413 (over ``max_body``)
    """
    headers = request.headers
    if headers.get_all('Transfer-Encoding'):
        raise Refusal(411, 'Transfer-Encoding is not accepted: send the '
                      'body with a Content-Length')
    lengths = headers.get_all('Content-Length') or []
    if not lengths:
        if request.method == 'POST':
            raise Refusal(411, 'a POST needs a Content-Length')
        return 0
    if len(lengths) > 1:
        raise Refusal(400, 'more than one Content-Length')
    value = lengths[0].strip()
    if not _LENGTH.match(value):
        raise Refusal(400, 'Content-Length must be a non-negative decimal '
                      'number')
    length = int(value)
    if length > max_body:
        raise Refusal(413, 'request body larger than %d bytes' % max_body)
    if length and request.method != 'POST':
        raise Refusal(400, 'a %s request takes no body' % request.method)
    return length


def read_body(rfile, length):
    """Exactly ``length`` bytes; Refusal 400 when the client stops short."""
    body = rfile.read(length) if length else b''
    if len(body) != length:
        raise Refusal(400, 'body shorter than its Content-Length')
    return body
