"""The read-ahead NBD bridge qemu-img reads remote sources through.

Real qemu-img, a real HTTP(S) Range server, the bridge as its own process.
"""

import os
import random
import subprocess

import pytest
import requests

from nova_xhv import translate
from nova_xhv.translate import nbd_bridge
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.functional.translate import helpers

MiB = 1024 * 1024
PASSWORD = 'br1dge-pa55'
BRIDGED = translate.ConvertOptions(vmdk_stream_decoder=False)


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    raw = str(tmp_path / 'guest.raw')
    # Enough data that per-read requests would show: 40 MiB in 64 MiB.
    extents = disks.make_raw_disk(raw, 64 * MiB, seed=11)
    with open(raw, 'r+b') as f:
        f.seek(8 * MiB)
        f.write(os.urandom(40 * MiB))
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw,
                 str(folder / 'guest.vmdk'))
    helpers.qemu('convert', '-f', 'raw', '-O', 'qcow2', raw,
                 str(folder / 'guest.qcow2'))
    with http_range.RangeServer(str(folder), username='xhv',
                                password=PASSWORD) as server:
        yield server, raw, extents


def _source(server, name, fmt):
    return translate.RemoteSource(server.url(name), fmt, username='xhv',
                                  password=PASSWORD)


@pytest.mark.parametrize('name,fmt', [('guest.vmdk', 'vmdk'),
                                      ('guest.qcow2', 'qcow2')])
def test_streams_instead_of_one_request_per_read(served, tmp_path, name,
                                                 fmt):
    server, raw, _extents = served
    out = str(tmp_path / 'out.qcow2')
    # qemu-img reads the vmdk too (not the stream decoder, which makes one
    # GET of its own: test_stream_decoder.py).
    translate.convert(_source(server, name, fmt), out, 'qcow2',
                      options=BRIDGED)
    assert translate.compare(out, 'qcow2', raw, 'raw')
    size = os.path.getsize(os.path.join(server.folder, name))
    gets = [r for r in server.requests if r[0] == 'GET']
    # Inspection (3 ranges at most) plus a handful of bridge requests; a
    # request per qemu read (or per 4 MiB of readahead) would be dozens.
    assert len(gets) <= 12, gets
    # Every byte crossed the network about once, not once per read.
    assert server.bytes_sent < 1.5 * size + 8 * MiB


def test_random_reads_return_the_right_bytes(served):
    server, _raw, _extents = served
    path = os.path.join(server.folder, 'guest.vmdk')
    size = os.path.getsize(path)
    session = requests.Session()
    session.auth = ('xhv', PASSWORD)
    source = nbd_bridge.ReadAheadSource(session, server.url('guest.vmdk'),
                                        size)
    rng = random.Random(5)
    reads = [(0, 512), (size - 1024, 1024), (5 * MiB - 7, 3 * MiB)]
    # Sequential runs, jumps back and forward, block-straddling reads.
    offset = MiB + 3
    for _ in range(40):
        reads.append((offset, 200000))
        offset += 200000
    reads += [(rng.randrange(size - MiB), rng.randrange(1, MiB))
              for _ in range(30)]
    try:
        with open(path, 'rb') as f:
            for start, length in reads:
                f.seek(start)
                assert b''.join(source.read(start, length)) == \
                    f.read(length), (start, length)
        with pytest.raises(nbd_bridge.SourceError, match='outside'):
            source.read(size - 10, 11)
    finally:
        source.close()
        session.close()


