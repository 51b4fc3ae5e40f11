"""A minimal NBD client that reads an image served read-only by qemu-nbd.

Used by the streamOptimized writer (write_child): qemu-nbd opens the
inspected source with its checked format (``-f``), read-only, exactly as
qemu-img would, and this client asks it which extents hold data
(NBD_CMD_BLOCK_STATUS in the ``base:allocation`` context) and reads only
those.  Speaks the fixed-newstyle handshake with structured replies,
NBD_OPT_SET_META_CONTEXT and NBD_OPT_GO; one request at a time (the
writer's own pipeline keeps the cores busy meanwhile).
"""

import errno
import os
import struct

from nova_xhv.translate import nbd_client
from nova_xhv.translate import nbd_protocol as nbd

NBDError = nbd_client.NBDError

_REQUEST = struct.Struct('>IHHQQI')
_SIMPLE_REPLY = struct.Struct('>IIQ')
_CHUNK = struct.Struct('>IHHQI')  # magic, flags, type, handle, length
MAX_READ = 4 * 1024 * 1024
# Block status asks for this much at a time; the server may answer less.
STATUS_SPAN = 1024 * 1024 * 1024
_MAX_CHUNK_PAYLOAD = MAX_READ + 64


def _strerror(error):
    # NBD error numbers are the Linux errno values for the common cases.
    if error in errno.errorcode:
        return os.strerror(error)
    return 'error %d' % error


