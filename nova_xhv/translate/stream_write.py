"""Write a streamOptimized vmdk with XHV's parallel writer (see vmdk_writer).

The engine hands this every conversion whose target is a streamOptimized
vmdk (what vSphere imports): from any source format the engine reads,
local or remote.  One child process (write_child) does the work, started
through the same loop as ``qemu-img convert`` (prlimit, wall timeout,
cancellation, the process group killed on failure, progress printed the
way qemu-img prints it); its configuration reaches it on stdin.  The child:

1. starts ``qemu-nbd --read-only --format=<the inspected format>`` on the
   very file name qemu-img would have opened (a remote source's read-ahead
   bridge included), on a UNIX socket in a private 0700 folder, under the
   conversion's limits;
2. asks it where the data is (NBD block status, ``base:allocation``) and
   reads only that: holes and zero clusters are never read, and all-zero
   grains of allocated data are dropped too;
3. deflates the grains on a bounded pool of zlib-ng threads (stored blocks
   where deflate does not pay) and writes the stream front to back.

Falls back to qemu-img (the engine logs why) only for what it does not do:
a rate limit (``convert_rate_limit``).
"""

import fcntl
import json
import os
import struct
import sys
import threading

from nova_xhv.translate import exceptions
from nova_xhv.translate import formats
from nova_xhv.translate import qemu_img
from nova_xhv.translate import stream_convert
from nova_xhv.translate import vmdk_descriptor
from nova_xhv.translate import vmdk_stream
from nova_xhv.translate import vmdk_writer

_CHILD = ('import sys; from nova_xhv.translate.write_child import main; '
          'sys.exit(main())')


def targets(to_format, dst_subformat):
    """True when the output is what this writer writes."""
    return (to_format == formats.VMDK
            and dst_subformat == formats.STREAM_OPTIMIZED)


def unsupported_reason(options):
    """Why qemu-img must write this output instead, or None."""
    if options.rate_limit:
        return 'a rate limit (convert_rate_limit) is set, which only ' \
            'qemu-img applies'
    return None


def child_argv():
    """The command the engine runs (through qemu_img.run_convert)."""
    return [sys.executable, '-c', _CHILD]


def child_env():
    """The decoder's environment, with a cap on glibc's malloc arenas.

    glibc reserves 64 MiB of address space per arena, up to 8 per core,
    and every deflate thread may get one: with many workers that alone
    could pass the conversion's address-space limit (prlimit --as).
    """
    env = stream_convert.child_env()
    env['MALLOC_ARENA_MAX'] = '4'
    return env


def child_input(source_filename, source_format, output, capacity, limits,
                level, workers, scratch_dir=None, direct=False,
                output_fd=None):
    """The JSON line the child reads on stdin.

    ``source_filename`` and ``source_format`` are exactly what qemu-img
    convert would get (``-f``); qemu-nbd opens them read-only.  ``direct``
    writes the output with O_DIRECT (the engine checked its filesystem
    takes it).  ``output_fd``: write to this inherited pipe instead
    (``output`` then only names the stream inside its descriptor).
    """
    config = {'source': source_filename, 'source_format': source_format,
              'output': output, 'capacity': int(capacity),
              'level': int(level),
              # 0: one thread per core this process may run on.
              'workers': int(workers) or len(os.sched_getaffinity(0)),
              'limit_argv': qemu_img.prlimit_argv(limits),
              'scratch_dir': scratch_dir, 'direct': bool(direct),
              'output_fd': output_fd}
    return (json.dumps(config) + '\n').encode()


def _marker_kind(sector):
    value, size, kind = struct.unpack_from('<QII', sector)
    return kind if size == 0 else None


# What check_stream reads of a stream: its first and last bytes.
HEAD_BYTES = vmdk_writer.OVERHEAD_SECTORS * vmdk_writer.SECTOR
TAIL_BYTES = 3 * vmdk_writer.SECTOR


def check_output(path):
    """The capacity of a stream this writer wrote; ConversionFailed if not.

    The engine's format inspector reads all of a streamOptimized vmdk (it
    follows the stream to its footer): for 1 GiB of output written with
    O_DIRECT that is 2.9 s, longer than the writing.  The writer's output
    has a fixed layout, so this checks what a reader relies on instead
    (check_stream).
    """
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD_BYTES)
        f.seek(max(size - TAIL_BYTES, 0))
        tail = f.read(TAIL_BYTES)
    return check_stream(head, tail, size)