def test_source_dying_midway_is_a_clear_error(served, tmp_path):
    server, _raw, _extents = served
    size = os.path.getsize(os.path.join(server.folder, 'guest.qcow2'))
    # Inspection reads the head and the tail; the data in between dies.
    server.cut(size // 2, size - 2 * MiB)
    out = str(tmp_path / 'out.raw')
    with pytest.raises(translate.ConversionFailed) as caught:
        translate.convert(_source(server, 'guest.qcow2', 'qcow2'), out,
                          'raw')
    assert 'reading the source failed' in str(caught.value)
    assert 'HTTP 500' in str(caught.value) or 'ended early' in str(
        caught.value)
    assert not os.path.exists(out)
    assert sorted(os.listdir(str(tmp_path))) == ['guest.raw', 'served']


def test_bridge_process_gets_no_secret_and_leaves_nothing(served, tmp_path,
                                                          monkeypatch):
    server, _raw, _extents = served
    started = []
    real_popen = subprocess.Popen

    def recording_popen(argv, **kwargs):
        proc = real_popen(argv, **kwargs)
        if any(nbd_bridge.__name__ in arg for arg in argv):
            started.append((list(argv), proc))
        return proc

    monkeypatch.setattr(nbd_bridge.subprocess, 'Popen', recording_popen)
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    source = _source(server, 'guest.vmdk', 'vmdk')
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    with nbd_bridge.NBDBridge(source, size, str(scratch)) as bridge:
        assert os.stat(os.path.dirname(bridge.socket_path)).st_mode \
            & 0o777 == 0o700
        info = helpers.qemu('info', '--output=json', '-f', 'vmdk',
                            bridge.filename('vmdk'))
        assert b'"virtual-size": %d' % (64 * MiB) in info
        [(argv, proc)] = started
        with open('/proc/%d/cmdline' % proc.pid, 'rb') as f:
            cmdline = f.read().decode()
        assert PASSWORD not in cmdline and 'http' not in cmdline
        assert PASSWORD not in ' '.join(argv)
    assert proc.poll() is not None
    assert os.listdir(str(scratch)) == []


def test_unreachable_source_fails_before_qemu_img(served, tmp_path):
    server, _raw, _extents = served
    source = _source(server, 'guest.vmdk', 'vmdk')
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    server.stop()
    with nbd_bridge.NBDBridge(source, size, str(tmp_path)) as bridge:
        with pytest.raises(subprocess.CalledProcessError):
            helpers.qemu('info', '-f', 'vmdk', bridge.filename('vmdk'))
        assert 'cannot read' in bridge.source_error()


def test_source_size_not_a_sector_multiple_behaves_as_a_local_file(
        tmp_path):
    # qemu's NBD client stalls on an unaligned export; the bridge exports
    # whole sectors (zeros past the end), so the engine sees what it sees
    # for a local file of that size, here a clear refusal, not a hang.
    folder = tmp_path / 'served'
    folder.mkdir()
    odd = str(folder / 'odd.img')
    with open(odd, 'wb') as f:
        f.write(os.urandom(3 * MiB + 7))
    local_error = remote_error = None
    try:
        translate.convert(odd, str(tmp_path / 'local.qcow2'), 'qcow2')
    except translate.UnsupportedFormat as error:
        local_error = str(error).replace(odd, 'SOURCE')
    with http_range.RangeServer(str(folder)) as server:
        source = translate.RemoteSource(server.url('odd.img'), 'raw')
        try:
            translate.convert(source, str(tmp_path / 'remote.qcow2'),
                              'qcow2', options=translate.ConvertOptions(
                                  timeout_base=60))
        except translate.UnsupportedFormat as error:
            remote_error = str(error).replace(source.url, 'SOURCE')
        # Read through the bridge directly: the data, then zeros.
        size = os.path.getsize(odd)
        with nbd_bridge.NBDBridge(source, size, str(tmp_path)) as bridge:
            out = str(tmp_path / 'copy.raw')
            helpers.qemu('convert', '-f', 'raw', '-O', 'raw',
                         bridge.filename('raw'), out)
    assert local_error and '512-byte sectors' in local_error
    assert remote_error == local_error
    with open(out, 'rb') as f, open(odd, 'rb') as g:
        copied = f.read()
        assert copied[:size] == g.read()
        assert copied[size:] == bytes(512 - 7)
