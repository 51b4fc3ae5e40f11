"""Engine behaviour with real qemu-img.

Sparseness, failures, timeouts, progress, verification, HTTP sources.
"""

import os
import struct
import threading

import pytest

from nova_xhv import translate
from nova_xhv.translate import qemu_img
from nova_xhv.translate import stream_convert
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.functional.translate import helpers

MiB = 1024 * 1024
GiB = 1024 * MiB


@pytest.fixture(scope='module')
def sparse_disk(tmp_path_factory):
    """4 GiB virtual, ~1.5 MiB of data."""
    path = str(tmp_path_factory.mktemp('sparse') / 'big.raw')
    extents = disks.make_raw_disk(path, 4 * GiB, seed=5, count=16)
    return path, extents


@pytest.mark.parametrize('fmt,subformat', [
    ('raw', None), ('qcow2', None), ('vmdk', 'streamOptimized'),
    ('vmdk', 'monolithicSparse'), ('vhdx', None), ('vhd', 'dynamic'),
    ('vhd', 'fixed')])
def test_output_allocation_follows_data(sparse_disk, tmp_path, fmt,
                                        subformat):
    src, extents = sparse_disk
    data = sum(len(d) for _o, d in extents)
    out = str(tmp_path / 'out')
    result = translate.convert(src, out, fmt, from_format='raw',
                               subformat=subformat)
    allocated = os.stat(out).st_blocks * 512
    assert result.bytes_written == allocated
    # Metadata (VHD BAT, vhdx log, qcow2 tables) costs a few MiB at most;
    # the 4 GiB of zeros cost nothing.
    assert allocated < data + 16 * MiB
    # qemu-img skipped the holes instead of reading 4 GiB of zeros.
    assert result.bytes_read is not None
    assert result.bytes_read < 256 * MiB
    assert result.virtual_size == 4 * GiB
    # And back to raw, still sparse, still the same data.
    back = str(tmp_path / 'back.raw')
    translate.convert(out, back, 'raw', from_format=fmt)
    assert os.stat(back).st_blocks * 512 < data + 16 * MiB
    assert disks.check_extents(back, extents)


