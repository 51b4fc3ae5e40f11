"""Give qemu-img a remote source as a local NBD export, read ahead.

qemu's curl driver reads a remote image as one Range request per read (plus
its readahead), one after another: the vmdk driver serialises its reads,
so every request's round trip adds to the conversion.  Measured on a 1 GiB
streamOptimized vmdk served on loopback: 2x a local conversion with 4 MiB
readahead, worse with less; and qemu 7.2's curl driver can stall with
parallel requests.

This bridge serves the remote file to qemu-img over NBD on a private UNIX
socket (a 0700 folder) for the duration of one conversion, and fetches it
with ``requests`` as ONE streaming Range GET that runs ahead of qemu-img's
reads (bounded window), so network transfer overlaps the conversion.  A
read outside the window (a header, a footer, a table at the end of the
file) is fetched by its own Range request and the stream restarts after
it.  Side effects: TLS is verified by ``requests`` against the source's
``ca_file`` and credentials stay in this process (qemu-img gets neither).

Only what the conversion reads is transferred, never to disk.  The server
is read-only and speaks the minimum of the NBD protocol qemu needs (fixed
newstyle handshake, NBD_OPT_GO/EXPORT_NAME, READ, DISC).
"""

import collections
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading


from nova_xhv.translate import block_spec
from nova_xhv.translate import child_environ
from nova_xhv.translate import exceptions
from nova_xhv.translate import nbd_protocol as nbd
from nova_xhv.translate import remote

BLOCK = remote.INSPECTED_BLOCK  # inspected blocks are checked whole
WINDOW = 64 * BLOCK  # how far the stream may run ahead of the reads
KEEP_BEHIND = 8  # blocks kept behind the furthest read (re-reads, tables)
MAX_DIRECT = 16  # directly fetched blocks kept (headers, tables)

_TX_FLAGS = nbd.TX_HAS_FLAGS | nbd.TX_READ_ONLY
_EIO = 5
_EPERM = 1
_EINVAL = 22
_MAX_READ = 32 * 1024 * 1024


class SourceError(Exception):
    """The remote source could not be read as promised."""


