"""XHV's streamOptimized vmdk writer, through the engine, on real qemu.

Every source format the engine reads is made by real qemu-img from a raw
reference; the engine writes it to streamOptimized vmdk through the
writer (qemu-nbd serving the source read-only, NBD block status, parallel
zlib-ng); then ``qemu-img check`` must be clean, ``qemu-img compare`` with
the source must say identical, and the project's own stream decoder must
read it back equal to the reference.
"""

import os

import pytest

from nova_xhv import translate
from nova_xhv.translate import stream_write
from nova_xhv.translate import vmdk_writer
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.functional.translate import helpers

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
SECTOR = 512
TEXT = b''.join(b'%06d: the quick brown fox jumps over the lazy dog\n' % i
                for i in range(40000))

# Source format -> qemu-img convert -O/-o arguments.
SOURCES = {
    'raw': ('raw', []),
    'qcow2': ('qcow2', []),
    'vhd': ('vpc', ['-o', 'subformat=dynamic,force_size=on']),
    'vhdx': ('vhdx', []),
    'vmdk': ('vmdk', ['-o', 'subformat=monolithicSparse']),
}


def writer_runs(launches):
    return [a for a in launches.calls if stream_write.child_argv()[-1] in a]


def qemu_converts(launches):
    return [a for a in launches.calls if 'convert' in a and
            any('qemu-img' in str(x) for x in a)]


def _fill(path, size, case):
    """The raw reference of one case; returns its size."""
    with open(path, 'wb') as f:
        f.truncate(size)
        if case == 'zero':
            f.write(bytes(size))  # allocated, every byte zero
        elif case == 'full':
            f.write(os.urandom(size))
        elif case == 'odd':
            # Data right up to the last, partial grain.
            f.seek(MiB - 1000)
            f.write(os.urandom(3000))
            f.seek(size - 5 * SECTOR - 100)
            f.write(TEXT[:5 * SECTOR + 100])
        elif case == 'mixed':
            # Compressible text, random blocks and zero runs.
            f.write(TEXT[:MiB])
            f.seek(MiB + 64 * 1024 + 7)
            f.write(os.urandom(MiB + 3))
            f.seek(4 * MiB)
            f.write(TEXT[:512 * 1024] + os.urandom(512 * 1024))
        elif case == 'sparse':
            for offset, data in disks.pattern_extents(size, seed=5):
                f.seek(offset)
                f.write(data)
            f.seek(size - MiB)
            f.write(TEXT[:MiB])
    return size


def _sizes(fmt, case):
    if case == 'sparse':
        # VHD ends just below 2040 GiB.  qemu 7.2's vhdx driver reports
        # no allocation; the writer reads a vhdx's BAT itself (vhdx_bat),
        # so 2 TiB of vhdx are read where the data is, as for the others.
        return {'vhd': 2000 * GiB}.get(fmt, 2 * TiB)
    if case == 'odd':
        return 3 * MiB + 5 * SECTOR
    return 6 * MiB


def make_source(tmp_path, fmt, case):
    raw = str(tmp_path / 'reference.raw')
    _fill(raw, _sizes(fmt, case), case)
    if fmt == 'raw':
        return raw, raw
    driver, options = SOURCES[fmt]
    path = str(tmp_path / ('source.' + fmt))
    # -S 0 keeps the zero case allocated: the writer must drop its grains
    # because they are zero, not because the source has holes.
    sparse = ['-S', '0'] if case in ('zero', 'full') else []
    helpers.qemu('convert', '-f', 'raw', '-O', driver, *options, *sparse,
                 raw, path)
    return path, raw


def _data_extents(path):
    """(offset, length) of the data in a sparse raw file (SEEK_DATA)."""
    found = []
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            found.append((start, end - start))
            offset = end
    return found


