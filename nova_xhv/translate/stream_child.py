"""The stream decoder's child process (see stream_convert).

Reads its configuration on stdin, starts qemu-nbd on the output, decodes
the source into it and exits 0, or non-zero with one line on stderr.
Imports only what it uses: it starts once per conversion.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile

from nova_xhv.translate import exceptions
from nova_xhv.translate import nbd_client
from nova_xhv.translate import qemu_nbd
from nova_xhv.translate import remote
from nova_xhv.translate import vmdk_stream

# qemu's output cache modes the engine chooses from (qemu_img.CACHE_*).
CACHE_MODES = ('none', 'unsafe')


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
    inspected = {int(index): digest for index, digest in
                 (config.get('inspected') or {}).items()}
    opened = None
    if direct:
        try:
            opened = _open_stream(_direct_source(direct, folder), size)
        except exceptions.TranslationError as error:
            sys.stderr.write('the direct read of %s failed, reading through '
                             '%s instead: %s\n' % (direct['url'],
                                                   source.url, error))
            sys.stderr.flush()
    read, close, size = opened or _open_stream(source, size)
    return (_InspectedCheck(read, inspected, size, source.url).read, close,
            size)


class _InspectedCheck(object):
    """Reads through ``read``, checking every inspected block on the way.

    A remote source must serve again exactly what was inspected
    (remote.INSPECTED_BLOCK blocks, SHA-256); a difference fails the read.
    """

    def __init__(self, read, inspected, size, name):
        self._read = read
        self._inspected = inspected
        self._size = size
        self._name = name
        self._pos = 0
        self._index = None
        self._hash = None

    def read(self, length):
        data = self._read(length)
        view = memoryview(data)
        done = 0
        while done < len(data):
            pos = self._pos + done
            index = pos // remote.INSPECTED_BLOCK
            block_end = min((index + 1) * remote.INSPECTED_BLOCK, self._size)
            take = min(len(data) - done, block_end - pos)
            if index in self._inspected:
                if self._index != index:
                    self._index, self._hash = index, hashlib.sha256()
                self._hash.update(view[done:done + take])
                if pos + take == block_end and \
                        self._hash.hexdigest() != self._inspected[index]:
                    raise exceptions.TranslationError(
                        '%s changed after it was inspected: bytes %d-%d '
                        'differ; refusing to read it' % (
                            self._name, index * remote.INSPECTED_BLOCK,
                            block_end - 1))
            done += take
        self._pos += len(data)
        return data


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
    cache = config['cache']
    if cache not in CACHE_MODES:
        raise exceptions.ConversionFailed('unknown output cache mode %r'
                                          % cache)
    return qemu_nbd.start(
        config['limit_argv'],
        ['--format=%s' % config['output_format'],
         # As qemu-img convert writes: O_DIRECT (none) or the page cache
         # without flushes (unsafe); the engine inspects and links the file
         # afterwards.
         '--cache=%s' % cache, '--discard=ignore', config['output']],
        folder, nbd_client.NBDWriter, 'the output')


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
        progress = qemu_nbd.Progress(size)
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
                % returncode, returncode, qemu_nbd.log_tail(folder))
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
