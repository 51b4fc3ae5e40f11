"""The NBD writer against a scripted server on a socketpair.

The real peer, qemu-nbd, is exercised by every stream-decoder test
(tests/functional/translate/test_stream_decoder.py); this covers what
qemu-nbd does not do on demand: replies out of order, a failed write, a
read-only export, a server that hangs up.
"""

import errno
import socket
import struct
import threading

import pytest

from nova_xhv.translate import nbd_client
from nova_xhv.translate import nbd_protocol as nbd

SIZE = 1024 * 1024


def _recv(sock, length):
    data = b''
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise EOFError()
        data += chunk
    return data


class ScriptedServer(threading.Thread):
    """Fixed-newstyle handshake, then collects requests and answers them.

    ``answer(requests)`` gets the list of (command, handle, offset, data)
    received so far and returns [(handle, error)] to send, or None to wait
    for more.
    """

    def __init__(self, sock, answer, tx_flags=nbd.TX_HAS_FLAGS
                 | nbd.TX_SEND_FLUSH):
        super().__init__(daemon=True)
        self.sock = sock
        self.answer = answer
        self.tx_flags = tx_flags
        self.requests = []

    def run(self):
        s = self.sock
        try:
            s.sendall(nbd.NBDMAGIC + struct.pack(
                '>QH', nbd.IHAVEOPT, nbd.FLAG_FIXED_NEWSTYLE))
            _recv(s, 4)
            _magic, option, length = struct.unpack('>QII', _recv(s, 16))
            _recv(s, length)
            info = struct.pack('>HQH', nbd.INFO_EXPORT, SIZE, self.tx_flags)
            s.sendall(struct.pack('>QIII', nbd.REPLY_MAGIC, option,
                                  nbd.REP_INFO, len(info)) + info)
            s.sendall(struct.pack('>QIII', nbd.REPLY_MAGIC, option,
                                  nbd.REP_ACK, 0))
            while True:
                (_magic, _flags, command, handle, offset,
                 length) = struct.unpack('>IHHQQI', _recv(s, 28))
                if command == nbd.CMD_DISC:
                    return
                data = _recv(s, length) if command == nbd.CMD_WRITE else b''
                self.requests.append((command, handle, offset, data))
                for handle, error in self.answer(self.requests) or ():
                    s.sendall(struct.pack('>IIQ', nbd.SIMPLE_REPLY_MAGIC,
                                          error, handle))
        except (EOFError, OSError):
            return
        finally:
            s.close()  # the client sees the server gone


def connect(answer, **kwargs):
    ours, theirs = socket.socketpair()
    server = ScriptedServer(theirs, answer, **kwargs)
    server.start()
    return nbd_client.NBDWriter(ours), server


def test_pipelined_writes_answered_out_of_order():
    def answer(requests):
        # Answer in pairs, the second request first.
        if len(requests) % 2 == 0:
            return [(requests[-1][1], 0), (requests[-2][1], 0)]
        return None

    writer, server = connect(answer)
    with writer:
        assert writer.size == SIZE
        writer.write(0, [b'a' * 512, b'b' * 512])
        writer.write(4096, [b'c' * 4096])
        writer.write(65536, [memoryview(b'd' * 100)])
        writer.flush()
        assert writer.bytes_written == 1024 + 4096 + 100
    server.join(5)
    writes = [(r[2], r[3]) for r in server.requests
              if r[0] == nbd.CMD_WRITE]
    assert writes == [(0, b'a' * 512 + b'b' * 512), (4096, b'c' * 4096),
                      (65536, b'd' * 100)]
    assert server.requests[-1][0] == nbd.CMD_FLUSH


def test_failed_write_names_the_write():
    writer, _server = connect(
        lambda requests: [(requests[-1][1], errno.ENOSPC)])
    with writer:
        writer.write(8192, [b'x' * 512])
        with pytest.raises(nbd_client.NBDError,
                           match='write of 512 bytes at 8192: No space'):
            writer.flush()


def test_writes_outside_the_export_are_refused_before_sending():
    writer, server = connect(lambda requests: None)
    with writer:
        with pytest.raises(nbd_client.NBDError, match='outside'):
            writer.write(SIZE - 10, [b'x' * 11])
    server.join(5)
    assert server.requests == []


def test_read_only_export_is_refused():
    ours, theirs = socket.socketpair()
    server = ScriptedServer(theirs, lambda requests: None,
                            tx_flags=nbd.TX_HAS_FLAGS | nbd.TX_READ_ONLY)
    server.start()
    with pytest.raises(nbd_client.NBDError, match='read-only'):
        nbd_client.NBDWriter(ours)
    ours.close()


def test_server_hanging_up_is_an_error():
    def hang_up(requests):
        raise EOFError()

    writer, _server = connect(hang_up)
    with writer:
        writer.write(0, [b'x'])
        with pytest.raises(nbd_client.NBDError, match='closed'):
            writer.flush()
