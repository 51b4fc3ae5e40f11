"""Convert a streamOptimized vmdk by decoding its stream in one pass.

The engine hands this the conversions it does faster than qemu-img's vmdk
driver (see vmdk_stream for why): a streamOptimized vmdk, local or remote,
to qcow2 or raw.  One child process (stream_child) does the work, started
through the same loop as ``qemu-img convert`` (prlimit, wall timeout,
cancellation, the process group killed on failure, progress printed the
way qemu-img prints it); its source (URL, credentials, CA) reaches it on
stdin, never in argv.  The child:

1. starts ``qemu-nbd`` on the output the engine just created with
   ``qemu-img create``, on a UNIX socket in a private 0700 folder, under
   the same limits;
2. reads the source once, front to back: a local file, or ONE streaming
   GET verified by the same TLS rules as the inspection;
3. decodes the grains, joins neighbours into writes of up to 1 MiB, skips
   zero grains, and writes through ``nbd_client`` while it reads (the
   decoding and qemu's writing run on two cores);
4. flushes, disconnects, and exits with qemu-nbd's status.

Any error exits non-zero with one line on stderr saying why; the engine
then removes the output, as after a failed qemu-img.
"""

import json
import os
import sys

from nova_xhv.translate import child_environ
from nova_xhv.translate import formats
from nova_xhv.translate import qemu_img

TARGETS = (formats.QCOW2, formats.RAW)

# What the child runs (not ``-m``: runpy warns when the package already
# imported the module).  stream_child imports only what it uses, so the
# child starts in a fraction of the engine's import time.
_CHILD = ('import sys; from nova_xhv.translate.stream_child import main; '
          'sys.exit(main())')


def applies(src_info, to_format):
    """True when this path can convert ``src_info`` to ``to_format``."""
    return (src_info.format == formats.VMDK
            and src_info.subformat == formats.STREAM_OPTIMIZED
            and to_format in TARGETS)


def child_argv():
    """The command the engine runs (through qemu_img.run_convert)."""
    return [sys.executable, '-c', _CHILD]


# glibc serves every allocation of 128 KiB and more (4 MiB source chunks,
# qemu-nbd's request buffers) with a fresh mmap whose pages then fault in
# one by one, and gives freed heap back to the kernel.  On virtual CPUs
# page faults are dear: keeping these buffers in a heap that is not
# trimmed took a 1 GiB local decode from 1.50 s to 1.15 s (4 runs each).
_MALLOC_ENV = {'MALLOC_MMAP_THRESHOLD_': str(32 * 1024 * 1024),
               'MALLOC_TRIM_THRESHOLD_': str(256 * 1024 * 1024),
               'MALLOC_TOP_PAD_': str(64 * 1024 * 1024)}


def child_env():
    """The child's environment (qemu-nbd gets its qemu part).

    The child imports this very copy of XHV, wherever it is.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    extra = {'PYTHONPATH': os.pathsep.join(
        p for p in (root, os.environ.get('PYTHONPATH')) if p)}
    extra.update(_MALLOC_ENV)
    return child_environ.for_python(extra)


def child_input(src_info, output, to_format, limits, scratch_dir=None,
                cache=qemu_img.CACHE_PAGE):
    """The JSON line the child reads on stdin.

    ``cache`` is qemu-nbd's cache mode for the output (the engine's
    choice, as for qemu-img convert).
    """
    config = {'output': output, 'cache': cache,
              'output_format': formats.qemu_driver(to_format),
              'capacity': src_info.virtual_size,
              # qemu-nbd runs under the conversion's own limits.
              'limit_argv': qemu_img.prlimit_argv(limits),
              'scratch_dir': scratch_dir}
    source = src_info.remote
    if source is None:
        config['path'] = src_info.data_path
    else:
        config['size'] = src_info.actual_size  # a local file has its own
        config['inspected'] = src_info.inspected_blocks
        config['remote'] = {'url': source.url, 'username': source.username,
                            'password': source.password,
                            'ca_file': source.ca_file,
                            'insecure': source.insecure,
                            'headers': source.headers}
        if source.direct is not None:
            config['remote']['direct'] = source.direct.to_dict()
    return (json.dumps(config) + '\n').encode()
