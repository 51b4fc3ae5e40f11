"""The xapi simulator's HTTP side: XML-RPC and the raw VDI handlers.

``python -m tests.simulators.xenapi.server`` reads one JSON line of
settings on stdin (so the password never shows in argv or the
environment)::

    {"state_dir": ..., "username": ..., "password": ...,
     "cert": ..., "key": ...,            # both or neither: HTTPS or HTTP
     "networks": [...], "srs": [...], "sr_size": ...}

prints one JSON line ``{"scheme", "port", "srs": {name: {"uuid", "dir"}},
"networks": {name: uuid}}`` once it listens on a free port of 127.0.0.1,
and serves until stdin closes.  As a service (tools/aio):
``--settings-file FILE`` reads the same settings (plus ``"port"``, 0 or
absent: a free one; ``"pool_uuid"``, the pool's uuid across restarts)
from a file only its owner reads, and serves until
SIGTERM.  SIGUSR1 invalidates every session (what a xapi restart
does).  ``<state_dir>/faults.json``, read at each request,
injects faults for tests::

    {"calls": {"VM.start": ["SR_BACKEND_FAILURE_1", "why"]},
     "import_raw_vdi": {"cut_after": 65536} | {"status": 500},
     "export_raw_vdi": {"cut_after": 65536} | {"status": 500}}

Endpoints (as xapi's): ``POST /`` (any path) XML-RPC with xapi's envelope
``{Status, Value | ErrorDescription}``; ``PUT /import_raw_vdi`` and ``GET
/export_raw_vdi`` with ``session_id``, ``vdi`` (ref or uuid) and
``format`` (raw, or vhd through real qemu-img).  Every malformed request
gets a 4xx (or a xapi failure in the envelope), never a traceback.
"""

import http.server
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid as uuidlib
import xml.parsers.expat
import xmlrpc.client

from tests.simulators.xenapi import model

MAX_RPC_BODY = 8 << 20
MAX_DRAIN = 64 << 20  # bigger refused bodies: the connection closes
CHUNK = 1 << 20
QEMU_IMG_TIMEOUT = 600