def _corrupt_qcow2(tmp_path):
    """A qcow2 whose 31st data cluster pointer is unaligned.

    Its header is clean, so it passes inspection; qemu-img then fails with
    EIO after converting most of the disk.
    """
    raw = str(tmp_path / 'src.raw')
    with open(raw, 'wb') as f:
        f.truncate(32 * MiB)
        for i in range(32):
            f.seek(i * MiB)
            f.write(os.urandom(64 * 1024))
    path = str(tmp_path / 'corrupt.qcow2')
    helpers.qemu('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    with open(path, 'r+b') as f:
        header = f.read(72)
        l1_offset, = struct.unpack('>Q', header[40:48])
        f.seek(l1_offset)
        l1_entry, = struct.unpack('>Q', f.read(8))
        entry_at = (l1_entry & 0x00fffffffffffe00) + 8 * 16 * 30
        f.seek(entry_at)
        entry, = struct.unpack('>Q', f.read(8))
        f.seek(entry_at)
        f.write(struct.pack('>Q', entry + 512))
    return path


def test_failed_conversion_leaves_nothing(tmp_path):
    src = _corrupt_qcow2(tmp_path)
    naive = str(tmp_path / 'naive.raw')
    with pytest.raises(Exception):
        helpers.qemu('convert', '-f', 'qcow2', '-O', 'raw', src, naive)
    assert os.path.exists(naive)  # bare qemu-img leaves a partial file
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    # The structure check would refuse it first (test_hostile_gate): this
    # is about what a failing qemu-img leaves behind.
    with pytest.raises(translate.ConversionFailed) as raised:
        translate.convert(src, str(out_dir / 'disk.vmdk'), 'vmdk',
                          from_format='qcow2',
                          options=translate.ConvertOptions(
                              structure_check=False))
    assert raised.value.returncode == 1
    assert 'Input/output error' in str(raised.value)
    assert helpers.files_under(str(out_dir)) == []
    assert os.listdir(str(out_dir)) == []


def _data_disk(tmp_path, data_mib):
    path = str(tmp_path / 'data.raw')
    with open(path, 'wb') as f:
        f.write(os.urandom(data_mib * MiB))
    return path


def test_timeout_kills_qemu_img(tmp_path, launches):
    src = _data_disk(tmp_path, 16)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    # 1 MiB/s for 16 MiB against a 1 s budget.
    options = translate.ConvertOptions(rate_limit=MiB, timeout_base=1,
                                       timeout_per_gib=0)
    with pytest.raises(translate.ConversionTimeout):
        translate.convert(src, str(out_dir / 'out.qcow2'), 'qcow2',
                          from_format='raw', options=options)
    assert len(launches.pids) == 1
    pid = launches.pids[0]
    # Killed and reaped: no process, not even a zombie.
    assert not os.path.exists('/proc/%d' % pid)
    assert os.listdir(str(out_dir)) == []


def test_cancel_stops_qemu_img(tmp_path, launches):
    src = _data_disk(tmp_path, 16)
    cancel = threading.Event()

    def progress(percent):
        if percent > 0:
            cancel.set()

    options = translate.ConvertOptions(rate_limit=2 * MiB)
    with pytest.raises(translate.ConversionFailed, match='cancelled'):
        translate.convert(src, str(tmp_path / 'out.qcow2'), 'qcow2',
                          from_format='raw', options=options,
                          progress=progress, cancel_event=cancel)
    assert not os.path.exists('/proc/%d' % launches.pids[0])
    assert not os.path.exists(str(tmp_path / 'out.qcow2'))


def test_progress_reported_increasing(tmp_path):
    src = _data_disk(tmp_path, 24)
    calls = []
    # 12 MiB/s for 24 MiB: about two seconds of qemu-img -p output.
    options = translate.ConvertOptions(rate_limit=12 * MiB)
    translate.convert(src, str(tmp_path / 'out.vhdx'), 'vhdx',
                      from_format='raw', options=options,
                      progress=calls.append)
    assert calls[0] == 0.0
    assert calls[-1] == 100.0
    assert calls == sorted(calls)
    assert any(0.0 < value < 100.0 for value in calls)
    assert len(set(calls)) >= 3


def test_verify_catches_a_mismatch(tmp_path, monkeypatch):
    src = _data_disk(tmp_path, 2)
    decoy = str(tmp_path / 'decoy.raw')
    with open(decoy, 'wb') as f:
        f.write(os.urandom(2 * MiB))
    real_popen = qemu_img._popen

    def swap_source(argv, **kwargs):
        # Make qemu-img convert read the decoy: a conversion gone wrong.
        return real_popen([a.replace(src, decoy) for a in argv], **kwargs)

    monkeypatch.setattr(qemu_img, '_popen', swap_source)
    out = str(tmp_path / 'out.qcow2')
    with pytest.raises(translate.ConversionFailed,
                       match='verification failed'):
        translate.convert(src, out, 'qcow2', from_format='raw',
                          options=translate.ConvertOptions(verify=True))
    assert not os.path.exists(out)
    # Without verification the bad output would have been accepted.
    result = translate.convert(src, out, 'qcow2', from_format='raw')
    assert not result.verified
    assert not translate.compare(src, 'raw', out, 'qcow2')
    assert translate.compare(decoy, 'raw', out, 'qcow2')


def test_compare_across_formats(tmp_path):
    src = str(tmp_path / 'a.raw')
    disks.make_raw_disk(src, 8 * MiB)
    vhd = str(tmp_path / 'a.vhd')
    translate.convert(src, vhd, 'vhd')
    assert translate.compare(src, 'raw', vhd, 'vhd')
    other = str(tmp_path / 'b.raw')
    disks.make_raw_disk(other, 8 * MiB, seed=99)
    assert not translate.compare(other, 'raw', vhd, 'vhd')


def test_existing_destination_is_kept(tmp_path):
    src = str(tmp_path / 'a.raw')
    disks.make_raw_disk(src, 4 * MiB)
    dst = str(tmp_path / 'keep.qcow2')
    with open(dst, 'wb') as f:
        f.write(b'precious')
    with pytest.raises(translate.TranslationError, match='already exists'):
        translate.convert(src, dst, 'qcow2')
    with open(dst, 'rb') as f:
        assert f.read() == b'precious'


# --- HTTP(S) sources -------------------------------------------------------

@pytest.fixture
def served(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    raw = str(tmp_path / 'guest.raw')
    extents = disks.make_raw_disk(raw, 24 * MiB + 512, seed=3)
    for driver, name, opts in (
            ('qcow2', 'guest.qcow2', []),
            ('vmdk', 'guest.vmdk', ['-o', 'subformat=streamOptimized']),
            ('vhdx', 'guest.vhdx', []),
            ('raw', 'guest.img', [])):
        helpers.qemu('convert', '-f', 'raw', '-O', driver, *opts, raw,
                     str(folder / name))
    with http_range.RangeServer(str(folder), username='xhv',
                                password='pa55,word"x') as server:
        yield server, extents


@pytest.mark.parametrize('name,fmt', [('guest.qcow2', 'qcow2'),
                                      ('guest.vmdk', 'vmdk'),
                                      ('guest.vhdx', 'vhdx'),
                                      ('guest.img', 'raw')])
def test_remote_source_converts(served, tmp_path, launches, name, fmt):
    server, extents = served
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    source = translate.RemoteSource(server.url(name), fmt, username='xhv',
                                    password='pa55,word"x')
    out = str(tmp_path / 'out.raw')
    result = translate.convert(
        source, out, 'raw', options=translate.ConvertOptions(
            verify=True, scratch_dir=str(scratch)))
    assert result.verified
    assert result.src_info.format == fmt
    assert disks.check_extents(out, extents)
    assert os.path.getsize(out) == 24 * MiB + 512
    # qemu-img read the local NBD bridge: neither the URL nor the password
    # reached its argv, and it reads with its usual coroutines.
    assert launches.calls
    for argv in launches.calls:
        assert not any('pa55' in arg for arg in argv)
        assert not any(server.url(name) in arg for arg in argv)
    if fmt == 'vmdk':
        # A streamOptimized vmdk is decoded by XHV's stream decoder, which
        # read the source itself (its configuration came on stdin); the
        # bridge served only the verification's qemu-img compare.
        assert [a for a in launches.calls if stream_convert.child_argv()[-1]
                in a]
        assert not [a for a in launches.calls if 'convert' in a]
    else:
        convert = [a for a in launches.calls if 'convert' in a][0]
        assert '"driver": "nbd"' in convert[-2]
        assert convert[convert.index('-m') + 1] == '8'
    assert os.listdir(str(scratch)) == []
    # Inspection read bounded ranges, never the whole file.
    inspection = [r for r in server.requests if r[0] == 'GET'][:3]
    for _method, _path, range_header, status in inspection:
        assert status == 206
        start, end = map(int, range_header.split('=')[1].split('-'))
        assert end - start < 4 * MiB + 1


def test_remote_hostile_refused_before_qemu_img(served, tmp_path, launches):
    server, _extents = served
    canary = helpers.write_canary(str(tmp_path / 'secret.bin'))
    hostile = os.path.join(server.folder, 'hostile.qcow2')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', canary, '-F', 'raw',
                 hostile)
    source = translate.RemoteSource(server.url('hostile.qcow2'), 'qcow2',
                                    username='xhv', password='pa55,word"x')
    with pytest.raises(translate.UnsafeImage, match='backing file'):
        translate.convert(source, str(tmp_path / 'out.raw'), 'raw')
    assert launches.calls == []
    mismatch = translate.RemoteSource(server.url('guest.qcow2'), 'raw',
                                      username='xhv',
                                      password='pa55,word"x')
    with pytest.raises(translate.FormatMismatch):
        translate.convert(mismatch, str(tmp_path / 'out.raw'), 'raw')
    assert launches.calls == []
    assert not os.path.exists(str(tmp_path / 'out.raw'))


def test_remote_wrong_password(served, tmp_path):
    server, _extents = served
    source = translate.RemoteSource(server.url('guest.qcow2'), 'qcow2',
                                    username='xhv', password='wrong')
    with pytest.raises(translate.TranslationError, match='credentials'):
        translate.convert(source, str(tmp_path / 'out.raw'), 'raw')


@pytest.fixture
def served_tls(tmp_path, served):
    """The same folder over HTTPS, signed by a private CA."""
    server, extents = served
    tls_dir = tmp_path / 'tls'
    tls_dir.mkdir()
    tls = http_range.make_tls_files(str(tls_dir))
    with http_range.RangeServer(server.folder, username='xhv',
                                password='pa55,word"x', tls=tls) as https:
        yield https, tls, extents


def test_https_with_private_ca(served_tls, tmp_path, launches):
    server, tls, extents = served_tls
    source = translate.RemoteSource(server.url('guest.vmdk'), 'vmdk',
                                    username='xhv', password='pa55,word"x',
                                    ca_file=tls.ca)
    out = str(tmp_path / 'out.raw')
    result = translate.convert(source, out, 'raw',
                               options=translate.ConvertOptions(verify=True))
    assert result.verified
    assert disks.check_extents(out, extents)
    # The bridge verified TLS against ca_file; qemu-img saw neither the
    # URL nor the password.
    for argv in launches.calls:
        assert not any('pa55' in arg for arg in argv)
        assert not any('https:' in arg for arg in argv)
    assert any(r[3] == 206 for r in server.requests)


def test_https_verification_is_on_by_default(served_tls, tmp_path,
                                             launches):
    server, tls, _extents = served_tls
    untrusted = translate.RemoteSource(server.url('guest.qcow2'), 'qcow2',
                                       username='xhv',
                                       password='pa55,word"x')
    with pytest.raises(translate.TranslationError,
                       match='TLS verification'):
        translate.convert(untrusted, str(tmp_path / 'a.raw'), 'raw')
    assert launches.calls == []
    insecure = translate.RemoteSource(server.url('guest.qcow2'), 'qcow2',
                                      username='xhv',
                                      password='pa55,word"x', insecure=True)
    with pytest.warns(Warning, match='Unverified HTTPS request'):
        translate.convert(insecure, str(tmp_path / 'b.raw'), 'raw')
    assert os.path.getsize(str(tmp_path / 'b.raw')) == 24 * MiB + 512
