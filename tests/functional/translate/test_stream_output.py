"""The vmdk stream writer streaming into a consumer (translate.open_stream).

No output file: the writer's child writes into a pipe that the consumer
(an NFC upload in production, a plain file or a failing reader here)
reads while the child still reads and deflates.  What is checked on real
qemu: the stream is a valid streamOptimized vmdk equal to the source; the
consumer only ever sees the end of the stream once the writer succeeded;
a consumer that fails stops the writer and its error comes out; a
conversion that fails (cancelled here) makes the consumer's read raise
instead of ending; the source is never changed and no child is left.
"""

import os
import threading

import pytest

from nova_xhv import translate
from nova_xhv.translate import stream_write
from tests.fixtures import disks
from tests.functional.translate import helpers

MiB = 1024 * 1024


def _source(tmp_path, fmt, size=64 * MiB, data_mib=24):
    """A source in ``fmt`` with ``data_mib`` MiB of random data."""
    raw = str(tmp_path / 'ref.raw')
    with open(raw, 'wb') as f:
        f.truncate(size)
        f.seek(3 * MiB + 4096)
        f.write(os.urandom(data_mib * MiB // 2))
        f.seek(size - data_mib * MiB // 2)
        f.write(b'xhv streaming ' * (data_mib * MiB // 28))
    if fmt == 'raw':
        return raw, raw
    path = str(tmp_path / ('src.' + fmt))
    helpers.qemu('convert', '-f', 'raw', '-O', fmt, raw, path)
    return raw, path


def _to_file(path):
    def consume(reader):
        with open(path, 'wb') as f:
            while True:
                data = reader.read(1024 * 1024)
                if not data:
                    return 'whole'
                f.write(data)
    return consume


def _children_of_this_process():
    mine = str(os.getpid())
    found = []
    for pid in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % pid) as f:
                if f.read().rsplit(')', 1)[1].split()[1] == mine:
                    found.append(pid)
        except (OSError, IndexError):
            continue
    return found


@pytest.mark.parametrize('fmt', ['raw', 'qcow2', 'vhdx'])
def test_stream_is_a_valid_vmdk_equal_to_the_source(tmp_path, fmt):
    raw, src = _source(tmp_path, fmt)
    out = str(tmp_path / 'out.vmdk')
    with translate.open_stream(src, from_format=fmt) as stream:
        assert stream.virtual_size == 64 * MiB
        assert 24 * MiB <= stream.size_hint <= os.path.getsize(src)
        result, value = stream.run(_to_file(out))
    assert value == 'whole'
    assert result.bytes_written == os.path.getsize(out)
    assert (result.dst_format, result.dst_subformat) == (
        'vmdk', 'streamOptimized')
    helpers.qemu('check', '-f', 'vmdk', out)
    helpers.qemu('compare', '-f', 'raw', '-F', 'vmdk', raw, out)
    # Nothing was written next to the source.
    assert sorted(os.listdir(tmp_path)) == sorted(
        {'ref.raw', os.path.basename(src), 'out.vmdk'})


def test_a_failing_consumer_stops_the_writer_and_its_error_comes_out(
        tmp_path):
    others = set(_children_of_this_process())
    raw, src = _source(tmp_path, 'qcow2', size=256 * MiB, data_mib=128)
    before = disks.sha256_file(src)
    seen = []

    def consume(reader):
        seen.append(reader.read(4 * MiB))
        raise ConnectionResetError('the upload broke (injected)')

    with translate.open_stream(src, from_format='qcow2') as stream:
        with pytest.raises(ConnectionResetError, match='injected'):
            stream.run(consume)
    assert len(seen[0]) == 4 * MiB
    assert disks.sha256_file(src) == before
    # Only what this test started: other tests' services may live on.
    assert set(_children_of_this_process()) <= others


def test_a_failed_conversion_never_ends_the_stream(tmp_path):
    others = set(_children_of_this_process())
    raw, src = _source(tmp_path, 'raw', size=512 * MiB, data_mib=400)
    before = disks.sha256_file(src)
    cancel = threading.Event()
    got = []

    def consume(reader):
        while True:
            data = reader.read(MiB)
            if not data:
                got.append('end')  # must never happen
                return
            got.append(len(data))
            cancel.set()  # the conversion is cancelled mid-stream

    with translate.open_stream(src, from_format='raw',
                               cancel_event=cancel) as stream:
        with pytest.raises(translate.ConversionFailed, match='cancelled'):
            stream.run(consume)
    assert 'end' not in got
    assert 0 < sum(got) < 400 * MiB
    assert disks.sha256_file(src) == before
    # Only what this test started: other tests' services may live on.
    assert set(_children_of_this_process()) <= others


def test_a_consumer_that_stops_early_fails_the_run(tmp_path):
    _raw, src = _source(tmp_path, 'raw', size=64 * MiB, data_mib=32)

    def consume(reader):
        return reader.read(MiB)  # and never the rest

    with translate.open_stream(src, from_format='raw') as stream:
        with pytest.raises(translate.ConversionFailed):
            stream.run(consume)


def test_the_end_of_a_cut_stream_is_refused():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b'KDMV' + bytes(4092))
    os.close(write_fd)
    reader = stream_write.StreamReader(read_fd)
    assert len(reader.read(MiB)) == 4096
    # Whatever the consumer does, the engine checks what went through.
    with pytest.raises(translate.ConversionFailed, match='truncated'):
        reader.check()
    reader.settle(translate.ConversionFailed('the writer failed'))
    with pytest.raises(stream_write.StreamFailed, match='writer failed'):
        reader.read(MiB)
    reader.close()


def test_streaming_refuses_what_only_qemu_img_writes(tmp_path):
    _raw, src = _source(tmp_path, 'raw', size=4 * MiB, data_mib=1)
    with pytest.raises(translate.UnsupportedFormat, match='rate limit'):
        translate.open_stream(src, options=translate.ConvertOptions(
            rate_limit=1024 * 1024))