class _Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'xapi-sim/1.0'
    timeout = 120  # a silent client gives up its thread

    def log_message(self, fmt, *args):
        pass  # tests read outcomes, not access logs

    # -- plumbing ----------------------------------------------------------

    @property
    def pool(self):
        return self.server.pool

    @property
    def lock(self):
        return self.server.lock

    def _faults(self):
        try:
            with open(os.path.join(self.pool.state_dir, 'faults.json')) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    def _reply(self, status, body, content_type='text/plain'):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        if status >= 400:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _guard(self, work):
        self._body_started = False
        try:
            work()
        except _Refused as refused:
            self._drain()
            self._reply(refused.status, str(refused) + '\n')
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a simulator bug: still a clean answer
            sys.stderr.write(traceback.format_exc())
            self._reply(500, 'internal error\n')

    def _drain(self):
        """Read a small unread body, so the client sees the answer."""
        if self._body_started or self.command not in ('PUT', 'POST'):
            return
        try:
            length = int(self.headers.get('Content-Length', ''))
        except ValueError:
            return
        if 0 < length <= MAX_DRAIN:
            self.rfile.read(length)

    def _refuse_method(self):
        self._guard(lambda: self._reply(405, 'method not allowed\n'))

    do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    def _body_length(self, limit):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            return None
        length = self.headers.get('Content-Length')
        if length is None:
            raise _Refused(411, 'Content-Length required')
        try:
            length = int(length)
        except ValueError:
            raise _Refused(400, 'bad Content-Length')
        if length < 0:
            raise _Refused(400, 'bad Content-Length')
        if length > limit:
            raise _Refused(413, 'body of %d bytes is larger than %d'
                           % (length, limit))
        return length

    def _body_chunks(self, length, limit):
        """Yield the request body, plain or chunked, at most ``limit``."""
        self._body_started = True
        if length is not None:
            left = length
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    raise ConnectionError('client went away')
                left -= len(data)
                yield data
            return
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b';')[0].strip(), 16)
            except ValueError:
                raise _Refused(400, 'bad chunked encoding')
            if size == 0:
                while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                    pass
                return
            total += size
            if total > limit:
                raise _Refused(413, 'body larger than %d' % limit)
            left = size
            while left:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    raise ConnectionError('client went away')
                left -= len(data)
                yield data
            self.rfile.readline(1024)

    # -- XML-RPC -----------------------------------------------------------

    def do_POST(self):
        self._guard(self._rpc)

    def _rpc(self):
        length = self._body_length(MAX_RPC_BODY)
        body = b''.join(self._body_chunks(length, MAX_RPC_BODY))
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except (xml.parsers.expat.ExpatError, ValueError, TypeError,
                IndexError, xmlrpc.client.ResponseError):
            raise _Refused(400, 'not an XML-RPC method call')
        if method is None:
            raise _Refused(400, 'not an XML-RPC method call')
        injected = self._faults().get('calls', {}).get(method)
        try:
            with self.lock:
                if injected and not str(method).startswith('session.'):
                    self.pool.check_session(params[0] if params else None)
                    raise model.XapiError(*injected)
                value = self.pool.call(method, params)
            envelope = {'Status': 'Success', 'Value': value}
        except model.XapiError as error:
            envelope = {'Status': 'Failure',
                        'ErrorDescription': error.details}
        except Exception as error:  # never a traceback on the wire
            sys.stderr.write(traceback.format_exc())
            envelope = {'Status': 'Failure',
                        'ErrorDescription': ['INTERNAL_ERROR',
                                             type(error).__name__]}
        try:
            out = xmlrpc.client.dumps((envelope,), methodresponse=True)
        except (TypeError, OverflowError):
            out = xmlrpc.client.dumps(({
                'Status': 'Failure',
                'ErrorDescription': ['INTERNAL_ERROR', 'unencodable']},),
                methodresponse=True)
        self._reply(200, out, 'text/xml')

    # -- raw VDI transfers -------------------------------------------------

    def _transfer_args(self, expected_path):
        url = urllib.parse.urlsplit(self.path)
        if url.path != expected_path:
            raise _Refused(404, 'no handler for %s' % url.path)
        try:
            query = urllib.parse.parse_qs(url.query, strict_parsing=False,
                                          max_num_fields=20)
        except ValueError:
            raise _Refused(400, 'bad query string')
        args = {k: v[-1] for k, v in query.items()}
        fmt = args.get('format', 'raw')
        if fmt not in ('raw', 'vhd'):
            raise _Refused(400, 'format must be raw or vhd')
        with self.lock:
            try:
                self.pool.check_session(args.get('session_id'))
            except model.XapiError:
                raise _Refused(401, 'a valid session_id is required')
            wanted = args.get('vdi', '')
            vdi = wanted if wanted in self.pool.objects['VDI'] else \
                self.pool.by_uuid['VDI'].get(wanted)
            if vdi is None:
                raise _Refused(404, 'VDI %s not found' % wanted[:100])
            record = self.pool.objects['VDI'][vdi]
            return (vdi, fmt, record['virtual_size'],
                    self.pool.vdi_path(vdi), self.pool.sr_dir(record['SR']))

    def _fault(self, name):
        fault = self._faults().get(name) or {}
        if 'status' in fault:
            raise _Refused(int(fault['status']), 'injected fault')
        return fault.get('cut_after')

    def do_PUT(self):
        self._guard(self._import)

    def _import(self):
        vdi, fmt, size, path, folder = self._transfer_args('/import_raw_vdi')
        with self.lock:
            if self.pool.vdi_in_use(vdi):
                raise _Refused(409, 'VDI_IN_USE: the VDI is attached to a '
                                    'running VM')
        cut = self._fault('import_raw_vdi')
        # A dynamic vhd is at most a little bigger than its disk.
        limit = size if fmt == 'raw' else size + size // 256 + (16 << 20)
        length = self._body_length(limit)
        received = 0
        if fmt == 'raw':
            with open(path, 'r+b') as target:
                for data in self._body_chunks(length, limit):
                    received += len(data)
                    if cut is not None and received > cut:
                        raise ConnectionError('injected cut')
                    if data.count(0) == len(data):
                        target.seek(len(data), os.SEEK_CUR)  # stay sparse
                    else:
                        target.write(data)
            self._reply(200, 'OK\n')
            return
        fd, spool = tempfile.mkstemp(prefix='.import-', suffix='.vhd',
                                     dir=folder)
        try:
            with os.fdopen(fd, 'wb') as out:
                for data in self._body_chunks(length, limit):
                    received += len(data)
                    if cut is not None and received > cut:
                        raise ConnectionError('injected cut')
                    out.write(data)
            self._write_vhd(spool, path, size)
        finally:
            os.unlink(spool)
        self._reply(200, 'OK\n')

    @staticmethod
    def _write_vhd(spool, path, size):
        """Check the upload is a plain vhd that fits; write its data."""
        probe = subprocess.run(
            ('qemu-img', 'info', '--output=json', '-f', 'vpc', spool),
            capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
        if probe.returncode != 0:
            raise _Refused(400, 'not a vhd: %s'
                           % probe.stderr.strip()[-300:])
        info = json.loads(probe.stdout)
        if info.get('backing-filename') or info.get('format') != 'vpc':
            raise _Refused(400, 'differencing or foreign vhd refused')
        if info['virtual-size'] > size:
            raise _Refused(400, 'the vhd holds %d bytes; the VDI has %d'
                           % (info['virtual-size'], size))
        done = subprocess.run(
            ('qemu-img', 'convert', '-n', '-f', 'vpc', '-O', 'raw', spool,
             path), capture_output=True, text=True,
            timeout=QEMU_IMG_TIMEOUT)
        if done.returncode != 0:
            raise _Refused(400, 'vhd data unreadable: %s'
                           % done.stderr.strip()[-300:])

    def do_GET(self):
        self._guard(self._export)

    def _export(self):
        vdi, fmt, size, path, folder = self._transfer_args('/export_raw_vdi')
        cut = self._fault('export_raw_vdi')
        source = path
        spool = None
        if fmt == 'vhd':
            fd, spool = tempfile.mkstemp(prefix='.export-', suffix='.vhd',
                                         dir=folder)
            os.close(fd)
            subprocess.run(
                ('qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', '-o',
                 'subformat=dynamic,force_size=on', path, spool),
                check=True, capture_output=True, timeout=QEMU_IMG_TIMEOUT)
            _stable_footer(spool, self.pool.objects['VDI'][vdi]['uuid'])
            source = spool
        try:
            with open(source, 'rb') as f:
                length = os.fstat(f.fileno()).st_size
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(length))
                self.end_headers()
                sent = 0
                while True:
                    data = f.read(CHUNK)
                    if not data:
                        break
                    if cut is not None and sent + len(data) > cut:
                        self.wfile.write(data[:max(0, cut - sent)])
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                    sent += len(data)
        finally:
            if spool:
                os.unlink(spool)


