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


# Structured replies and block status (what nbd_reader reads a source with).
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10
REP_META_CONTEXT = 4
CMD_BLOCK_STATUS = 7
STRUCTURED_REPLY_MAGIC = 0x668e33ef
REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR_BIT = 1 << 15
STATE_HOLE = 1
STATE_ZERO = 2
META_BASE_ALLOCATION = b'base:allocation'


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
