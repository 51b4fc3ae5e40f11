"""HTTPS requests for disk data (datastore file API, NFC leases).

Plain ``http.client`` with the session's TLS context: the same
verification as the API calls, streaming in both directions, and no
dependency on the HTTP stack Nova's test harness intercepts.
"""

import http.client
import urllib.parse

CHUNK = 1024 * 1024
# http.client sends a file body in reads of ``blocksize`` bytes (default
# 8 KiB): 131,072 TLS records and system calls per GiB, each a trip
# through the GIL.  With 1 MiB an NFC upload of 1 GiB into vcsim took
# 2.3-2.6 s instead of 2.6-4.1 s, level with curl (doc/source/
# translation.rst).
SEND_BLOCK = 1024 * 1024


class Response:
    """Status, headers and a streaming body; close() when done."""

    def __init__(self, conn, resp):
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason

    def iter_content(self, size=CHUNK):
        while True:
            block = self._resp.read(size)
            if not block:
                return
            yield block

    def read(self):
        return self._resp.read()

    def header(self, name):
        return self._resp.getheader(name)

    def close(self):
        self._resp.close()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_path(url):
    """What an HTTP request line names for ``url``: path and query."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.path + ('?' + parsed.query if parsed.query else '')


def connect(session, url, timeout=None):
    """(connection, request path) for ``url`` on the vSphere endpoint.

    TLS is verified as for the API calls.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != 'https':
        msg = 'refusing a non-HTTPS disk URL: %s' % url
        raise ValueError(msg)
    conn = http.client.HTTPSConnection(
        parsed.hostname, parsed.port or 443, timeout=timeout,
        context=session.ssl_context(), blocksize=SEND_BLOCK)
    return conn, request_path(url)


def request(session, method, url, body=None, headers=None, timeout=None):
    """Send one request to the vSphere endpoint and return a Response."""
    conn, path = connect(session, url, timeout)
    all_headers = {'Cookie': session.cookie}
    all_headers.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=all_headers)
        return Response(conn, conn.getresponse())
    except BaseException:
        conn.close()
        raise
