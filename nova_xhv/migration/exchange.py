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

``POST /stage``, ``GET /stage/<key>``, ``DELETE /stage/<key>``, ``GET /ping``
    Control requests from other computes, signed with the shared
    ``[xhv] exchange_secret`` (nova_xhv.migration.signing), handed to a
    handler object (nova_xhv.migration.stager.Stager on a destination).
"""

import base64
import hmac
import http.server
import itertools
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.parse

from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova_xhv import disk as xhv_disk
from nova_xhv.migration import signing

LOG = logging.getLogger(__name__)

CHUNK = 1024 * 1024
MAX_CONTROL_BODY = 1024 * 1024
_RANGE = re.compile(r'^bytes=(\d*)-(\d*)$')
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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'XHV-exchange/1'

    def log_message(self, fmt, *args):
        LOG.debug('exchange %s: ' + fmt, self.client_address[0], *args)

    # -- plumbing ----------------------------------------------------------

    def _send(self, status, body=b'', content_type='application/json',
              headers=None):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != 'HEAD':
            self.wfile.write(body)

    def _send_json(self, status, data, headers=None):
        self._send(status, jsonutils.dump_as_bytes(data), headers=headers)

    def _error(self, status, message, headers=None):
        self._send_json(status, {'error': message}, headers=headers)

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

    def _serve_disk(self, disk_id):
        reader = self._disk_reader(disk_id)
        if reader is None:
            return self._error(401, 'unknown disk or bad token', {
                'WWW-Authenticate': 'Basic realm="xhv-exchange"'})
        size = reader.size
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get('Range')
        if wanted:
            match = _RANGE.match(wanted.strip())
            if not match or match.groups() == ('', ''):
                return self._error(416, 'one byte range, please')
            first, last = match.groups()
            if first == '':
                start, end = max(size - int(last), 0), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                return self._error(416, 'range outside the disk', {
                    'Content-Range': 'bytes */%d' % size})
            status = 206
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
        self.send_response(status)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Accept-Ranges', 'bytes')
        self.send_header('Content-Length', str(length))
        if status == 206:
            self.send_header('Content-Range',
                             'bytes %d-%d/%d' % (start, end, size))
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

    def _control(self):
        length = int(self.headers.get('Content-Length') or 0)
        if length > MAX_CONTROL_BODY:
            return self._error(413, 'request too large')
        body = self.rfile.read(length) if length else b''
        try:
            self.server.verifier.verify(self.command, self.path,
                                        self.headers, body)
        except signing.SignatureError as error:
            LOG.warning('Refused exchange request %s %s from %s: %s',
                        self.command, self.path, self.client_address[0],
                        error)
            return self._error(401, str(error))
        handler = self.server.control_handler
        try:
            data = jsonutils.loads(body) if body else {}
            if self.path == '/ping':
                return self._send_json(200, {'pong': True})
            if handler is None:
                raise ControlError(reason='this compute stages nothing',
                                   status=404)
            if self.command == 'POST' and self.path == '/stage':
                return self._send_json(202, handler.stage_start(data))
            match = _STAGE_PATH.match(self.path)
            if match and self.command == 'GET':
                return self._send_json(200,
                                       handler.stage_status(match.group(1)))
            if match and self.command == 'DELETE':
                return self._send_json(200,
                                       handler.stage_discard(match.group(1)))
            raise ControlError(reason='no such call: %s %s'
                               % (self.command, self.path), status=404)
        except ControlError as error:
            return self._error(error.status, str(error))
        except ValueError as error:
            return self._error(400, 'bad request: %s' % error)
        except Exception as error:
            LOG.exception('Exchange request %s %s failed', self.command,
                          self.path)
            return self._error(500, '%s: %s' % (type(error).__name__, error))

    # -- dispatch ----------------------------------------------------------

    def _dispatch(self):
        path = urllib.parse.urlsplit(self.path).path
        match = _DISK_PATH.match(path)
        if match and self.command in ('GET', 'HEAD'):
            return self._serve_disk(match.group(1))
        match = _DIRECT_PATH.match(path)
        if match and self.command == 'POST':
            return self._direct_read(match.group(1))
        return self._control()

    do_GET = do_HEAD = do_POST = do_DELETE = _dispatch


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Seconds a connection may stay silent (qemu's curl driver keeps its
    # connections open between reads).
    connection_timeout = 300

    def __init__(self, address, ssl_context, publisher, verifier,
                 control_handler):
        family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)
        self.ssl_context = ssl_context
        self.publisher = publisher
        self.verifier = verifier
        self.control_handler = control_handler
        self._bytes_lock = threading.Lock()
        self.bytes_served = 0
        self._stopping = threading.Event()

    def serve(self):
        """Accept connections until ``stop_serving``.

        Not socketserver's serve_forever: it waits in a selector class
        bound when socketserver was imported, which under eventlet may be
        the unpatched one and would block every green thread.  A blocking
        accept with a short timeout works with native and green threads.
        """
        self.socket.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                request, client_address = self.socket.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            request.settimeout(self.connection_timeout)
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)
        self.server_close()

    def stop_serving(self):
        self._stopping.set()

    def count_bytes(self, count):
        with self._bytes_lock:
            self.bytes_served += count

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, so a slow
        # client never blocks the accept loop.
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request,
                                                       server_side=True)
            except (ssl.SSLError, OSError) as error:
                LOG.debug('TLS handshake with %s failed: %s',
                          client_address[0], error)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        LOG.debug('exchange connection from %s ended with an error',
                  client_address[0], exc_info=True)


class ExchangeServer(object):
    """The endpoint of one compute; ``start()`` it, ``stop()`` it."""

    def __init__(self, secret, bind_host='0.0.0.0', port=0,
                 advertise_host=None, use_tls=True, cert_file=None,
                 key_file=None, token_ttl=86400, clock_skew=300,
                 control_handler=None):
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

    @property
    def bytes_served(self):
        return self._server.bytes_served if self._server else 0

    def start(self):
        try:
            self._server = _Server(self._bind, self._ssl_context,
                                   self.publisher, self.verifier,
                                   self.control_handler)
        except OSError as error:
            raise ExchangeConfigError(
                reason='cannot listen on %s:%d ([xhv] exchange_bind_host / '
                'exchange_port): %s' % (self._bind[0], self._bind[1],
                                        error))
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
