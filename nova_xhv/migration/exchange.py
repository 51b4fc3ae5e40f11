"""The exchange endpoint every XHV nova-compute serves.

One small HTTP(S) server per compute, in a background thread (a native
thread when nova-compute runs on threads, a green thread under eventlet:
it is built on the standard library, which eventlet patches).  It serves:

``GET|HEAD /disks/<disk id>``
    An exported disk, readable with Range requests (qemu's curl driver on
    the destination reads it this way).  HTTP Basic authentication with
    the disk id as user name and a per-disk one-time token as password:
    the token opens that one disk for one move and is revoked as soon as
    the destination staged it or the move was rolled back (or after
    ``[xhv] exchange_token_ttl``).

``POST /stage``, ``GET /stage/<key>``, ``DELETE /stage/<key>``,
``POST /originals``, ``POST /volumes``, ``GET /ping``
    Control requests from other computes, signed with the shared
    ``[xhv] exchange_secret`` for this endpoint's ``host:port``
    (nova_xhv.migration.signing), handed to a handler object
    (nova_xhv.migration.destination_side.DestinationStager on a destination).

Anything may connect, so requests are read strictly and within bounds
(nova_xhv.migration.http_request: a 4xx for every malformed one, the body
framing checked before a byte of it is read), under deadlines, and within
a global and a per-client connection cap (Limits); the accept loop sheds
connections past the caps without starting a thread for them.
"""

import _socket
import base64
import collections
import hmac
import http.server
import io
import itertools
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time

from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova_xhv import disk as xhv_disk
from nova_xhv.migration import http_request
from nova_xhv.migration import signing

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024
READ_BUFFER = 64 * 1024
MAX_CONTROL_BODY = 1024 * 1024
METHODS = ('GET', 'HEAD', 'POST', 'DELETE')
# The accept loop wakes this often to reap connections past deadline.
ACCEPT_TICK = 0.2
REAP_GRACE = 1.0
SHED_ANSWER = (b'HTTP/1.1 503 Service Unavailable\r\n'
               b'Content-Type: application/json\r\nContent-Length: 47\r\n'
               b'Retry-After: 1\r\nConnection: close\r\n\r\n'
               b'{"error": "too many connections, retry later"}\n')
# At most 19 digits: a larger number is no position on any disk.
_RANGE = re.compile(r'^bytes=(\d{0,19})-(\d{0,19})$')
_DISK_PATH = re.compile(r'^/disks/([A-Za-z0-9_-]{8,64})$')
_DIRECT_PATH = re.compile(r'^/disks/([A-Za-z0-9_-]{8,64})/direct$')
_STAGE_PATH = re.compile(r'^/stage/([A-Za-z0-9_.-]{1,128})$')


class ExchangeConfigError(Exception):
    """The endpoint cannot start as configured."""

    def __init__(self, reason):
        super().__init__(reason)


class ControlError(Exception):
    """A control request the handler refuses; becomes an HTTP error."""

    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.status = status


class _Publication(object):
    def __init__(self, reader, token, expires):
        self.reader = reader
        self.token = token
        self.expires = expires


class DiskPublisher(object):
    """Which exported disks are readable, with which token."""

    def __init__(self, ttl):
        self._ttl = ttl
        self._lock = threading.Lock()
        self._disks = {}

    def publish(self, source, ttl=None):
        """Open a disk for one move: returns (disk id, token).

        :param source: a local file path or a nova_xhv.disk.DiskReader
            (a backend's view of a disk where it is stored).  A reader is
            closed when its publication is revoked.
        """
        if isinstance(source, str):
            try:
                source = xhv_disk.LocalFileReader(source)
            except ValueError as error:
                raise ExchangeConfigError(reason='cannot publish: %s' % error)
        disk_id = secrets.token_urlsafe(18)
        token = secrets.token_urlsafe(32)
        expires = time.monotonic() + (ttl or self._ttl)
        with self._lock:
            self._disks[disk_id] = _Publication(source, token, expires)
        return disk_id, token

    def revoke(self, disk_id):
        with self._lock:
            entry = self._disks.pop(disk_id, None)
        if entry is not None:
            _close_quietly(entry.reader)
        return entry is not None

    def lookup(self, disk_id, token):
        expired = None
        with self._lock:
            entry = self._disks.get(disk_id)
            if entry is not None and entry.expires < time.monotonic():
                expired = self._disks.pop(disk_id)
                entry = None
        if expired is not None:
            _close_quietly(expired.reader)
        if entry is None or not hmac.compare_digest(
                entry.token.encode(), (token or '').encode()):
            return None
        return entry.reader


