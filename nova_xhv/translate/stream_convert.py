"""Convert a streamOptimized vmdk by decoding its stream in one pass.

The engine hands this the conversions it does faster than qemu-img's vmdk
driver (see vmdk_stream for why): a streamOptimized vmdk, local or remote,
to qcow2 or raw.  One child process does the work, started through the
same loop as ``qemu-img convert`` (prlimit, wall timeout, cancellation,
the process group killed on failure, progress printed the way qemu-img
prints it); its source (URL, credentials, CA) reaches it on stdin, never
in argv.  The child:

1. starts ``qemu-nbd`` on the output the engine just created with
   ``qemu-img create``, on a UNIX socket in a private 0700 folder, under
   the same limits;
2. reads the source once, front to back: a local file, or ONE streaming
   GET verified by the same TLS rules as the inspection;
3. decodes the grains, joins neighbours into writes of up to 4 MiB, skips
   zero grains, and writes through ``nbd_client`` while it reads (the
   decoding and qemu's writing run on two cores);
4. flushes, disconnects, and exits with qemu-nbd's status.

Any error exits non-zero with one line on stderr saying why; the engine
then removes the output, as after a failed qemu-img.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from nova_xhv.translate import exceptions
from nova_xhv.translate import formats
from nova_xhv.translate import nbd_client
from nova_xhv.translate import qemu_img
from nova_xhv.translate import remote
from nova_xhv.translate import vmdk_stream

QEMU_NBD = 'qemu-nbd'
TARGETS = (formats.QCOW2, formats.RAW)
_STARTUP_TIMEOUT = 30.0
_PROGRESS_INTERVAL = 0.5
_LOCAL_READ = 4 * 1024 * 1024

# What the child runs (not ``-m``: runpy warns when the package already
# imported the module).
_CHILD = 'import sys; from %s import main; sys.exit(main())' % __name__


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
    """The child's environment (qemu-nbd inherits it).

    The child imports this very copy of XHV, wherever it is.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get('PYTHONPATH')) if p))
    env.update(_MALLOC_ENV)
    return env


def child_input(src_info, output, to_format, limits, scratch_dir=None):
    """The JSON line the child reads on stdin."""
    config = {'output': output,
              'output_format': formats.qemu_driver(to_format),
              'capacity': src_info.virtual_size,
              'limits': list(limits), 'scratch_dir': scratch_dir}
    source = src_info.remote
    if source is None:
        config['path'] = src_info.data_path
    else:
        config['size'] = src_info.actual_size  # a local file has its own
        config['remote'] = {'url': source.url, 'username': source.username,
                            'password': source.password,
                            'ca_file': source.ca_file,
                            'insecure': source.insecure,
                            'headers': source.headers}
        if source.direct is not None:
            config['remote']['direct'] = source.direct.to_dict()
    return (json.dumps(config) + '\n').encode()


# -- the child ---------------------------------------------------------------

class _Progress(object):
    """Prints ``(NN.NN/100%)`` as qemu-img -p does, twice a second."""

    def __init__(self, total):
        self._total = max(total, 1)
        self._last = 0.0

    def update(self, done, force=False):
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            sys.stdout.write('    (%.2f/100%%)\r' % min(
                100.0, 100.0 * done / self._total))
            sys.stdout.flush()


def _open_source(config, folder):
    """(read callable, closer, size) of the source, read front to back.

    A remote source with a direct read is read from where it is stored;
    when that cannot start (unreachable, refused, not verified), the
    source's own URL serves, and a line on stderr says why.
    """
    if 'path' in config:
        f = open(config['path'], 'rb', buffering=0)
        return f.read, f.close, os.fstat(f.fileno()).st_size
    size = int(config['size'])
    settings = dict(config['remote'])
    direct = settings.pop('direct', None)
    source = remote.RemoteSource(**settings)
    if direct:
        try:
            return _open_stream(_direct_source(direct, folder), size)
        except exceptions.TranslationError as error:
            sys.stderr.write('the direct read of %s failed, reading through '
                             '%s instead: %s\n' % (direct['url'],
                                                   source.url, error))
            sys.stderr.flush()
    return _open_stream(source, size)


