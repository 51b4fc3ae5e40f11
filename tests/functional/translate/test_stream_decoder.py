"""The streamOptimized vmdk stream decoder, through the engine.

Real qemu-img made the streams, real qemu-nbd writes the output, and every
result is checked against qemu-img's own reading of the same file (the
engine with ``vmdk_stream_decoder=False``) with ``qemu-img compare``.
"""

import base64
import os
import struct
import subprocess
import zlib

import pytest

from nova_xhv import translate
from nova_xhv.translate import qemu_img
from nova_xhv.translate import stream_child
from nova_xhv.translate import stream_convert
from nova_xhv.translate import vmdk_stream
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.functional.translate import helpers

MiB = 1024 * 1024
QEMU_READS = translate.ConvertOptions(vmdk_stream_decoder=False)


def make_stream(tmp_path, name='guest.vmdk', size=24 * MiB, seed=3,
                extra=0):
    """A qemu-made streamOptimized vmdk, its raw source and extents."""
    raw = str(tmp_path / ('%s.raw' % name))
    extents = disks.make_raw_disk(raw, size, seed=seed)
    if extra:
        with open(raw, 'r+b') as f:
            f.seek(2 * MiB)
            f.write(os.urandom(extra))
    path = str(tmp_path / name)
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw, path)
    return path, raw, extents


def decoder_runs(launches):
    return [a for a in launches.calls
            if stream_convert.child_argv()[-1] in a]


@pytest.mark.parametrize('to_format', ['qcow2', 'raw'])
def test_decodes_what_qemu_reads(tmp_path, launches, to_format):
    src, raw, _extents = make_stream(tmp_path, extra=5 * MiB + 123)
    ours = str(tmp_path / ('ours.' + to_format))
    theirs = str(tmp_path / ('theirs.' + to_format))
    progress = []
    result = translate.convert(src, ours, to_format,
                               progress=progress.append)
    assert len(decoder_runs(launches)) == 1
    assert not [a for a in launches.calls if 'convert' in a]
    translate.convert(src, theirs, to_format, options=QEMU_READS)
    assert translate.compare(ours, to_format, theirs, to_format)
    assert translate.compare(ours, to_format, raw, 'raw')
    assert result.virtual_size == 24 * MiB
    assert helpers.virtual_size(ours, to_format) == 24 * MiB
    assert progress[0] == 0 and progress[-1] == 100
    assert progress == sorted(progress)
    # Zero grains were skipped: the output stays sparse.
    assert result.bytes_written < 12 * MiB


def test_vmware_style_tail_of_tables_and_end_marker(tmp_path):
    # VMware ends a stream with grain tables, directory and footer in
    # marked blocks and an end-of-stream marker; qemu puts its tables up
    # front.  Appending the marked blocks to a qemu stream makes a file
    # both readers take: the decoder must skip them and stop at the end.
    src, raw, _extents = make_stream(tmp_path)
    with open(src, 'ab') as f:
        for kind, sectors in ((vmdk_stream.MARKER_GT, 4),
                              (vmdk_stream.MARKER_GD, 1),
                              (vmdk_stream.MARKER_FOOTER, 1),
                              (vmdk_stream.MARKER_EOS, 0)):
            f.write(struct.pack('<QII', sectors, 0, kind) + bytes(500)
                    + b'\xee' * 512 * sectors)
    ours = str(tmp_path / 'ours.qcow2')
    translate.convert(src, ours, 'qcow2')
    assert translate.compare(ours, 'qcow2', raw, 'raw')