def _close_quietly(reader):
    try:
        reader.close()
    except Exception:
        LOG.debug('closing %r failed', reader, exc_info=True)


class Limits(object):
    """What one client, and all together, may hold of the endpoint.

    Seconds: ``header_timeout`` from connecting (TLS handshake included)
    to the end of the request headers; ``body_timeout`` to receive a
    control body; ``idle_timeout`` between two requests of a kept-alive
    connection and for each read or write once a request is answered.
    """

    def __init__(self, header_timeout=10.0, body_timeout=30.0,
                 idle_timeout=300.0, max_connections=256,
                 max_connections_per_client=64):
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client


class _SocketWriter(object):
    """``wfile``: every write waits at most the idle timeout per send."""

    def __init__(self, sock, idle_timeout):
        self._sock = sock
        self._idle_timeout = idle_timeout

    def write(self, data):
        self._sock.settimeout(self._idle_timeout)
        self._sock.sendall(data)
        return len(data)

    def flush(self):
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection: requests read by http_request, answered here.

    Any request that is refused (4xx/5xx) closes the connection, so only
    a client that got what it asked for may keep one open and idle.
    """

    protocol_version = 'HTTP/1.1'
    server_version = 'XHV-exchange/1'

    def __init__(self, request, client_address, server, deadline):
        self.deadline = deadline
        self._keep_alive = False
        self._responded = False
        super().__init__(request, client_address, server)

    def setup(self):
        self.connection = self.request
        self.rfile = io.BufferedReader(
            http_request.DeadlineReader(self.request, self.deadline),
            READ_BUFFER)
        self.wfile = _SocketWriter(self.request,
                                   self.server.limits.idle_timeout)

    def finish(self):
        self.rfile.close()

    def log_message(self, fmt, *args):
        LOG.debug('exchange %s: ' + fmt, self.client_address[0], *args)

    def version_string(self):
        return self.server_version

    def send_response(self, code, message=None):
        self._responded = True
        super().send_response(code, message)

    def handle(self):
        limits = self.server.limits
        timeout = limits.header_timeout
        while True:
            self.deadline.arm(timeout)
            if not self._handle_one():
                return
            timeout = limits.idle_timeout

    def _handle_one(self):
        """Read and answer one request; False: close the connection."""
        self.close_connection = True
        self._responded = False
        self.command = None
        self.request_version = 'HTTP/1.1'
        self.requestline = '-'
        try:
            try:
                request = http_request.read_request(self.rfile, METHODS)
                if request is None:
                    return False  # the client left between requests
                self.command, self.path = request.method, request.target
                self.request_version = request.version
                self.requestline = '%s %s %s' % (
                    request.method, request.target[:200], request.version)
                self.headers = request.headers
                self._keep_alive = (
                    request.version == 'HTTP/1.1' and 'close' not in
                    (request.headers.get('Connection') or '').lower())
                self._route(request)
            except http_request.Refusal as refusal:
                LOG.debug('exchange: refused %r from %s: %d %s',
                          self.requestline, self.client_address[0],
                          refusal.status, refusal.reason)
                self._error(refusal.status, refusal.reason,
                            refusal.headers)
            except socket.timeout:
                if self._responded:
                    return False  # the client stopped reading the answer
                self._error(408, 'request not received in time')
        except OSError as error:
            LOG.debug('exchange: connection from %s ended: %s',
                      self.client_address[0], error)
            return False
        except Exception:
            LOG.exception('exchange: request %r from %s failed',
                          self.requestline, self.client_address[0])
            if not self._responded:
                self._error(500, 'internal error')
            return False
        return not self.close_connection

    # -- plumbing ----------------------------------------------------------

    def _send(self, status, body=b'', content_type='application/json',
              headers=None):
        self.deadline.disarm()
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._send_connection_header(status)
        self.end_headers()
        if body and self.command != 'HEAD':
            self.wfile.write(body)

    def _send_connection_header(self, status):
        if status >= 400 or not self._keep_alive:
            self.send_header('Connection', 'close')  # sets close_connection
        else:
            self.close_connection = False

    def _send_json(self, status, data, headers=None):
        self._send(status, jsonutils.dump_as_bytes(data), headers=headers)

    def _error(self, status, message, headers=None):
        self._send_json(status, {'error': message}, headers=headers)

    def _read_body(self, length):
        self.deadline.arm(self.server.limits.body_timeout)
        try:
            return http_request.read_body(self.rfile, length)
        except socket.timeout:
            raise http_request.Refusal(408, 'request body not received in '
                                            'time')

    # -- routing -----------------------------------------------------------

    def _route(self, request):
        path, _sep, query = request.target.partition('?')
        if query or _sep:
            raise http_request.Refusal(400, 'no query parameters are '
                                            'accepted')
        length = http_request.body_length(request, MAX_CONTROL_BODY)
        match = _DISK_PATH.match(path)
        if match:
            _allow(request, ('GET', 'HEAD'))
            return self._serve_disk(match.group(1))
        match = _DIRECT_PATH.match(path)
        if match:
            _allow(request, ('POST',))
            self._read_body(length)  # nothing is asked in it
            return self._direct_read(match.group(1))
        if path == '/ping':
            _allow(request, ('GET',))
        elif path in ('/stage', '/originals', '/volumes'):
            _allow(request, ('POST',))
        elif _STAGE_PATH.match(path):
            _allow(request, ('GET', 'DELETE'))
        else:
            raise http_request.Refusal(404, 'no such path')
        if length:
            content_type = (request.headers.get('Content-Type') or '')
            if content_type.split(';')[0].strip().lower() != \
                    'application/json':
                raise http_request.Refusal(415, 'control bodies are '
                                                'application/json')
        body = self._read_body(length)
        self.deadline.disarm()
        return self._control(path, body)

    # -- disks -------------------------------------------------------------

    def _disk_reader(self, disk_id):
        header = self.headers.get('Authorization', '')
        user = token = None
        if header.startswith('Basic '):
            try:
                user, _sep, token = base64.b64decode(
                    header[6:]).decode('utf-8').partition(':')
            except (ValueError, UnicodeDecodeError):
                pass
        if user != disk_id:
            return None
        return self.server.publisher.lookup(disk_id, token)

    def _byte_range(self, size):
        """(start, end, status) of the Range asked for, or Refusal."""
        ranges = self.headers.get_all('Range') or []
        if not ranges:
            return 0, size - 1, 200
        match = _RANGE.match(ranges[0].strip()) if len(ranges) == 1 else None
        if not match or match.groups() == ('', ''):
            raise http_request.Refusal(416, 'one byte range, please', {
                'Content-Range': 'bytes */%d' % size})
        first, last = match.groups()
        if first == '':
            start, end = max(size - int(last), 0), size - 1
        else:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise http_request.Refusal(416, 'range outside the disk', {
                'Content-Range': 'bytes */%d' % size})
        return start, end, 206

    def _serve_disk(self, disk_id):
        reader = self._disk_reader(disk_id)
        if reader is None:
            return self._error(401, 'unknown disk or bad token', {
                'WWW-Authenticate': 'Basic realm="xhv-exchange"'})
        size = reader.size
        start, end, status = self._byte_range(size)
        length = end - start + 1 if size else 0
        chunks = iter(())
        if self.command != 'HEAD' and length:
            # Open before answering: a source that cannot be read gets an
            # error status instead of a truncated 200/206.
            try:
                chunks = reader.iter_range(start, end, CHUNK)
                first_chunk = next(chunks)
            except (OSError, StopIteration) as error:
                LOG.warning('exchange: cannot read %r: %s', reader, error)
                return self._error(502, 'the exported disk cannot be read')
            chunks = itertools.chain((first_chunk,), chunks)
        self.deadline.disarm()
        self.send_response(status)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Accept-Ranges', 'bytes')
        self.send_header('Content-Length', str(length))
        if status == 206:
            self.send_header('Content-Range',
                             'bytes %d-%d/%d' % (start, end, size))
        self._send_connection_header(status)
        self.end_headers()
        if self.command == 'HEAD':
            return
        self.server.count_bytes(length)
        sent = 0
        try:
            for data in chunks:
                self.wfile.write(data)
                sent += len(data)
        except (BrokenPipeError, ConnectionResetError):
            # Readers may hang up mid-range (qemu's readahead, a stream
            # repositioned by the destination): normal.
            LOG.debug('exchange: client left after %d of %d bytes', sent,
                      length)
        except OSError as error:
            LOG.warning('exchange: reading %r stopped after %d of %d bytes: '
                        '%s', reader, sent, length, error)
        if sent != length:
            # The client must not take a short body for the whole range.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone

    def _direct_read(self, disk_id):
        """A one-time credential to read the disk where it is stored."""
        reader = self._disk_reader(disk_id)
        if reader is None:
            return self._error(401, 'unknown disk or bad token', {
                'WWW-Authenticate': 'Basic realm="xhv-exchange"'})
        try:
            direct = reader.direct_read()
        except Exception as error:
            # The exchange path still works: say so, and why not direct.
            LOG.warning('exchange: no direct read of %r: %s', reader, error)
            return self._error(404, 'no direct read: %s' % error)
        if direct is None:
            return self._error(404, 'this disk is read through the exchange')
        LOG.info('exchange: handed %s a direct read of %r',
                 self.client_address[0], reader)
        return self._send_json(200, direct.to_dict())

    # -- control -----------------------------------------------------------

    def _control(self, path, body):
        try:
            self.server.verifier.verify(self.command, self.path,
                                        self.headers, body)
        except signing.SignatureError as error:
            LOG.warning('Refused exchange request %s %s from %s: %s',
                        self.command, self.path, self.client_address[0],
                        error)
            return self._error(401, str(error))
        if path == '/ping':
            return self._send_json(200, {'pong': True})
        handler = self.server.control_handler
        try:
            data = jsonutils.loads(body) if body else {}
        except (ValueError, RecursionError):
            return self._error(400, 'the body is not JSON')
        if not isinstance(data, dict):
            return self._error(400, 'the body must be a JSON object')
        try:
            if handler is None:
                raise ControlError(reason='this compute stages nothing',
                                   status=404)
            if path == '/stage':
                return self._send_json(202, handler.stage_start(data))
            if path == '/originals':
                return self._send_json(200, handler.probe_original(data))
            if path == '/volumes':
                return self._send_json(200, handler.check_volumes(data))
            key = _STAGE_PATH.match(path).group(1)
            if self.command == 'GET':
                return self._send_json(200, handler.stage_status(key))
            return self._send_json(200, handler.stage_discard(key))
        except ControlError as error:
            return self._error(error.status, str(error))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            return self._error(400, 'bad request: %s' % error)
        except Exception as error:
            LOG.exception('Exchange request %s %s failed', self.command,
                          self.path)
            return self._error(500, '%s: %s' % (type(error).__name__, error))


def _allow(request, methods):
    if request.method not in methods:
        raise http_request.Refusal(405, '%s is not served on this path'
                                   % request.method,
                                   {'Allow': ', '.join(methods)})


class _Connection(object):
    def __init__(self, sock, client, deadline):
        self.sock = sock
        self.client = client
        self.deadline = deadline


class _Server(socketserver.TCPServer):
    """Accepts, sheds over the caps, one (green) thread a connection."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, ssl_context, publisher, verifier,
                 control_handler, limits):
        family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, None)
        self.ssl_context = ssl_context
        self.publisher = publisher
        self.verifier = verifier
        self.control_handler = control_handler
        self.limits = limits
        self._lock = threading.Lock()
        self._connections = set()
        self._per_client = collections.Counter()
        self.bytes_served = 0
        self.shed = 0
        self._shed_logged = 0.0
        self._stopping = threading.Event()

    @property
    def open_connections(self):
        with self._lock:
            return len(self._connections)

    def serve(self):
        """Accept connections until ``stop_serving``.

        Not socketserver's serve_forever: it waits in a selector class
        bound when socketserver was imported, which under eventlet may be
        the unpatched one and would block every green thread.  A blocking
        accept with a short timeout works with native and green threads.
        """
        self.socket.settimeout(ACCEPT_TICK)
        while not self._stopping.is_set():
            self._reap()
            try:
                request, client_address = self.socket.accept()
            except socket.timeout:
                continue
            except OSError as error:
                if self._stopping.is_set():
                    break
                # E.g. out of file descriptors: shed until some close.
                LOG.warning('exchange: accept failed: %s', error)
                self._stopping.wait(ACCEPT_TICK)
                continue
            self._admit(request, client_address)
        self.server_close()
        with self._lock:
            left = list(self._connections)
        for connection in left:
            _shutdown(connection.sock)

    def stop_serving(self):
        self._stopping.set()

    def count_bytes(self, count):
        with self._lock:
            self.bytes_served += count

    def _admit(self, request, client_address):
        client = client_address[0]
        limits = self.limits
        with self._lock:
            full = (len(self._connections) >= limits.max_connections or
                    self._per_client[client] >=
                    limits.max_connections_per_client)
            if not full:
                deadline = http_request.Deadline(limits.idle_timeout)
                deadline.arm(limits.header_timeout)
                connection = _Connection(request, client, deadline)
                self._connections.add(connection)
                self._per_client[client] += 1
        if full:
            return self._shed(request, client)
        try:
            threading.Thread(target=self._serve_connection,
                             args=(connection, client_address),
                             name='xhv-exchange-conn', daemon=True).start()
        except RuntimeError:  # no more threads
            self._forget(connection)
            self._shed(request, client)

    def _shed(self, request, client):
        """Answer 503 without a thread and close (TLS: close)."""
        with self._lock:
            self.shed += 1
            shed = self.shed
            now = time.monotonic()
            log = now - self._shed_logged > 60
            if log:
                self._shed_logged = now
        if log:
            LOG.warning('exchange: connection caps reached ([xhv] '
                        'exchange_max_connections %d, per client %d); '
                        'shedding (last from %s, %d shed so far)',
                        self.limits.max_connections,
                        self.limits.max_connections_per_client, client, shed)
        try:
            if self.ssl_context is None:
                request.setblocking(False)
                request.send(SHED_ANSWER)
        except OSError:
            pass
        finally:
            request.close()

    def _forget(self, connection):
        with self._lock:
            self._connections.discard(connection)
            self._per_client[connection.client] -= 1
            if self._per_client[connection.client] <= 0:
                del self._per_client[connection.client]

    def _reap(self):
        """Cut connections that overstay their deadline.

        Their reader normally notices first and answers 408; this catches
        what it cannot see (a TLS handshake trickled byte by byte).
        """
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._connections
                    if c.deadline.at is not None and
                    now > c.deadline.at + REAP_GRACE]
        for connection in late:
            _shutdown(connection.sock)

    def _serve_connection(self, connection, client_address):
        try:
            sock = connection.sock
            if self.ssl_context is not None:
                # In the connection's own thread, under its deadline, so a
                # slow handshake never blocks the accept loop.
                sock = self.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False)
                connection.sock = sock
                sock.settimeout(connection.deadline.remaining())
                sock.do_handshake()
            _Handler(sock, client_address, self, connection.deadline)
        except (ssl.SSLError, OSError) as error:
            LOG.debug('exchange connection from %s ended: %s',
                      client_address[0], error)
        except Exception:
            LOG.exception('exchange connection from %s failed',
                          client_address[0])
        finally:
            self._forget(connection)
            _shutdown(connection.sock)
            try:
                connection.sock.close()
            except OSError:
                pass