def _direct_source(direct, folder):
    ca_file = None
    if direct.get('ca_pem'):
        ca_file = os.path.join(folder, 'direct-ca.pem')
        fd = os.open(ca_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(direct['ca_pem'])
    return remote.RemoteSource(direct['url'], headers=direct['headers'],
                               ca_file=ca_file,
                               insecure=bool(direct.get('insecure')))


def _open_stream(source, size):
    """One GET of the whole source, checked to be all of it."""
    session = source.session()
    try:
        response = remote.open_range(session, source.url, 0, size - 1, size)
    except BaseException:
        session.close()
        raise
    raw = response.raw

    def read(length):
        return raw.read(length, decode_content=False)

    def close():
        response.close()
        session.close()
    return read, close, size


def _start_qemu_nbd(config, folder):
    sock_path = os.path.join(folder, 'nbd.sock')
    limits = qemu_img.Limits(*config['limits'])
    argv = qemu_img.prlimit_argv(limits) + [
        QEMU_NBD, '--format=%s' % config['output_format'],
        '--socket=%s' % sock_path, '--export-name=', '--shared=1',
        # unsafe: no flushes while writing, as qemu-img convert writes its
        # output; the engine inspects and links the file afterwards.
        '--cache=unsafe', '--discard=ignore',
        config['output']]
    # Its messages go to a file: a pipe nobody reads could fill and stall it.
    with open(os.path.join(folder, 'qemu-nbd.log'), 'wb') as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %s before serving the output'
                % proc.returncode, proc.returncode, _qemu_nbd_log(folder))
        if os.path.exists(sock_path):
            try:
                return proc, nbd_client.NBDWriter.connect_unix(sock_path)
            except (ConnectionRefusedError, FileNotFoundError):
                pass
        if time.monotonic() > deadline:
            proc.kill()
            raise exceptions.ConversionFailed(
                'qemu-nbd did not listen within %.0f s' % _STARTUP_TIMEOUT)
        time.sleep(0.01)  # polling a socket file that qemu-nbd creates


def _qemu_nbd_log(folder):
    try:
        with open(os.path.join(folder, 'qemu-nbd.log'), 'rb') as f:
            return f.read()[-4000:].decode('utf-8', 'replace')
    except OSError:
        return ''


def _copy(decoder, writer, progress):
    """Write every decoded grain, neighbours joined into one request."""
    run_start, run_parts, run_length = 0, [], 0
    for offset, data in decoder.grains():
        if run_parts and (offset != run_start + run_length or
                          run_length + len(data) > nbd_client.MAX_WRITE):
            writer.write(run_start, run_parts)
            run_parts, run_length = [], 0
            progress.update(decoder.consumed)
        if not run_parts:
            run_start = offset
        run_parts.append(data)
        run_length += len(data)
    if run_parts:
        writer.write(run_start, run_parts)
    writer.flush()


def convert(config):
    """Decode the source into the output; raises on any failure."""
    folder = tempfile.mkdtemp(prefix='xhv-stream-',
                              dir=config.get('scratch_dir'))
    os.chmod(folder, 0o700)
    proc = writer = close_source = None
    try:
        read, close_source, size = _open_source(config, folder)
        proc, writer = _start_qemu_nbd(config, folder)
        if writer.size != int(config['capacity']):
            raise exceptions.ConversionFailed(
                'qemu-nbd serves %d bytes, the disk has %d' % (
                    writer.size, config['capacity']))
        decoder = vmdk_stream.Decoder(read, int(config['capacity']))
        progress = _Progress(size)
        progress.update(0, force=True)
        _copy(decoder, writer, progress)
        if not decoder.saw_end_marker and decoder.consumed != size:
            # A record boundary before the end: cut short, not finished.
            raise vmdk_stream.StreamError(
                'the stream ended after %d of its %d bytes' % (
                    decoder.consumed, size))
        writer.close()
        writer = None
        returncode = proc.wait()
        if returncode:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %d while writing the output'
                % returncode, returncode, _qemu_nbd_log(folder))
        progress.update(decoder.consumed, force=True)
    finally:
        if writer is not None:
            writer.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if close_source is not None:
            close_source()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    """The child: configuration on stdin, one line on stderr on failure."""
    config = json.loads(sys.stdin.readline())
    try:
        convert(config)
    except (exceptions.TranslationError, vmdk_stream.StreamError,
            nbd_client.NBDError, OSError) as error:
        sys.stderr.write('%s\n' % error)
        return 1
    except Exception as error:
        # e.g. the connection broke mid-stream (urllib3's ProtocolError).
        sys.stderr.write('reading the source failed: %s: %s\n' % (
            type(error).__name__, error))
        return 1
    return 0
