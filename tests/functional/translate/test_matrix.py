"""Every ordered pair of formats, with real qemu-img.

The disk is 37 MiB + 7 sectors: no CHS geometry (cylinders x 16 heads x
63 sectors) equals it, so a VHD written without ``force_size=on`` would
come back 18944 bytes bigger.  The engine always writes VHD with
``force_size=on`` and checks the output's virtual size, so the size is
preserved exactly for every format.
"""

import itertools
import os

import pytest

from nova_xhv import translate
from nova_xhv.translate import formats
from tests.fixtures import disks
from tests.functional.translate import helpers

MiB = 1024 * 1024
SIZE = 37 * MiB + 7 * 512

# kind -> (canonical format, subformat, qemu-img driver, create options)
KINDS = {
    'raw': ('raw', None, 'raw', []),
    'qcow2': ('qcow2', None, 'qcow2', ['-o', 'compat=1.1']),
    'vmdk-streamOptimized': ('vmdk', 'streamOptimized', 'vmdk',
                             ['-o', 'subformat=streamOptimized']),
    'vmdk-monolithicSparse': ('vmdk', 'monolithicSparse', 'vmdk',
                              ['-o', 'subformat=monolithicSparse']),
    'vhdx': ('vhdx', 'dynamic', 'vhdx', ['-o', 'subformat=dynamic']),
    'vhd': ('vhd', 'dynamic', 'vpc',
            ['-o', 'subformat=dynamic,force_size=on']),
}
PAIRS = list(itertools.permutations(sorted(KINDS), 2))


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """The patterned disk in every kind, made with qemu-img directly."""
    folder = tmp_path_factory.mktemp('matrix-src')
    raw = str(folder / 'disk.raw')
    extents = disks.make_raw_disk(raw, SIZE, seed=11, count=24)
    made = {}
    for kind, (_fmt, _sub, driver, opts) in KINDS.items():
        if kind == 'raw':
            made[kind] = raw
            continue
        path = str(folder / ('disk.' + kind))
        helpers.qemu('convert', '-f', 'raw', '-O', driver, *opts, raw, path)
        made[kind] = path
    return {'paths': made, 'extents': extents,
            'sha256': disks.sha256_file(raw), 'raw': raw}


def _check_output(path, kind, sources, tmp_path):
    fmt, subformat, driver, _opts = KINDS[kind]
    assert helpers.virtual_size(path, driver) == SIZE
    info = translate.inspect_image(path, fmt)
    assert info.subformat == subformat
    assert info.virtual_size == SIZE
    back = helpers.to_raw(path, driver, str(tmp_path / 'back.raw'))
    assert os.path.getsize(back) == SIZE
    assert disks.check_extents(back, sources['extents'])
    assert disks.sha256_file(back) == sources['sha256']


@pytest.mark.parametrize('src_kind,dst_kind', PAIRS,
                         ids=['%s-to-%s' % p for p in PAIRS])
def test_pair_preserves_guest_data_and_size(sources, tmp_path, src_kind,
                                            dst_kind):
    fmt, subformat, _driver, _opts = KINDS[dst_kind]
    dst = str(tmp_path / 'out.img')
    result = translate.convert(sources['paths'][src_kind], dst, fmt,
                               from_format=KINDS[src_kind][0],
                               subformat=subformat)
    assert result.virtual_size == SIZE
    assert result.src_info.format == KINDS[src_kind][0]
    assert result.src_info.subformat == KINDS[src_kind][1]
    assert result.dst_subformat == subformat
    assert os.listdir(str(tmp_path)) == ['out.img']
    _check_output(dst, dst_kind, sources, tmp_path)


def test_vhd_without_force_size_would_grow(sources, tmp_path):
    """The size chosen really exposes CHS rounding (guards the test)."""
    path = str(tmp_path / 'chs.vhd')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vpc', '-o',
                 'subformat=dynamic', sources['raw'], path)
    assert helpers.virtual_size(path, 'vpc') > SIZE
    assert formats.create_options('vhd', 'dynamic') == [
        'subformat=dynamic', 'force_size=on']


@pytest.mark.parametrize('dst_kind', ['raw', 'qcow2', 'vmdk-streamOptimized',
                                      'vhdx'])
def test_vhd_fixed_round_trip(sources, tmp_path, dst_kind):
    fixed = str(tmp_path / 'fixed.vhd')
    result = translate.convert(sources['raw'], fixed, 'vhd',
                               subformat='fixed')
    assert result.dst_subformat == 'fixed'
    # A fixed VHD is the raw data plus a 512-byte footer.
    assert os.path.getsize(fixed) == SIZE + 512
    info = translate.inspect_image(fixed, 'vhd')
    assert (info.format, info.subformat, info.virtual_size) == (
        'vhd', 'fixed', SIZE)
    fmt, subformat, _driver, _opts = KINDS[dst_kind]
    out = str(tmp_path / 'out.img')
    translate.convert(fixed, out, fmt, from_format='vhd',
                      subformat=subformat)
    _check_output(out, dst_kind, sources, tmp_path)


@pytest.fixture
def flat_pair(sources, tmp_path):
    """A monolithicFlat descriptor + extent in a private staging folder."""
    staging = tmp_path / 'staging'
    staging.mkdir(mode=0o700)
    descriptor = str(staging / 'guest.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=monolithicFlat', sources['raw'], descriptor)
    assert os.path.exists(str(staging / 'guest-flat.vmdk'))
    return descriptor, str(staging)


@pytest.mark.parametrize('dst_kind', ['qcow2', 'vmdk-streamOptimized',
                                      'vhd'])
def test_monolithic_flat_from_staging(sources, flat_pair, tmp_path,
                                      launches, dst_kind):
    descriptor, staging = flat_pair
    info = translate.inspect_image(descriptor, 'vmdk', staging_dir=staging)
    assert (info.subformat, info.virtual_size) == ('monolithicFlat', SIZE)
    assert info.data_path == os.path.join(staging, 'guest-flat.vmdk')
    fmt, subformat, _driver, _opts = KINDS[dst_kind]
    out = str(tmp_path / 'out.img')
    options = translate.ConvertOptions(staging_dir=staging, verify=True)
    result = translate.convert(descriptor, out, fmt, from_format='vmdk',
                               subformat=subformat, options=options)
    assert result.verified
    _check_output(out, dst_kind, sources, tmp_path)
    # qemu-img only ever saw the extent, as raw; never the descriptor.
    assert launches.calls
    assert not launches.mentions(descriptor)
    for argv in launches.mentions(info.data_path):
        assert argv[argv.index('-f') + 1] == 'raw'