def _shutdown(sock):
    """Shut a connection down from any thread, waking its reader.

    A TLS socket is shut at the socket level: ssl.SSLSocket.shutdown
    would drop its TLS state under the feet of a thread still using it.
    """
    try:
        if isinstance(sock, _socket.socket):
            _socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:  # eventlet's green socket (plain): wraps a real one
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass  # already closed


class ExchangeServer(object):
    """The endpoint of one compute; ``start()`` it, ``stop()`` it."""

    def __init__(self, secret, bind_host='0.0.0.0', port=0,
                 advertise_host=None, use_tls=True, cert_file=None,
                 key_file=None, token_ttl=86400, clock_skew=300,
                 control_handler=None, limits=None):
        if not secret:
            raise ExchangeConfigError(
                reason='set [xhv] exchange_secret (the same on every XHV '
                       'compute) to serve cross-hypervisor moves')
        self._ssl_context = None
        if use_tls:
            if not cert_file or not key_file:
                raise ExchangeConfigError(
                    reason='[xhv] exchange_use_tls is on: set '
                           'exchange_cert_file and exchange_key_file, or '
                           'switch TLS off on an isolated migration '
                           'network')
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as error:
                raise ExchangeConfigError(
                    reason='cannot load [xhv] exchange_cert_file %s / '
                    'exchange_key_file %s: %s' % (cert_file, key_file,
                                                  error))
            self._ssl_context = context
        self._bind = (bind_host, port)
        self._advertise_host = advertise_host
        self.publisher = DiskPublisher(token_ttl)
        self.verifier = signing.Verifier(secret, clock_skew)
        self.control_handler = control_handler
        self.limits = limits or Limits()
        self._server = None
        self._thread = None

    @property
    def scheme(self):
        return 'https' if self._ssl_context else 'http'

    @property
    def url(self):
        if self._server is None:
            return None
        host = self._advertise_host or self._server.server_address[0]
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        return '%s://%s:%d' % (self.scheme, host,
                               self._server.server_address[1])

    def targets(self):
        """The ``host:port`` a signed request must name to be accepted.

        The advertised address (what other computes find in this compute's
        stats) and the bound address when it is a specific one.
        """
        port = self._server.server_address[1]
        found = {signing.target_of_url(self.url)}
        if self._bind[0] not in ('', '0.0.0.0', '::'):
            found.add(signing.canonical_target(self._bind[0], port))
        return found

    @property
    def open_connections(self):
        return self._server.open_connections if self._server else 0

    @property
    def shed(self):
        return self._server.shed if self._server else 0

    @property
    def bytes_served(self):
        return self._server.bytes_served if self._server else 0

    def start(self):
        try:
            self._server = _Server(self._bind, self._ssl_context,
                                   self.publisher, self.verifier,
                                   self.control_handler, self.limits)
        except OSError as error:
            raise ExchangeConfigError(
                reason='cannot listen on %s:%d ([xhv] exchange_bind_host / '
                'exchange_port): %s' % (self._bind[0], self._bind[1],
                                        error))
        self.verifier.targets = frozenset(self.targets())
        self._thread = threading.Thread(target=self._server.serve,
                                        name='xhv-exchange', daemon=True)
        self._thread.start()
        LOG.info('XHV exchange endpoint listening at %s', self.url)
        return self.url

    def stop(self, wait=False):
        """Stop accepting; the listening socket closes within 0.2 s.

        Not waiting by default: Nova stops services from a graceful
        shutdown that should not block on us.
        """
        if self._server is None:
            return
        self._server.stop_serving()
        if wait:
            self._thread.join(10)
        self._server = None
        LOG.info('XHV exchange endpoint stopped')

    def disk_url(self, disk_id):
        return '%s/disks/%s' % (self.url, disk_id)
