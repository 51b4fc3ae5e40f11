"""The streamOptimized writer's child process (see stream_write).

Reads its configuration on stdin, serves the inspected source read-only
through ``qemu-nbd`` (its checked format given with ``--format``, so qemu
opens it exactly as qemu-img convert would), asks it where the data is
(NBD block status), reads only that, and writes the vmdk stream
(vmdk_writer) to the output file front to back.  Exits 0, or non-zero with
one line on stderr.  Imports only what it uses: it starts once per
conversion.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from nova_xhv.translate import exceptions
from nova_xhv.translate import nbd_client
from nova_xhv.translate import nbd_protocol as nbd
from nova_xhv.translate import nbd_reader
from nova_xhv.translate import vmdk_writer

QEMU_NBD = 'qemu-nbd'
_STARTUP_TIMEOUT = 30.0
_PROGRESS_INTERVAL = 0.5
_OUTPUT_BUFFER = 1024 * 1024


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


def _start_qemu_nbd(config, folder):
    """qemu-nbd serving the source read-only; (process, NBDReader)."""
    sock_path = os.path.join(folder, 'nbd.sock')
    argv = list(config['limit_argv']) + [
        QEMU_NBD, '--read-only', '--format=%s' % config['source_format'],
        '--socket=%s' % sock_path, '--export-name=', '--shared=1',
        config['source']]
    with open(os.path.join(folder, 'qemu-nbd.log'), 'wb') as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %s before serving the source: %s' % (
                    proc.returncode, _qemu_nbd_log(folder)),
                proc.returncode, _qemu_nbd_log(folder))
        if os.path.exists(sock_path):
            try:
                return proc, nbd_reader.NBDReader.connect_unix(sock_path)
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
            return f.read()[-4000:].decode('utf-8', 'replace').strip()
    except OSError:
        return ''


def data_runs(reader, capacity):
    """Grain-aligned (start, end) ranges covering every extent with data.

    Extents that read as zeros (holes, zero clusters) are left out; the
    runs come in increasing order, neighbours merged.  ``end`` may pass
    ``capacity`` (the last grain).
    """
    grain = vmdk_writer.GRAIN
    run = None
    offset = 0
    while offset < capacity:
        for length, flags in reader.block_status(offset, capacity - offset):
            length = min(length, capacity - offset)
            if not flags & nbd.STATE_ZERO:
                start = offset // grain * grain
                end = -(-(offset + length) // grain) * grain
                if run and start <= run[1]:
                    run = (run[0], max(run[1], end))
                else:
                    if run:
                        yield run
                    run = (start, end)
            offset += length
            if offset >= capacity:
                break
    if run:
        yield run


def copy(reader, writer, capacity, progress):
    """Read every data run and hand it to the writer, in order."""
    step = nbd_reader.MAX_READ
    for start, end in data_runs(reader, capacity):
        for offset in range(start, end, step):
            length = min(step, end - offset)
            data = reader.read(offset, min(length, capacity - offset))
            if len(data) < length:  # the last grain, past the disk's end
                data += bytes(length - len(data))
            writer.add_chunk(offset, data)
            progress.update(offset + length)


def convert(config):
    """Write the output; raises on any failure (the engine removes it)."""
    folder = tempfile.mkdtemp(prefix='xhv-vmdkw-',
                              dir=config.get('scratch_dir'))
    os.chmod(folder, 0o700)
    proc = reader = writer = None
    capacity = int(config['capacity'])
    try:
        proc, reader = _start_qemu_nbd(config, folder)
        if reader.size != capacity:
            raise exceptions.ConversionFailed(
                'qemu-nbd serves %d bytes, the inspected disk has %d' % (
                    reader.size, capacity))
        progress = _Progress(capacity)
        progress.update(0, force=True)
        fd = os.open(config['output'], os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o644)
        with open(fd, 'wb', buffering=_OUTPUT_BUFFER) as out:
            writer = vmdk_writer.StreamWriter(
                out.write, capacity, os.path.basename(config['output']),
                level=config['level'], workers=config['workers'],
                adapter=config.get('adapter', vmdk_writer.DEFAULT_ADAPTER),
                hw_version=config.get('hw_version',
                                      vmdk_writer.DEFAULT_HW_VERSION))
            copy(reader, writer, capacity, progress)
            writer.close()
        reader.close()
        reader = None
        returncode = proc.wait()
        if returncode:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %d while serving the source: %s'
                % (returncode, _qemu_nbd_log(folder)), returncode)
        progress.update(capacity, force=True)
    finally:
        if writer is not None:
            writer.abort()
        if reader is not None:
            reader.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    """The child: configuration on stdin, one line on stderr on failure."""
    config = json.loads(sys.stdin.readline())
    try:
        convert(config)
    except (exceptions.TranslationError, vmdk_writer.WriteError,
            nbd_client.NBDError, OSError) as error:
        sys.stderr.write('%s\n' % error)
        return 1
    return 0