class NBDReader(nbd_client.NBDConnection):
    """Reads one NBD export; use as a context manager."""

    def __init__(self, sock, export_name=b''):
        self._sock = sock
        self._handle = 0
        self._context_id = None
        self.size = self._handshake(export_name)

    # -- handshake ---------------------------------------------------------

    def _option(self, option, payload):
        self._sock.sendall(struct.pack('>QII', nbd.IHAVEOPT, option,
                                       len(payload)) + payload)

    def _option_reply(self, option):
        magic, replied, kind, length = struct.unpack('>QIII',
                                                     self._recv(20))
        if magic != nbd.REPLY_MAGIC or replied != option or length > 65536:
            raise NBDError('malformed NBD option reply')
        return kind, self._recv(length)

    def _handshake(self, export_name):
        self._greet()
        self._option(nbd.OPT_STRUCTURED_REPLY, b'')
        kind, _data = self._option_reply(nbd.OPT_STRUCTURED_REPLY)
        if kind != nbd.REP_ACK:
            raise NBDError('the NBD server has no structured replies')
        name = struct.pack('>I', len(export_name)) + export_name
        query = nbd.META_BASE_ALLOCATION
        self._option(nbd.OPT_SET_META_CONTEXT, name + struct.pack(
            '>II', 1, len(query)) + query)
        while True:
            kind, data = self._option_reply(nbd.OPT_SET_META_CONTEXT)
            if kind == nbd.REP_META_CONTEXT and len(data) >= 4 and \
                    data[4:] == query:
                self._context_id = struct.unpack('>I', data[:4])[0]
            elif kind == nbd.REP_ACK:
                break
            elif kind & 0x80000000:
                break
        if self._context_id is None:
            raise NBDError('the NBD server does not report allocation '
                           '(base:allocation)')
        self._option(nbd.OPT_GO, name + struct.pack('>H', 0))
        size = None
        while True:
            kind, data = self._option_reply(nbd.OPT_GO)
            if kind == nbd.REP_INFO and len(data) >= 12 and \
                    struct.unpack('>H', data[:2])[0] == nbd.INFO_EXPORT:
                size = struct.unpack('>Q', data[2:10])[0]
            elif kind == nbd.REP_ACK:
                break
            elif kind & 0x80000000:
                raise NBDError('the server refused the export: %s' % (
                    data.decode('utf-8', 'replace') or 'error %d' % kind))
        if size is None:
            raise NBDError('the server did not describe the export')
        return size

    # -- transmission ------------------------------------------------------

    def _request(self, command, offset, length):
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise NBDError('request of %d bytes at %d is outside the '
                           '%d-byte export' % (length, offset, self.size))
        self._handle += 1
        try:
            self._sock.sendall(_REQUEST.pack(nbd.REQUEST_MAGIC, 0, command,
                                             self._handle, offset, length))
        except OSError as error:
            raise NBDError('the NBD server closed the connection: %s'
                           % error)
        return self._handle

    def _chunks(self, handle):
        """(type, payload length) of each reply chunk, until the last.

        The caller consumes each payload before asking for the next chunk.
        """
        while True:
            magic = struct.unpack('>I', self._recv(4))[0]
            if magic == nbd.SIMPLE_REPLY_MAGIC:
                error, got = struct.unpack('>IQ', self._recv(12))
                self._check_handle(got, handle)
                if error:
                    raise NBDError('the NBD server failed the request: '
                                   'error %d' % error)
                return
            if magic != nbd.STRUCTURED_REPLY_MAGIC:
                raise NBDError('malformed NBD reply')
            flags, kind, got, length = struct.unpack('>HHQI',
                                                     self._recv(16))
            self._check_handle(got, handle)
            if length > _MAX_CHUNK_PAYLOAD:
                raise NBDError('NBD reply chunk of %d bytes' % length)
            if kind & nbd.REPLY_TYPE_ERROR_BIT:
                payload = self._recv(length)
                error = struct.unpack('>I', payload[:4])[0] \
                    if length >= 4 else 0
                message = payload[6:].decode('utf-8', 'replace').strip()
                raise NBDError('the NBD server failed the request: %s%s' % (
                    _strerror(error), ' (%s)' % message if message else ''))
            if kind != nbd.REPLY_TYPE_NONE:
                yield kind, length
            elif length:
                raise NBDError('malformed NBD reply chunk')
            if flags & nbd.REPLY_FLAG_DONE:
                return

    def _check_handle(self, got, handle):
        if got != handle:
            raise NBDError('NBD reply for an unknown request')

    def block_status(self, offset, length):
        """[(length, flags)] extents from ``offset`` (at least one).

        ``flags`` holds nbd_protocol.STATE_HOLE / STATE_ZERO.
        """
        length = min(length, self.size - offset, STATUS_SPAN)
        handle = self._request(nbd.CMD_BLOCK_STATUS, offset, length)
        extents = []
        for kind, size in self._chunks(handle):
            payload = self._recv(size)
            if kind != nbd.REPLY_TYPE_BLOCK_STATUS or size < 12 or \
                    (size - 4) % 8:
                raise NBDError('unexpected NBD block status reply')
            context = struct.unpack('>I', payload[:4])[0]
            if context != self._context_id:
                continue
            for at in range(4, size, 8):
                extents.append(struct.unpack('>II', payload[at:at + 8]))
        total = sum(e[0] for e in extents)
        if not extents or any(e[0] == 0 for e in extents) or \
                total > max(length, extents[0][0]):
            raise NBDError('malformed NBD block status extents')
        return extents

    def read(self, offset, length):
        """``length`` bytes at ``offset`` as a bytearray (holes: zeros)."""
        if length > MAX_READ:
            raise NBDError('read of %d bytes is above %d'
                           % (length, MAX_READ))
        buf = bytearray(length)
        view = memoryview(buf)
        handle = self._request(nbd.CMD_READ, offset, length)
        got = 0
        for kind, size in self._chunks(handle):
            if size < 8 or kind not in (nbd.REPLY_TYPE_OFFSET_DATA,
                                        nbd.REPLY_TYPE_OFFSET_HOLE):
                raise NBDError('unexpected NBD read reply')
            at = struct.unpack('>Q', self._recv(8))[0] - offset
            if kind == nbd.REPLY_TYPE_OFFSET_HOLE:
                hole = struct.unpack('>I', self._recv(4))[0]
                if size != 12 or at < 0 or at + hole > length:
                    raise NBDError('NBD hole outside the read')
                got += hole  # already zeros
                continue
            if at < 0 or at + size - 8 > length:
                raise NBDError('NBD data outside the read')
            self._recv_into(view[at:at + size - 8])
            got += size - 8
        if got != length:
            raise NBDError('the NBD server answered %d of %d bytes'
                           % (got, length))
        return buf