def _stable_footer(path, vdi_uuid):
    """Give an exported vhd the VDI's identity.

    Instead of qemu-img's random uuid and the current time, so two exports
    of one unchanged VDI are the same bytes (the footer and its copy at
    offset 0).
    """
    with open(path, 'r+b') as f:
        f.seek(-512, os.SEEK_END)
        footer = bytearray(f.read(512))
        footer[24:28] = bytes(4)  # timestamp
        footer[68:84] = uuidlib.UUID(vdi_uuid).bytes
        footer[64:68] = bytes(4)
        checksum = (~sum(footer)) & 0xffffffff
        footer[64:68] = checksum.to_bytes(4, 'big')
        for offset in (0, -512):
            f.seek(offset, os.SEEK_SET if offset == 0 else os.SEEK_END)
            f.write(footer)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, pool, context=None, port=0):
        super().__init__(('127.0.0.1', port), Handler)
        self.pool = pool
        self.lock = threading.Lock()
        self.context = context

    def get_request(self):
        sock, address = super().get_request()
        # Headers and body leave in two writes: without NODELAY the second
        # waits for the client's delayed ACK (40 ms a call).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            # The handshake happens in the handler's thread (first read),
            # so one bad client cannot stall the accept loop.
            sock = self.context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address):
        pass  # TLS handshake failures, resets: the client sees them


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    settings_file = None
    if argv[:1] == ['--settings-file'] and len(argv) == 2:
        settings_file = argv[1]
    elif argv:
        sys.exit('usage: python -m tests.simulators.xenapi.server '
                 '[--settings-file FILE]')
    if settings_file:
        with open(settings_file) as f:
            settings = json.load(f)
    else:
        settings = json.loads(sys.stdin.readline())
    state_dir = settings['state_dir']
    os.makedirs(state_dir, exist_ok=True)
    pool = model.Pool(
        state_dir, settings['username'], settings['password'],
        sr_size=int(settings.get('sr_size', 1 << 40)),
        networks=tuple(settings.get('networks') or
                       ('Pool-wide network associated with eth0',)),
        srs=tuple(settings.get('srs') or ('Local storage',)),
        pool_uuid=settings.get('pool_uuid'))
    context = None
    if settings.get('cert'):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(settings['cert'], settings['key'])
    server = Server(pool, context, port=int(settings.get('port', 0)))

    def expire(signum, frame):
        with server.lock:
            pool.expire_sessions()

    signal.signal(signal.SIGUSR1, expire)
    srs = {rec['name_label']: {'uuid': rec['uuid'],
                               'dir': pool.sr_dir(opaque)}
           for opaque, rec in pool.objects['SR'].items()}
    networks = {rec['name_label']: rec['uuid']
                for rec in pool.objects['network'].values()}
    print(json.dumps({'scheme': 'https' if context else 'http',
                      'port': server.server_address[1], 'srs': srs,
                      'networks': networks}), flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if settings_file:
        # A service (tools/aio): serves until SIGTERM ends the process.
        while True:
            time.sleep(0.1)
    # Until the test closes our stdin (or dies).  Short waits, not one
    # blocking read: a signal that lands on another thread runs its
    # handler only when this thread runs Python code again.
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.1)
        if ready and not sys.stdin.buffer.read1(4096):
            break
    server.shutdown()


if __name__ == '__main__':
    main()
