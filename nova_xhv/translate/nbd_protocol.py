"""The NBD protocol numbers both of XHV's NBD ends use.

The read-ahead bridge (nbd_bridge, a server qemu-img reads from) and the
stream decoder's writer (nbd_client, a client of qemu-nbd) speak the
fixed-newstyle handshake and simple replies; see the NBD protocol
specification (doc/proto.md of the NBD project).
"""

NBDMAGIC = b'NBDMAGIC'
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_INFO = 6
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = 2 ** 31 + 1
INFO_EXPORT = 0
TX_HAS_FLAGS = 1
TX_READ_ONLY = 2
TX_SEND_FLUSH = 4
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3


def send_parts(sock, parts):
    """Send buffers back to back: one scatter-gather call, no joining."""
    parts = list(parts)
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if sent:
            parts[0] = memoryview(parts[0])[sent:]