def check_stream(head, tail, size):
    """The capacity of a stream from its first and last bytes.

    ``head``: its first HEAD_BYTES; ``tail``: its last TAIL_BYTES;
    ``size``: its length.  Checks the header, the embedded descriptor (one
    SPARSE extent, no parent), and the footer marker, footer header (same
    capacity and grain size, the directory inside the file) and
    end-of-stream marker in the last three sectors.  ConversionFailed if
    any is wrong.
    """
    sector = vmdk_writer.SECTOR
    if size % sector or len(head) < HEAD_BYTES or \
            len(tail) < TAIL_BYTES or size < len(head) + TAIL_BYTES:
        raise exceptions.ConversionFailed(
            'the vmdk stream writer wrote a truncated file')
    try:
        header = vmdk_stream.parse_header(head[:sector])
        footer = vmdk_stream.parse_header(tail[sector:2 * sector])
        start = vmdk_writer.DESCRIPTOR_OFFSET * sector
        descriptor = vmdk_descriptor.parse(head[start:start + (
            vmdk_writer.DESCRIPTOR_SECTORS * sector)])
    except (vmdk_stream.StreamError,
            vmdk_descriptor.DescriptorError) as error:
        raise exceptions.ConversionFailed(
            'the vmdk stream writer wrote an unreadable header: %s' % error)
    gd_offset = struct.unpack_from('<Q', tail, sector + 56)[0]
    tables = -(-header.capacity // vmdk_writer.GT_COVERS)
    gd_sectors = -(-tables * 4 // sector)
    problems = vmdk_descriptor.sparse_problems(descriptor)
    if descriptor.create_type != formats.STREAM_OPTIMIZED:
        problems.append('createType %r' % descriptor.create_type)
    if header != footer or \
            descriptor.extents[0].sectors != header.capacity_sectors:
        problems.append('header, footer and descriptor disagree')
    if _marker_kind(tail[:sector]) != vmdk_writer.MARKER_FOOTER or \
            tail[2 * sector:] != bytes(sector) or \
            gd_offset + gd_sectors != size // sector - 3:
        problems.append('no footer and end-of-stream marker at its end')
    if problems:
        raise exceptions.ConversionFailed(
            'the vmdk stream writer wrote an output that fails its check: '
            '%s' % '; '.join(problems))
    return header.capacity


# The pipe between the writer and the engine: large, so the consumer
# takes 1 MiB per wakeup (Linux caps an unprivileged pipe at
# /proc/sys/fs/pipe-max-size, 1 MiB by default; root may go past it).
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Python 3.10+ names it


def output_pipe():
    """(read fd, write fd) of the pipe the child writes the stream to."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a smaller pipe only means more wakeups
    return read_fd, write_fd


class StreamFailed(exceptions.ConversionFailed):
    """The stream the consumer was reading did not come out whole."""


class StreamReader(object):
    """The read end of the writer's pipe, as the stream's consumer sees it.

    ``read(n)`` returns n bytes (fewer only at the end).  It returns the
    end of the stream (``b''``) only after the engine confirmed it: the
    writer exited 0 and the stream's first and last bytes pass
    check_stream.  Otherwise it raises StreamFailed, so a consumer that
    reads to the end (an HTTP upload sends its last chunk only then) can
    never finish with a cut or broken stream.
    """

    def __init__(self, fd):
        self._fd = fd
        self.size = 0
        self._head = bytearray()
        self._tail = b''
        # Set at the end of the stream (eof) or when the consumer closes.
        self.ended = threading.Event()
        self.eof = False
        self._verdict = threading.Event()
        self._error = None

    def read(self, size=-1):
        if size is None or size < 0:
            size = PIPE_SIZE
        parts = []
        got = 0
        while got < size:
            data = os.read(self._fd, size - got)
            if not data:
                self.eof = True
                self.ended.set()
                break
            self._note(data)
            parts.append(data)
            got += len(data)
        if not got and self.eof:
            self._verdict.wait()
            if self._error is not None:
                raise StreamFailed('the stream was not written whole: %s'
                                   % self._error)
        return b''.join(parts)

    def _note(self, data):
        if len(self._head) < HEAD_BYTES:
            self._head += data[:HEAD_BYTES - len(self._head)]
        self._tail = (self._tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
        self.size += len(data)

    def check(self):
        """check_stream on what went through; the capacity."""
        return check_stream(bytes(self._head), self._tail, self.size)

    def settle(self, error=None):
        """The engine's verdict: the stream is whole (None) or ``error``."""
        self._error = error
        self._verdict.set()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.ended.set()
