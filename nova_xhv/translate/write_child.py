"""The streamOptimized writer's child process (see stream_write).

Reads its configuration on stdin, serves the inspected source read-only
through ``qemu-nbd`` (its checked format given with ``--format``, so qemu
opens it exactly as qemu-img convert would), asks it where the data is
(NBD block status), reads only that, and writes the vmdk stream
(vmdk_writer) to the output file front to back.  Exits 0, or non-zero with
one line on stderr.  Imports only what it uses: it starts once per
conversion.
"""

import fcntl
import json
import mmap
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

from nova_xhv.translate import block_spec
from nova_xhv.translate import exceptions
from nova_xhv.translate import nbd_client
from nova_xhv.translate import nbd_protocol as nbd
from nova_xhv.translate import nbd_reader
from nova_xhv.translate import qemu_nbd
from nova_xhv.translate import vhdx_bat
from nova_xhv.translate import vmdk_writer

_READ_AHEAD = 2  # chunks of up to 4 MiB read ahead of the writer
_OUTPUT_BUFFER = 8 * 1024 * 1024  # a multiple of any O_DIRECT alignment


class Output(object):
    """The output file, written front to back by a thread of its own.

    Two page-aligned buffers take turns: the caller fills one while the
    thread writes the other, so writing overlaps reading and deflating.
    ``fd`` (instead of ``path``) is an inherited pipe the engine streams
    on: a 4xx of the upload behind it closes the pipe, and the next write
    fails with EPIPE, which ends the conversion.
    With ``direct`` the file is opened with O_DIRECT: on the test bed 1 GiB
    through the page cache took 3.3 s (fresh page-cache memory is dear on
    a virtual machine that hands freed memory back to its host), 0.6 s
    with O_DIRECT; the tail that is not a whole buffer goes through the
    page cache.
    """

    def __init__(self, path, direct, fd=None):
        if fd is not None:
            # A pipe to the engine, which streams it on (stream_write):
            # no file, no O_DIRECT.
            self._fd = fd
            direct = False
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            if direct:
                flags |= os.O_DIRECT
            self._fd = os.open(path, flags, 0o644)
        self._direct = direct
        self._free = queue.Queue()
        self._full = queue.Queue()
        for _ in range(2):
            self._free.put(mmap.mmap(-1, _OUTPUT_BUFFER))
        self._error = None
        self._buffer = self._free.get()
        self._fill = 0
        self._thread = threading.Thread(target=self._write_loop,
                                        name='xhv-vmdk-output', daemon=True)
        self._thread.start()

    def _write_loop(self):
        while True:
            item = self._full.get()
            if item is None:
                return
            buffer, length = item
            try:
                if self._error is None:
                    _write_all(self._fd, memoryview(buffer)[:length])
            except OSError as error:
                self._error = error
            self._free.put(buffer)

    def write(self, data):
        view = memoryview(data)
        while len(view):
            step = min(len(view), _OUTPUT_BUFFER - self._fill)
            self._buffer[self._fill:self._fill + step] = view[:step]
            self._fill += step
            view = view[step:]
            if self._fill == _OUTPUT_BUFFER:
                self._hand_over()

    def _hand_over(self):
        if self._error is not None:
            raise self._error
        self._full.put((self._buffer, self._fill))
        self._buffer = self._free.get()
        self._fill = 0

    def close(self):
        """Write what is left and close; raises what writing raised."""
        if self._fd is None:
            return
        try:
            self._full.put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error
            if self._fill:
                if self._direct:
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(
                        self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                _write_all(self._fd, memoryview(self._buffer)[:self._fill])
        finally:
            os.close(self._fd)
            self._fd = None

    def abort(self):
        if self._fd is not None:
            self._full.put(None)
            self._thread.join()
            os.close(self._fd)
            self._fd = None


def _write_all(fd, view):
    while len(view):
        view = view[os.write(fd, view):]


def _start_qemu_nbd(config, folder):
    """qemu-nbd serving the source read-only; (process, NBDReader)."""
    source = config['source']
    # An explicit block-node spec (block_spec) names its checked driver
    # itself; --format beside it could only disagree with it.
    fmt = ([] if source.startswith(block_spec.JSON_PREFIX)
           else ['--format=%s' % config['source_format']])
    return qemu_nbd.start(config['limit_argv'], ['--read-only'] + fmt +
                          [source], folder, nbd_reader.NBDReader,
                          'the source')


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


def _read_ahead(reader, capacity, chunks, stop, runs=None):
    """Put (offset, data) of every data run on ``chunks``, then None.

    ``runs``: the data runs when the caller knows them better than NBD
    block status (a vhdx source, see vhdx_bat).

    Runs on a thread of its own so qemu-nbd's reads overlap the writer's
    work; an exception is put on the queue in place of None.
    """
    step = nbd_reader.MAX_READ
    try:
        for start, end in (data_runs(reader, capacity) if runs is None
                           else runs):
            for offset in range(start, end, step):
                if stop.is_set():
                    return
                length = min(step, end - offset)
                data = reader.read(offset, min(length, capacity - offset))
                if len(data) < length:  # the last grain, past the disk end
                    data += bytes(length - len(data))
                chunks.put((offset, data))
        chunks.put(None)
    except BaseException as error:  # handed to the main thread
        chunks.put(error)


def copy(reader, writer, capacity, progress, runs=None):
    """Read every data run and hand it to the writer, in order."""
    chunks = queue.Queue(maxsize=_READ_AHEAD)
    stop = threading.Event()
    thread = threading.Thread(target=_read_ahead, name='xhv-nbd-read',
                              args=(reader, capacity, chunks, stop, runs),
                              daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            offset, data = item
            writer.add_chunk(offset, data)
            progress.update(offset + len(data))
    finally:
        # On an error, stop the reader (it may wait on a full queue).
        stop.set()
        while thread.is_alive():
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def vhdx_runs(config, folder, capacity):
    """The data runs of a vhdx source from its BAT, or None (read whole).

    qemu 7.2 reports no allocation for vhdx (vhdx_bat); the container's
    raw bytes come from a short-lived qemu-nbd serving the same protocol
    node with the raw driver, read-only, before the source's own qemu-nbd
    starts (a remote source's bridge serves one client at a time).
    """
    source = config['source']
    if config['source_format'] != 'vhdx' or \
            not source.startswith(block_spec.JSON_PREFIX):
        return None
    node = json.loads(source[len(block_spec.JSON_PREFIX):]).get('file')
    if not isinstance(node, dict):
        return None
    raw = block_spec.JSON_PREFIX + json.dumps({'driver': 'raw',
                                               'file': node})
    bat_folder = os.path.join(folder, 'vhdx')
    os.mkdir(bat_folder, 0o700)
    proc, reader = qemu_nbd.start(config['limit_argv'],
                                  ['--read-only', raw], bat_folder,
                                  nbd_reader.NBDReader, 'the vhdx container')
    try:
        runs = vhdx_bat.data_runs(reader.read, reader.size, capacity)
    except nbd_client.NBDError:
        runs = None
    finally:
        reader.close()
        try:
            proc.wait(10)  # it exits when its only client leaves
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if runs is None:
        return None
    # The last block may pass the disk's end: stop at its last grain.
    last = -(-capacity // vmdk_writer.GRAIN) * vmdk_writer.GRAIN
    return [(start, min(end, last)) for start, end in runs]


def convert(config):
    """Write the output; raises on any failure (the engine removes it)."""
    folder = tempfile.mkdtemp(prefix='xhv-vmdkw-',
                              dir=config.get('scratch_dir'))
    os.chmod(folder, 0o700)
    proc = reader = writer = output = None
    capacity = int(config['capacity'])
    try:
        runs = vhdx_runs(config, folder, capacity)
        proc, reader = _start_qemu_nbd(config, folder)
        if reader.size != capacity:
            raise exceptions.ConversionFailed(
                'qemu-nbd serves %d bytes, the inspected disk has %d' % (
                    reader.size, capacity))
        progress = qemu_nbd.Progress(capacity)
        progress.update(0, force=True)
        output_fd = config.get('output_fd')
        output = Output(config['output'], bool(config.get('direct')),
                        fd=None if output_fd is None else int(output_fd))
        writer = vmdk_writer.StreamWriter(
            output.write, capacity, os.path.basename(config['output']),
            level=config['level'], workers=config['workers'],
            adapter=config.get('adapter', vmdk_writer.DEFAULT_ADAPTER),
            hw_version=config.get('hw_version',
                                  vmdk_writer.DEFAULT_HW_VERSION))
        copy(reader, writer, capacity, progress, runs)
        writer.close()
        output.close()
        reader.close()
        reader = None
        returncode = proc.wait()
        if returncode:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %d while serving the source'
                % returncode, returncode, qemu_nbd.log_tail(folder))
        progress.update(capacity, force=True)
    finally:
        if writer is not None:
            writer.abort()
        if output is not None:
            output.abort()
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
