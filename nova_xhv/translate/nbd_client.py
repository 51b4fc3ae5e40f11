"""A minimal NBD client that writes into an image served by qemu-nbd.

Used by stream_convert: the decoded guest data goes to ``qemu-nbd`` over
a private UNIX socket, so qemu's own block layer writes the destination
format (qcow2 allocation, refcounts, raw sparseness) and XHV never writes
an image format itself.  Speaks the fixed-newstyle handshake with
NBD_OPT_GO, then WRITE, FLUSH and DISC with simple replies; writes are
pipelined (up to MAX_IN_FLIGHT outstanding) and sent scatter-gather.
"""

import collections
import errno
import os
import socket
import struct

from nova_xhv.translate import nbd_protocol as nbd

_REQUEST = struct.Struct('>IHHQQI')
_REPLY = struct.Struct('>IIQ')
# qemu-nbd takes up to 32 MiB per request, but allocates a buffer for each:
# 1 MiB ones were the fastest measured (fewer fresh pages to fault in).
MAX_WRITE = 1024 * 1024
MAX_IN_FLIGHT = 16


class NBDError(Exception):
    """The NBD server refused or broke the conversation."""


class NBDConnection(object):
    """One client connection to an NBD server; use as a context manager.

    What every NBD client of XHV's shares: connecting, exact reads, the
    polite disconnect.  Subclasses shake hands in ``__init__``.
    """

    @classmethod
    def connect_unix(cls, path, export_name=b''):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return cls(sock, export_name)
        except BaseException:
            sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self._sock is None:
            return
        try:
            self._sock.sendall(_REQUEST.pack(nbd.REQUEST_MAGIC, 0,
                                             nbd.CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self._sock.close()
        self._sock = None

    def _greet(self):
        """The fixed-newstyle greeting, before any option."""
        magic, opt_magic, flags = struct.unpack('>8sQH', self._recv(18))
        if magic != nbd.NBDMAGIC or opt_magic != nbd.IHAVEOPT or \
                not flags & nbd.FLAG_FIXED_NEWSTYLE:
            raise NBDError('the server does not speak fixed-newstyle NBD')
        self._sock.sendall(struct.pack(
            '>I', nbd.FLAG_FIXED_NEWSTYLE | (flags & nbd.FLAG_NO_ZEROES)))

    def _recv_into(self, view):
        while len(view):
            try:
                n = self._sock.recv_into(view)
            except OSError as error:
                raise NBDError('the NBD server closed the connection: %s'
                               % error)
            if not n:
                raise NBDError('the NBD server closed the connection')
            view = view[n:]

    def _recv(self, length):
        buf = bytearray(length)
        self._recv_into(memoryview(buf))
        return bytes(buf)


class NBDWriter(NBDConnection):
    """Writes to one NBD export; use as a context manager."""

    def __init__(self, sock, export_name=b''):
        self._sock = sock
        # handle -> (command, offset, length); qemu-nbd may answer out of
        # order.
        self._in_flight = collections.OrderedDict()
        self._next_handle = 1
        self.size, self._flags = self._handshake(export_name)
        if self._flags & nbd.TX_READ_ONLY:
            raise NBDError('the NBD export is read-only')
        self.bytes_written = 0

    # -- handshake ---------------------------------------------------------

    def _handshake(self, export_name):
        self._greet()
        payload = struct.pack('>I', len(export_name)) + export_name + \
            struct.pack('>H', 0)
        self._sock.sendall(struct.pack('>QII', nbd.IHAVEOPT, nbd.OPT_GO,
                                       len(payload)) + payload)
        size = tx_flags = None
        while True:
            magic, option, kind, length = struct.unpack(
                '>QIII', self._recv(20))
            if magic != nbd.REPLY_MAGIC or option != nbd.OPT_GO or \
                    length > 65536:
                raise NBDError('malformed NBD option reply')
            data = self._recv(length)
            if kind == nbd.REP_INFO and length >= 12 and \
                    struct.unpack('>H', data[:2])[0] == nbd.INFO_EXPORT:
                size, tx_flags = struct.unpack('>QH', data[2:12])
            elif kind == nbd.REP_ACK:
                break
            elif kind & 0x80000000:
                raise NBDError('the server refused the export: %s' % (
                    data.decode('utf-8', 'replace') or 'error %d' % kind))
        if size is None:
            raise NBDError('the server did not describe the export')
        return size, tx_flags

    # -- transmission ------------------------------------------------------

    def write(self, offset, parts):
        """Write the buffers ``parts`` back to back at ``offset``."""
        length = sum(len(p) for p in parts)
        if offset < 0 or offset + length > self.size:
            raise NBDError('write of %d bytes at %d is outside the %d-byte '
                           'export' % (length, offset, self.size))
        self._send(nbd.CMD_WRITE, offset, length, parts)
        self.bytes_written += length

    def flush(self):
        """Wait for every write, then for the server to make them stable."""
        if self._flags & nbd.TX_SEND_FLUSH:
            self._send(nbd.CMD_FLUSH, 0, 0, ())
        while self._in_flight:
            self._reap()

    def _send(self, command, offset, length, parts):
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._reap()
        handle = self._next_handle
        self._next_handle += 1
        header = _REQUEST.pack(nbd.REQUEST_MAGIC, 0, command, handle, offset,
                               length)
        try:
            nbd.send_parts(self._sock, [header] + list(parts))
        except OSError as error:
            raise NBDError('the NBD server closed the connection: %s'
                           % error)
        self._in_flight[handle] = (command, offset, length)

    def _reap(self):
        magic, error, handle = _REPLY.unpack(self._recv(_REPLY.size))
        if magic != nbd.SIMPLE_REPLY_MAGIC:
            raise NBDError('malformed NBD reply')
        request = self._in_flight.pop(handle, None)
        if request is None:
            raise NBDError('NBD reply for an unknown request')
        if error:
            command, offset, length = request
            what = 'flush' if command == nbd.CMD_FLUSH else \
                'write of %d bytes at %d' % (length, offset)
            raise NBDError('the NBD server failed the %s: %s' % (
                what, os.strerror(error) if error in errno.errorcode
                else 'error %d' % error))