def _grain_records(path):
    """(offset, lba, size) of every grain marker in a qemu stream."""
    with open(path, 'rb') as f:
        data = f.read()
    header = vmdk_stream.parse_header(data[:512])
    offset = header.overhead_sectors * 512
    found = []
    while offset + 12 <= len(data):
        lba, size = struct.unpack_from('<QI', data, offset)
        if size == 0:
            break
        found.append((offset, lba, size))
        offset += -(-(12 + size) // 512) * 512
    return found


def _rewrite_grain(path, index, lba=None, payload=None):
    offset, old_lba, size = _grain_records(path)[index]
    with open(path, 'r+b') as f:
        f.seek(offset)
        if payload is None:
            f.write(struct.pack('<Q', lba))
        else:
            assert len(payload) <= size
            f.write(struct.pack('<QI', old_lba if lba is None else lba,
                                len(payload)) + payload)


@pytest.mark.parametrize('damage,why', [
    (dict(lba=1 << 40), 'not a grain boundary inside'),
    (dict(payload=zlib.compress(bytes(64 * 65536))[:4000]),
     'inflates to more than one 65536-byte grain'),
    (dict(payload=zlib.compress(os.urandom(3000))[:-20]),
     'truncated deflate stream'),
    (dict(payload=b'\x01' * 200), 'does not inflate'),
])
def test_hostile_grains_fail_clearly_and_leave_nothing(tmp_path, damage,
                                                       why):
    # The header, descriptor and tables are intact, so the inspection
    # passes; the damage is in the grains only the conversion reads.
    src, _raw, _extents = make_stream(tmp_path)
    _rewrite_grain(src, 1, **damage)
    out = str(tmp_path / 'out.qcow2')
    with pytest.raises(translate.ConversionFailed) as caught:
        translate.convert(src, out, 'qcow2')
    assert 'vmdk stream decoder failed' in str(caught.value)
    assert why in str(caught.value)
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(str(tmp_path))
                if n.startswith('.xhv-convert-')]
    assert not _qemu_nbd_processes()


def _qemu_nbd_processes():
    found = subprocess.run(['pgrep', '-f', 'qemu-nbd.*xhv-stream-'],
                           capture_output=True, text=True)
    return found.stdout.split()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    src, raw, extents = make_stream(tmp_path, extra=20 * MiB)
    os.rename(src, str(folder / 'guest.vmdk'))
    tls = http_range.make_tls_files(str(tmp_path))
    with http_range.RangeServer(str(folder), username='xhv',
                                password='s3cret-pw', tls=tls) as server:
        yield server, raw, extents, tls


def _remote(server, tls):
    return translate.RemoteSource(server.url('guest.vmdk'), 'vmdk',
                                  username='xhv', password='s3cret-pw',
                                  ca_file=tls.ca)


def test_remote_stream_is_one_verified_get(served, tmp_path, launches):
    server, raw, extents, tls = served
    out = str(tmp_path / 'out.qcow2')
    translate.convert(_remote(server, tls), out, 'qcow2')
    assert translate.compare(out, 'qcow2', raw, 'raw')
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    gets = [r for r in server.requests if r[0] == 'GET']
    # The inspection's bounded ranges, then ONE GET of the whole file.
    streams = [r for r in gets if r[2] == 'bytes=0-%d' % (size - 1)]
    assert len(streams) == 1 and streams[0][3] == 206
    assert len(gets) <= 4, gets
    assert server.bytes_sent < size + 8 * MiB
    # Neither the URL nor the password reached any argv.
    runs = decoder_runs(launches)
    assert len(runs) == 1
    url = server.url('guest.vmdk')
    for argv in launches.calls:
        assert not any('s3cret' in arg or url in arg for arg in argv)