def _qemu_reads_back(out, reference, tmp_path):
    """qemu's vmdk driver reads every data extent of ``reference`` back.

    For the 2 TiB disks: ``qemu-img compare`` walks a streamOptimized
    vmdk one grain per block-status call (19 s for 2 TiB against qcow2,
    minutes against vhd), so the data is read back where it is and the
    holes are covered by the decoder's comparison.
    """
    piece = str(tmp_path / 'piece.raw')
    grain = vmdk_writer.GRAIN
    with open(reference, 'rb') as ref:
        for offset, length in _data_extents(reference):
            first = offset // grain
            count = -(-(offset + length) // grain) - first
            helpers.qemu('convert', '--image-opts', '-O', 'raw',
                         'driver=raw,offset=%d,size=%d,file.driver=vmdk,'
                         'file.file.filename=%s' % (
                             first * grain, count * grain, out), piece)
            ref.seek(first * grain)
            with open(piece, 'rb') as f:
                got = f.read()
            assert got == ref.read(len(got)) and got
            os.unlink(piece)


def check_output(out, src, src_driver, reference, tmp_path, sparse=False):
    helpers.qemu('check', '-f', 'vmdk', out)  # exit 0: no errors
    if sparse:
        _qemu_reads_back(out, reference, tmp_path)
    else:
        helpers.qemu('compare', '-f', src_driver, '-F', 'vmdk', src, out)
    # The project's stream decoder reads it back (streamOptimized -> raw
    # goes through it, not through qemu's vmdk driver).
    back = str(tmp_path / 'back.raw')
    translate.convert(out, back, 'raw')
    helpers.qemu('compare', '-f', 'raw', '-F', 'raw', reference, back)
    os.unlink(back)


@pytest.mark.parametrize('fmt', sorted(SOURCES))
@pytest.mark.parametrize('case', ['zero', 'full', 'odd', 'mixed', 'sparse'])
def test_writer_matrix(tmp_path, launches, fmt, case):
    src, reference = make_source(tmp_path, fmt, case)
    out = str(tmp_path / 'out.vmdk')
    result = translate.convert(src, out, 'vmdk', from_format=fmt)
    assert result.dst_subformat == 'streamOptimized'
    assert len(writer_runs(launches)) == 1
    assert not qemu_converts(launches)
    info = translate.inspect_image(out, 'vmdk')
    assert info.subformat == 'streamOptimized'
    assert info.virtual_size == os.path.getsize(reference)
    check_output(out, src, SOURCES[fmt][0], reference, tmp_path,
                 sparse=case == 'sparse')
    size = os.path.getsize(out)
    if case == 'zero':
        # No grain at all: header + overhead, directory, footer, EOS.
        assert size == (vmdk_writer.OVERHEAD_SECTORS + 5) * SECTOR
    elif case == 'sparse':
        assert size < 16 * MiB  # data and tables only, never the holes
    elif case == 'mixed':
        # Text deflates; random blocks are stored (a few bytes more).
        assert size < 4 * MiB


def test_more_workers_and_levels_write_the_same_guest_data(tmp_path):
    src, reference = make_source(tmp_path, 'qcow2', 'mixed')
    outs = []
    for level, workers in ((0, 1), (6, 3)):
        out = str(tmp_path / ('out-%d.vmdk' % level))
        translate.convert(src, out, 'vmdk', options=translate.ConvertOptions(
            vmdk_compress_level=level, vmdk_compress_workers=workers))
        check_output(out, src, 'qcow2', reference, tmp_path)
        outs.append(os.path.getsize(out))
    assert outs[0] > outs[1] + MiB  # level 0 stores every grain


def test_rate_limit_falls_back_to_qemu_img_with_a_log_line(tmp_path,
                                                           launches, caplog):
    src, reference = make_source(tmp_path, 'qcow2', 'odd')
    out = str(tmp_path / 'out.vmdk')
    caplog.set_level('INFO')
    translate.convert(src, out, 'vmdk', options=translate.ConvertOptions(
        rate_limit=100 * MiB))
    assert not writer_runs(launches)
    assert len(qemu_converts(launches)) == 1
    assert 'convert_rate_limit' in caplog.text
    helpers.qemu('compare', '-f', 'qcow2', '-F', 'vmdk', src, out)


def test_writer_can_be_switched_off(tmp_path, launches):
    src, _reference = make_source(tmp_path, 'raw', 'odd')
    out = str(tmp_path / 'out.vmdk')
    translate.convert(src, out, 'vmdk', options=translate.ConvertOptions(
        vmdk_stream_writer=False))
    assert not writer_runs(launches) and qemu_converts(launches)


def test_monolithic_sparse_target_still_goes_through_qemu_img(
        tmp_path, launches):
    src, _reference = make_source(tmp_path, 'raw', 'odd')
    out = str(tmp_path / 'out.vmdk')
    translate.convert(src, out, 'vmdk', subformat='monolithicSparse')
    assert not writer_runs(launches) and qemu_converts(launches)


def test_unsafe_source_never_reaches_the_writer(tmp_path, launches):
    base = str(tmp_path / 'base.raw')
    _fill(base, 4 * MiB, 'mixed')
    src = str(tmp_path / 'child.qcow2')
    helpers.qemu('create', '-f', 'qcow2', '-F', 'raw', '-b', base, src)
    with pytest.raises(translate.UnsafeImage):
        translate.convert(src, str(tmp_path / 'out.vmdk'), 'vmdk')
    assert not writer_runs(launches)
    assert not os.path.exists(str(tmp_path / 'out.vmdk'))


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    src, reference = make_source(tmp_path, 'qcow2', 'mixed')
    os.rename(src, str(folder / 'guest.qcow2'))
    tls = http_range.make_tls_files(str(tmp_path))
    with http_range.RangeServer(str(folder), username='xhv',
                                password='s3cret-pw', tls=tls) as server:
        yield server, reference, tls


def test_remote_source_through_the_read_ahead_bridge(served, tmp_path,
                                                     launches):
    server, reference, tls = served
    out = str(tmp_path / 'out.vmdk')
    source = translate.RemoteSource(server.url('guest.qcow2'), 'qcow2',
                                    username='xhv', password='s3cret-pw',
                                    ca_file=tls.ca)
    translate.convert(source, out, 'vmdk')
    assert len(writer_runs(launches)) == 1
    helpers.qemu('compare', '-f', 'raw', '-F', 'vmdk', reference, out)
    for argv in launches.calls:
        assert not any('s3cret' in str(arg) for arg in argv)
