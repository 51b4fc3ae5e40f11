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

import json
import os
import struct
import sys

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
                level, workers, scratch_dir=None, direct=False):
    """The JSON line the child reads on stdin.

    ``source_filename`` and ``source_format`` are exactly what qemu-img
    convert would get (``-f``); qemu-nbd opens them read-only.  ``direct``
    writes the output with O_DIRECT (the engine checked its filesystem
    takes it).
    """
    config = {'source': source_filename, 'source_format': source_format,
              'output': output, 'capacity': int(capacity),
              'level': int(level),
              # 0: one thread per core this process may run on.
              'workers': int(workers) or len(os.sched_getaffinity(0)),
              'limit_argv': qemu_img.prlimit_argv(limits),
              'scratch_dir': scratch_dir, 'direct': bool(direct)}
    return (json.dumps(config) + '\n').encode()


def _marker_kind(sector):
    value, size, kind = struct.unpack_from('<QII', sector)
    return kind if size == 0 else None


def check_output(path):
    """The capacity of a stream this writer wrote; ConversionFailed if not.

    The engine's format inspector reads all of a streamOptimized vmdk (it
    follows the stream to its footer): for 1 GiB of output written with
    O_DIRECT that is 2.9 s, longer than the writing.  The writer's output
    has a fixed layout, so this checks what a reader relies on instead:
    the header, the embedded descriptor (one SPARSE extent, no parent),
    and the footer marker, footer header (same capacity and grain size,
    the directory inside the file) and end-of-stream marker in the last
    three sectors.
    """
    sector = vmdk_writer.SECTOR
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(vmdk_writer.OVERHEAD_SECTORS * sector)
        if size % sector or size < len(head) + 3 * sector:
            raise exceptions.ConversionFailed(
                'the vmdk stream writer wrote a truncated file')
        f.seek(size - 3 * sector)
        tail = f.read(3 * sector)
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