class ReadAheadSource(object):
    """Byte ranges of a remote file, fetched ahead of sequential reads."""

    def __init__(self, session, url, size, inspected=None):
        self._session = session
        self._url = url
        self.size = size
        # {block index: sha256 hex} of what the inspection read.
        self._inspected = dict(inspected or {})
        # Exported as a whole number of sectors, like qemu's own block layer
        # (qemu-nbd) shows a file: qemu's NBD client stalls on an unaligned
        # tail.  The bytes past the end read as zeros, as from a local file.
        self.export_size = -(-size // 512) * 512
        self._blocks = collections.OrderedDict()  # streamed: index -> bytes
        self._direct = collections.OrderedDict()  # fetched alone, LRU
        self._cond = threading.Condition()
        self._stream_next = None  # next block the stream will deliver
        self._stream_gen = 0  # bumped to restart the stream elsewhere
        self._reading = -1  # the block read last: the window follows it
        self._last_miss = None
        self._error = None
        self._closed = False
        self.bytes_fetched = 0
        self._thread = threading.Thread(target=self._stream_loop,
                                        name='xhv-nbd-readahead',
                                        daemon=True)
        self._thread.start()

    # -- reads (NBD server thread) ------------------------------------------

    def read(self, offset, length):
        """The bytes at ``offset`` as a list of memoryviews (no copies)."""
        if offset < 0 or length < 0 or offset + length > self.export_size:
            raise SourceError('read of %d bytes at %d is outside the %d-byte '
                              'source' % (length, offset, self.size))
        parts = []
        end = offset + length
        if end > self.size:
            parts_tail = [bytes(end - max(offset, self.size))]
            end = max(offset, self.size)
        else:
            parts_tail = []
        while offset < end:
            index = offset // BLOCK
            block = memoryview(self._block(index))
            start = offset - index * BLOCK
            piece = block[start:start + (end - offset)]
            parts.append(piece)
            offset += len(piece)
        return parts + parts_tail

    def _block(self, index):
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if index in self._blocks:
                    self._follow(index)
                    return self._blocks[index]
                if index in self._direct:
                    self._direct.move_to_end(index)
                    return self._direct[index]
                coming = self._stream_next
                if coming is None or not \
                        coming <= index < coming + WINDOW // BLOCK:
                    break
                self._follow(index)
                self._cond.wait()
            sequential = index - 1 == self._last_miss
            self._last_miss = index
            if sequential:
                # Two misses in a row: a sequential read starts here.
                self._stream_next = index
                self._stream_gen += 1
                self._follow(index)
                self._cond.notify_all()  # even if _follow did not
                return self._block_locked(index)
        # A lone read elsewhere (a header, a footer, a table): fetch it
        # alone and leave the stream where it is.
        try:
            data = self._checked(index, self._fetch(
                index * BLOCK, self._block_length(index)))
        except SourceError as error:
            with self._cond:
                self._error = error  # every later read fails too
                self._cond.notify_all()
            raise
        with self._cond:
            self._direct[index] = data
            while len(self._direct) > MAX_DIRECT:
                self._direct.popitem(last=False)
        return data

    def _block_locked(self, index):
        # Called with the lock held, after the stream was pointed at index.
        while index not in self._blocks:
            if self._error is not None:
                raise self._error
            self._cond.wait()
        return self._blocks[index]

    def _follow(self, index):
        # The window follows the reads the stream serves.
        if index != self._reading:
            self._reading = index
            self._evict()
            self._cond.notify_all()

    def _evict(self):
        floor = self._reading - KEEP_BEHIND
        for index in [i for i in self._blocks if i < floor]:
            del self._blocks[index]
        # Blocks streamed before a jump backwards stay valid but must not
        # pile up.
        while len(self._blocks) > 2 * WINDOW // BLOCK:
            self._blocks.popitem(last=False)

    def _checked(self, index, data):
        """``data`` of block ``index``, if it is what was inspected."""
        expected = self._inspected.get(index)
        if expected is not None and \
                hashlib.sha256(data).hexdigest() != expected:
            raise SourceError(
                '%s changed after it was inspected: bytes %d-%d differ; '
                'refusing to read it' % (self._url, index * BLOCK,
                                         index * BLOCK + len(data) - 1))
        return data

    def _block_length(self, index):
        return min(BLOCK, self.size - index * BLOCK)

    def _fetch(self, start, length):
        response = self._get(start, start + length - 1)
        with response:
            data = response.raw.read(length, decode_content=False)
        if len(data) != length:
            raise SourceError('%s returned %d of %d bytes at %d' % (
                self._url, len(data), length, start))
        self.bytes_fetched += length
        return data

    def _get(self, start, end):
        try:
            return remote.open_range(self._session, self._url, start, end,
                                     self.size)
        except exceptions.TranslationError as error:
            raise SourceError(str(error))

    # -- the stream (its own thread) ----------------------------------------

    def _stream_loop(self):
        try:
            self._stream()
        except Exception as error:
            with self._cond:
                self._error = error if isinstance(error, SourceError) \
                    else SourceError('reading %s failed: %s' % (self._url,
                                                                error))
                self._cond.notify_all()

    def _stream(self):
        response = None
        gen = None
        try:
            while True:
                with self._cond:
                    while not self._closed and (
                            self._stream_next is None
                            or self._stream_next * BLOCK >= self.size
                            or self._stream_next - self._reading
                            > WINDOW // BLOCK):
                        self._cond.wait()
                    if self._closed:
                        return
                    if gen != self._stream_gen:
                        gen = self._stream_gen
                        if response is not None:
                            response.close()
                            response = None
                    index = self._stream_next
                if response is None:
                    response = self._get(index * BLOCK, self.size - 1)
                length = self._block_length(index)
                data = response.raw.read(length, decode_content=False)
                if len(data) != length:
                    raise SourceError('%s ended early at block %d' % (
                        self._url, index))
                self._checked(index, data)
                with self._cond:
                    self.bytes_fetched += length
                    if gen == self._stream_gen:
                        self._blocks[index] = data
                        self._stream_next = index + 1
                        self._cond.notify_all()
        finally:
            if response is not None:
                response.close()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        # The stream may sit in a read; it is a daemon thread and stops at
        # its next block.
        self._thread.join(1)


# What the child runs (not ``-m``: runpy warns when the package already
# imported the module).
_CHILD = 'import sys; from %s import main; sys.exit(main(sys.argv[1:]))' % (
    __name__)


class NBDBridge(object):
    """A one-conversion NBD server for a remote source (context manager).

    The server runs as a child process (``python -m
    nova_xhv.translate.nbd_bridge``): its tens of thousands of small NBD
    round trips then cost the same whether the compute runs on native
    threads or eventlet, and never contend with the compute for the GIL.
    The source (URL, credentials, CA) reaches it on stdin, never in argv.
    ``filename(qemu_format)`` is what qemu-img opens.
    """

    def __init__(self, source, size, scratch_dir=None, inspected=None):
        self._remote = source
        self._size = size
        self._inspected = inspected or {}
        self._scratch_dir = scratch_dir
        self._folder = None
        self._proc = None
        self._stderr = None
        self.error = None

    @property
    def socket_path(self):
        return os.path.join(self._folder, 'nbd.sock')

    def filename(self, qemu_format):
        return block_spec.nbd_unix(self.socket_path, 'xhv', qemu_format)

    def __enter__(self):
        self._folder = tempfile.mkdtemp(prefix='xhv-nbd-',
                                        dir=self._scratch_dir)
        os.chmod(self._folder, 0o700)
        try:
            self._stderr = tempfile.TemporaryFile(dir=self._folder)
            # The child imports this very copy of XHV, wherever it is.
            root = os.path.dirname(os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))))
            env = child_environ.for_python({'PYTHONPATH': os.pathsep.join(
                p for p in (root, os.environ.get('PYTHONPATH')) if p)})
            self._proc = subprocess.Popen(
                [sys.executable, '-c', _CHILD, self.socket_path], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, start_new_session=True)
            config = {'url': self._remote.url, 'size': self._size,
                      'inspected': self._inspected,
                      'username': self._remote.username,
                      'password': self._remote.password,
                      'ca_file': self._remote.ca_file,
                      'insecure': self._remote.insecure}
            self._proc.stdin.write(json.dumps(config).encode() + b'\n')
            self._proc.stdin.flush()
            # The child says "ready" once it listens (or exits on error).
            if self._proc.stdout.readline().strip() != b'ready':
                raise SourceError('the NBD bridge for %s did not start: %s'
                                  % (self._remote.url, self._child_error()))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _child_error(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        if self._stderr is None:
            return ''
        self._stderr.seek(0)
        return self._stderr.read()[-2000:].decode('utf-8', 'replace').strip()

    def source_error(self):
        """What the bridge reported about the source, if anything failed."""
        if self.error is None and self._proc is not None:
            self.error = self._child_error() or None
        return self.error

    def __exit__(self, *exc):
        if self._proc is not None:
            if self._proc.poll() is None:
                # Closing stdin is the child's signal to stop.
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self.source_error()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe and not pipe.closed:
                    pipe.close()
        if self._stderr is not None:
            self._stderr.close()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
        return False


class NBDServer(object):
    """Serves one ReadAheadSource to NBD clients on a listening socket."""

    def __init__(self, source):
        self._source = source

    def serve(self, listener, stop):
        """Serve connections one after another until ``stop`` is set."""
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            with conn:
                try:
                    self._serve(conn)
                except (OSError, _ClientGone):
                    pass

    def _serve(self, conn):
        if not self._handshake(conn):
            return
        while True:
            header = _recv(conn, 28)
            magic, _flags, kind, handle, offset, length = struct.unpack(
                '>IHHQQI', header)
            if magic != nbd.REQUEST_MAGIC or kind == nbd.CMD_DISC:
                return
            if kind != nbd.CMD_READ:
                conn.sendall(struct.pack('>IIQ', nbd.SIMPLE_REPLY_MAGIC,
                                         _EPERM if kind in (1, 4, 6)
                                         else _EINVAL, handle))
                continue
            if length > _MAX_READ:
                conn.sendall(struct.pack('>IIQ', nbd.SIMPLE_REPLY_MAGIC,
                                         _EINVAL, handle))
                continue
            try:
                data = self._source.read(offset, length)
            except SourceError as error:
                sys.stderr.write('%s\n' % error)
                sys.stderr.flush()
                conn.sendall(struct.pack('>IIQ', nbd.SIMPLE_REPLY_MAGIC, _EIO,
                                         handle))
                continue
            reply = struct.pack('>IIQ', nbd.SIMPLE_REPLY_MAGIC, 0, handle)
            nbd.send_parts(conn, [reply] + data)

    def _handshake(self, conn):
        size = self._source.export_size
        conn.sendall(nbd.NBDMAGIC + struct.pack(
            '>QH', nbd.IHAVEOPT, nbd.FLAG_FIXED_NEWSTYLE | nbd.FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack('>I', _recv(conn, 4))
        no_zeroes = bool(client_flags & nbd.FLAG_NO_ZEROES)
        while True:
            magic, option, length = struct.unpack('>QII', _recv(conn, 16))
            if magic != nbd.IHAVEOPT or length > 65536:
                return False
            _recv(conn, length)
            if option == nbd.OPT_EXPORT_NAME:
                conn.sendall(struct.pack('>QH', size, _TX_FLAGS)
                             + (b'' if no_zeroes else b'\0' * 124))
                return True
            if option in (nbd.OPT_GO, nbd.OPT_INFO):
                info = struct.pack('>HQH', nbd.INFO_EXPORT, size, _TX_FLAGS)
                _reply(conn, option, nbd.REP_INFO, info)
                _reply(conn, option, nbd.REP_ACK)
                if option == nbd.OPT_GO:
                    return True
                continue
            if option == nbd.OPT_ABORT:
                _reply(conn, option, nbd.REP_ACK)
                return False
            _reply(conn, option, nbd.REP_ERR_UNSUP)


class _ClientGone(Exception):
    pass


def _recv(conn, length):
    data = bytearray()
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            raise _ClientGone()
        data += chunk
    return bytes(data)


def _reply(conn, option, kind, data=b''):
    conn.sendall(struct.pack('>QIII', nbd.REPLY_MAGIC, option, kind, len(data))
                 + data)


def main(argv=None):
    """The child: read the source from stdin, listen, serve until EOF."""
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(sys.stdin.readline())
    size = int(config.pop('size'))
    inspected = {int(index): digest for index, digest in
                 (config.pop('inspected', None) or {}).items()}
    # The same TLS and credential handling as the inspection.
    session = remote.RemoteSource(**config).session()
    source = ReadAheadSource(session, config['url'], size, inspected)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(argv[0])
    listener.listen(4)
    stop = threading.Event()
    server = threading.Thread(target=NBDServer(source).serve,
                              args=(listener, stop), daemon=True)
    server.start()
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    sys.stdin.read()  # EOF: the parent is done (or gone)
    stop.set()
    server.join(1)
    listener.close()
    source.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