def test_remote_stream_cut_short_is_an_error(served, tmp_path):
    server, _raw, _extents, tls = served
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    server.cut(size // 2, size - 2 * MiB)  # the inspection still passes
    out = str(tmp_path / 'out.qcow2')
    with pytest.raises(translate.ConversionFailed) as caught:
        translate.convert(_remote(server, tls), out, 'qcow2')
    assert 'vmdk stream decoder failed' in str(caught.value)
    assert not os.path.exists(out)
    assert not _qemu_nbd_processes()


def test_remote_stream_wrong_ca_reads_nothing(served, tmp_path):
    server, _raw, _extents, _tls = served
    other = tmp_path / 'other'
    other.mkdir()
    wrong = http_range.make_tls_files(str(other))
    out = str(tmp_path / 'out.qcow2')
    with pytest.raises(translate.TLSVerificationFailed):
        translate.convert(_remote(server, wrong), out, 'qcow2')
    assert server.bytes_sent == 0
    assert not os.path.exists(out)


def test_other_targets_still_go_through_qemu_img(tmp_path, launches):
    src, raw, _extents = make_stream(tmp_path)
    out = str(tmp_path / 'out.vhdx')
    translate.convert(src, out, 'vhdx')
    assert not decoder_runs(launches)
    assert translate.compare(out, 'vhdx', raw, 'raw')


@pytest.fixture
def storage(served, tmp_path):
    """Where the disk is "stored": a second server, its own CA and login."""
    server, _raw, _extents, _tls = served
    folder = tmp_path / 'storage-tls'
    folder.mkdir()
    tls = http_range.make_tls_files(str(folder))
    with http_range.RangeServer(server.folder, username='ticket',
                                password='one-time', tls=tls) as store:
        yield store, tls


def _direct(store, tls, password='one-time', ca=None):
    login = base64.b64encode(('ticket:%s' % password).encode()).decode()
    with open(ca or tls.ca) as f:
        ca_pem = f.read()
    return translate.DirectRead(url=store.url('guest.vmdk'),
                                headers={'Authorization': 'Basic ' + login},
                                ca_pem=ca_pem)


def test_direct_read_streams_from_storage(served, storage, tmp_path,
                                          launches):
    server, raw, _extents, tls = served
    store, store_tls = storage
    source = _remote(server, tls)
    source.direct = _direct(store, store_tls)
    out = str(tmp_path / 'out.qcow2')
    translate.convert(source, out, 'qcow2')
    assert translate.compare(out, 'qcow2', raw, 'raw')
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    # The storage served the one GET of the stream; the source only the
    # inspection's ranges.
    assert [r[2] for r in store.requests] == ['bytes=0-%d' % (size - 1)]
    assert server.bytes_sent < 8 * MiB
    for argv in launches.calls:
        assert not any('one-time' in arg or 'BEGIN CERT' in arg
                       for arg in argv)


@pytest.mark.parametrize('problem', ['refused', 'unverified'])
def test_direct_read_that_cannot_start_falls_back(served, storage, tmp_path,
                                                  caplog, problem):
    server, raw, _extents, tls = served
    store, store_tls = storage
    source = _remote(server, tls)
    if problem == 'refused':  # a used or expired ticket: 401
        source.direct = _direct(store, store_tls, password='used')
    else:  # a certificate the given CA did not sign
        source.direct = _direct(store, store_tls, ca=tls.ca)
    out = str(tmp_path / 'out.qcow2')
    translate.convert(source, out, 'qcow2')
    assert translate.compare(out, 'qcow2', raw, 'raw')
    size = os.path.getsize(os.path.join(server.folder, 'guest.vmdk'))
    assert server.bytes_sent >= size  # the stream came from the source
    assert store.bytes_sent == 0
    assert 'the direct read of %s failed' % store.url('guest.vmdk') in \
        caplog.text
    assert 'one-time' not in caplog.text


def test_qemu_nbd_that_cannot_open_the_output_is_named(tmp_path):
    src, _raw, _extents = make_stream(tmp_path)
    config = {'output': str(tmp_path / 'missing.qcow2'),
              'output_format': 'qcow2', 'capacity': 24 * MiB,
              'size': os.path.getsize(src), 'cache': 'unsafe',
              'limit_argv': qemu_img.prlimit_argv(
                  qemu_img.Limits(30, 4 * 1024 ** 3)),
              'scratch_dir': str(tmp_path), 'path': src}
    with pytest.raises(translate.ConversionFailed) as caught:
        stream_child.convert(config)
    assert 'qemu-nbd exited with 1 before serving the output' in str(
        caught.value)
    assert 'missing.qcow2' in str(caught.value)  # qemu-nbd's own words
    assert not [n for n in os.listdir(str(tmp_path))
                if n.startswith('xhv-stream-')]
