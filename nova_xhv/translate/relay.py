"""A loopback relay for HTTPS sources signed by a private CA.

qemu 7.2's curl driver cannot be given a CA file (it only knows
``sslverify``) and libcurl ignores CA environment variables.  For a
RemoteSource with ``ca_file``, the engine starts this relay for the
duration of one conversion: it listens on 127.0.0.1 only, demands a
one-time random password (which reaches qemu-img through a secret object
like any other), and forwards HEAD and Range GET requests to the real URL
with ``requests``, verifying TLS against ``ca_file``.  The upstream
credentials stay in this process.
"""

import base64
import http.server
import secrets
import threading

import requests

from nova_xhv.translate import remote

_FORWARDED = ('Content-Length', 'Content-Range', 'Accept-Ranges',
              'Content-Type', 'Last-Modified', 'ETag')
_TIMEOUT = 60


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):
        pass

    def _reply_empty(self, status):
        self.send_response(status)
        self.send_header('Content-Length', '0')
        if status == 401:
            self.send_header('WWW-Authenticate', 'Basic realm="xhv-relay"')
        self.end_headers()

    def _forward(self, method):
        relay = self.server.relay
        if self.headers.get('Authorization') != relay.auth_header or \
                self.path != relay.path:
            return self._reply_empty(401 if self.path == relay.path else 404)
        headers = {}
        if self.headers.get('Range'):
            headers['Range'] = self.headers['Range']
        try:
            upstream = relay.session().request(
                method, relay.source.url, headers=headers, stream=True,
                timeout=_TIMEOUT, allow_redirects=True)
        except requests.RequestException:
            return self._reply_empty(502)
        with upstream:
            self.send_response(upstream.status_code)
            for name in _FORWARDED:
                if name in upstream.headers:
                    self.send_header(name, upstream.headers[name])
            self.end_headers()
            if method == 'GET':
                for chunk in upstream.raw.stream(1024 * 1024,
                                                 decode_content=False):
                    self.wfile.write(chunk)

    def do_HEAD(self):
        self._forward('HEAD')

    def do_GET(self):
        self._forward('GET')


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Relay(object):
    """Context manager yielding the RemoteSource qemu-img should read."""

    def __init__(self, source):
        self.source = source
        # requests sessions are not thread-safe: one per handler thread.
        self._local = threading.local()
        self._sessions = []
        self.path = '/' + secrets.token_urlsafe(16)
        self.username = 'xhv-relay'
        self.password = secrets.token_urlsafe(24)
        self.auth_header = 'Basic ' + base64.b64encode(
            ('%s:%s' % (self.username, self.password)).encode()).decode()
        self._server = _Server(('127.0.0.1', 0), _Handler)
        self._server.relay = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={'poll_interval': 0.1},
            name='xhv-translate-relay', daemon=True)

    def session(self):
        if not hasattr(self._local, 'session'):
            self._local.session = self.source.session()
            self._sessions.append(self._local.session)
        return self._local.session

    def __enter__(self):
        self._thread.start()
        port = self._server.server_address[1]
        return remote.RemoteSource(
            'http://127.0.0.1:%d%s' % (port, self.path), self.source.format,
            username=self.username, password=self.password)

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        for session in self._sessions:
            session.close()
        return False
