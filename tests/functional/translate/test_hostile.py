"""Hostile and corrupt images are refused before qemu-img opens them.

Each case is built with real qemu-img or by hand.  A canary file stands
for a host secret (/etc/shadow, another tenant's disk).  For every case:
the engine raises, leaves no output, and launched no qemu-img at all
(recorded at the engine's process seams).  Control tests prove the
dangerous cases are real: a naive ``qemu-img convert -f <claimed>`` of
the same file copies the canary into its output.
"""

import os
import re
import struct

import pytest

from nova_xhv import translate
from nova_xhv.translate import headers
from tests.fixtures import disks
from tests.functional.translate import helpers

MiB = 1024 * 1024
GiB = 1024 * MiB
SIZE = 4 * MiB


class Case(object):
    def __init__(self, tmp_path):
        self.root = tmp_path
        self.host = tmp_path / 'host'
        self.host.mkdir()
        self.canary = helpers.write_canary(str(self.host / 'secret.bin'),
                                           SIZE)
        self.work = tmp_path / 'work'
        self.work.mkdir(mode=0o700)
        self.staging = None

    def path(self, name):
        return str(self.work / name)

    def clean(self, name, driver='qcow2', opts=()):
        path = self.path(name)
        helpers.qemu('create', '-q', '-f', driver, *opts, path, str(SIZE))
        return path

    def stage(self):
        self.staging = str(self.root / 'staging')
        os.mkdir(self.staging, 0o700)
        return self.staging

    def descriptor(self, extent_lines, create_type='monolithicFlat',
                   extra='', folder=None, name='guest.vmdk'):
        folder = folder or self.stage()
        path = os.path.join(folder, name)
        with open(path, 'w') as f:
            f.write('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
                    'parentCID=ffffffff\ncreateType="%s"\n%s\n'
                    '# Extent description\n%s\n\n# The Disk Data Base\n'
                    '#DDB\nddb.adapterType = "lsilogic"\n' % (
                        create_type, extra, '\n'.join(extent_lines)))
        return path


def _patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def _vmdk_embedded(path, transform):
    with open(path, 'r+b') as f:
        header = f.read(64)
        sector, count = struct.unpack('<QQ', header[28:44])
        f.seek(sector * 512)
        text = f.read(count * 512).split(b'\0', 1)[0]
        text = transform(text)
        assert len(text) < count * 512
        f.seek(sector * 512)
        f.write(text.ljust(count * 512, b'\0'))
    return path


def _vhd_set_type(path, disk_type):
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        for offset in (0, size - 512):
            f.seek(offset)
            footer = bytearray(f.read(512))
            footer[60:64] = struct.pack('>I', disk_type)
            footer[64:68] = b'\0\0\0\0'
            footer[64:68] = struct.pack('>I', (~sum(footer)) & 0xffffffff)
            f.seek(offset)
            f.write(footer)
    return path


# Each builder returns (path, claimed format, expected exception, reason
# fragment); it may call case.stage() to get a staging folder.
def qcow2_backing_file(case):
    path = case.path('backing.qcow2')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', case.canary, '-F',
                 'raw', path)
    return path, 'qcow2', translate.UnsafeImage, 'backing file'


def qcow2_backing_file_claimed_raw(case):
    path, _fmt, _exc, _reason = qcow2_backing_file(case)
    return path, 'raw', translate.FormatMismatch, 'content is qcow2'


def qcow2_external_data_file(case):
    path = case.path('datafile.qcow2')
    data = case.path('data.bin')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-o',
                 'data_file=%s,data_file_raw=on' % data, path, str(SIZE))
    os.unlink(data)
    os.symlink(case.canary, data)
    return path, 'qcow2', translate.UnsafeImage, 'data_file'


def qcow2_unknown_incompatible_feature(case):
    path = case.clean('feature.qcow2')
    _patch(path, 0x48, struct.pack('>Q', 1 << 20))
    return path, 'qcow2', translate.UnsafeImage, 'unknown_features'


def qcow2_version_1(case):
    path = case.clean('v1.qcow2')
    _patch(path, 4, struct.pack('>I', 1))
    return path, 'qcow2', translate.UnsafeImage, 'qcow2 version'


def qcow2_encrypted(case):
    path = case.path('luks.qcow2')
    helpers.qemu_create_encrypted(
        '-q', '--object', 'secret,id=s0,data=pw', '-f', 'qcow2', '-o',
        'encrypt.format=luks,encrypt.key-secret=s0', path, str(SIZE))
    return path, 'qcow2', translate.UnsafeImage, 'encrypted'


def qcow2_absurd_virtual_size(case):
    path = case.clean('huge.qcow2')
    _patch(path, 24, struct.pack('>Q', 1 << 62))
    return path, 'qcow2', translate.UnsafeImage, 'exceeds the limit'


def qcow2_truncated_header(case):
    path = case.clean('short.qcow2')
    os.truncate(path, 100)
    return path, 'qcow2', translate.FormatMismatch, 'content is raw'


def qcow2_claimed_raw(case):
    return case.clean('plain.qcow2'), 'raw', translate.FormatMismatch, \
        'content is qcow2'


def raw_claimed_qcow2(case):
    path = case.path('plain.raw')
    disks.make_raw_disk(path, SIZE)
    return path, 'qcow2', translate.FormatMismatch, 'content is raw'


def raw_over_the_size_cap(case):
    path = case.path('big.raw')
    with open(path, 'wb') as f:
        f.truncate(3 * GiB)
    return path, 'raw', translate.UnsafeImage, 'exceeds the limit'


def luks_claimed_raw(case):
    path = case.path('disk.luks')
    helpers.qemu_create_encrypted(
        '-q', '--object', 'secret,id=s0,data=pw', '-f', 'luks', '-o',
        'key-secret=s0,iter-time=10', path, '1M')
    return path, 'raw', translate.FormatMismatch, 'content is luks'


def luks_autodetected(case):
    path, _fmt, _exc, _reason = luks_claimed_raw(case)
    return path, None, translate.UnsupportedFormat, 'luks'


def qed_claimed_raw(case):
    return case.clean('disk.qed', 'qed'), 'raw', translate.FormatMismatch, \
        'content is qed'


def vmdk_sparse_parent_hint(case):
    parent = str(case.host / 'parent.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', case.canary, parent)
    found = {}

    def remember_cid(text):
        found['cid'] = re.search(rb'\nCID=(\w+)', text).group(1)
        return text

    _vmdk_embedded(parent, remember_cid)
    path = case.clean('delta.vmdk', 'vmdk')
    # qemu only follows the hint when parentCID matches the parent's CID.
    _vmdk_embedded(path, lambda text: text.replace(
        b'parentCID=ffffffff',
        b'parentCID=%s\nparentFileNameHint="%s"' % (found['cid'],
                                                    parent.encode())))
    return path, 'vmdk', translate.UnsafeImage, 'parent'


def vmdk_sparse_extent_host_path(case):
    path = case.clean('extent.vmdk', 'vmdk')
    _vmdk_embedded(path, lambda text: text.replace(
        b'SPARSE "extent.vmdk"', b'SPARSE "%s"' % case.canary.encode()))
    return path, 'vmdk', translate.UnsafeImage, 'extent'


def vmdk_stream_corrupt_footer(case):
    raw = case.path('src.raw')
    disks.make_raw_disk(raw, SIZE)
    path = case.path('stream.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw, path)
    # The header now says "grain directory in the footer", but the file
    # ends without a valid footer.
    _patch(path, 56, struct.pack('<Q', 0xffffffffffffffff))
    return path, 'vmdk', translate.UnsafeImage, 'footer'


def flat_extent_absolute_path(case):
    path = case.descriptor(['RW %d FLAT "%s" 0' % (SIZE // 512,
                                                   case.canary)])
    return path, 'vmdk', translate.UnsafeImage, 'names another folder'


def flat_extent_parent_folder(case):
    staging = case.stage()
    rel = os.path.relpath(case.canary, staging)
    path = case.descriptor(['RW %d FLAT "%s" 0' % (SIZE // 512, rel)],
                           folder=staging)
    return path, 'vmdk', translate.UnsafeImage, 'names another folder'


def flat_extent_symlink(case):
    staging = case.stage()
    os.symlink(case.canary, os.path.join(staging, 'guest-flat.vmdk'))
    path = case.descriptor(['RW %d FLAT "guest-flat.vmdk" 0' % (
        SIZE // 512)], folder=staging)
    return path, 'vmdk', translate.UnsafeImage, 'symlink'


def _flat_pair(folder, case):
    extent = os.path.join(folder, 'guest-flat.vmdk')
    disks.make_raw_disk(extent, SIZE)
    return case.descriptor(['RW %d FLAT "guest-flat.vmdk" 0' % (
        SIZE // 512)], folder=folder)


def flat_pair_outside_staging(case):
    case.stage()
    elsewhere = str(case.root / 'elsewhere')
    os.mkdir(elsewhere, 0o700)
    return _flat_pair(elsewhere, case), 'vmdk', translate.UnsafeImage, \
        'not in the staging folder'


def flat_pair_without_staging(case):
    folder = str(case.root / 'nostaging')
    os.mkdir(folder, 0o700)
    return _flat_pair(folder, case), 'vmdk', translate.UnsafeImage, \
        'staging folder'


def flat_pair_in_shared_folder(case):
    staging = case.stage()
    os.chmod(staging, 0o777)
    return _flat_pair(staging, case), 'vmdk', translate.UnsafeImage, \
        'writable by others'


def flat_two_extents(case):
    staging = case.stage()
    for name in ('a-flat.vmdk', 'b-flat.vmdk'):
        disks.make_raw_disk(os.path.join(staging, name), SIZE)
    path = case.descriptor(['RW %d FLAT "a-flat.vmdk" 0' % (SIZE // 512),
                            'RW %d FLAT "b-flat.vmdk" 0' % (SIZE // 512)],
                           folder=staging)
    return path, 'vmdk', translate.UnsafeImage, 'exactly one extent'


def flat_extent_is_nested_qcow2(case):
    staging = case.stage()
    extent = os.path.join(staging, 'guest-flat.vmdk')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', case.canary, '-F',
                 'raw', extent)
    os.truncate(extent, SIZE)
    path = case.descriptor(['RW %d FLAT "guest-flat.vmdk" 0' % (
        SIZE // 512)], folder=staging)
    return path, 'vmdk', translate.UnsafeImage, 'nested'


def flat_unsupported_create_type(case):
    staging = case.stage()
    disks.make_raw_disk(os.path.join(staging, 'guest-f001.vmdk'), SIZE)
    path = case.descriptor(['RW %d FLAT "guest-f001.vmdk" 0' % (
        SIZE // 512)], create_type='twoGbMaxExtentFlat', folder=staging)
    return path, 'vmdk', translate.UnsupportedFormat, 'twoGbMaxExtentFlat'


def flat_descriptor_garbage_line(case):
    staging = case.stage()
    path = case.descriptor(['RW %d FLAT "guest-flat.vmdk" 0' % (
        SIZE // 512)], extra='$(cat /etc/shadow)', folder=staging)
    return path, 'vmdk', translate.UnsafeImage, 'not a VMDK descriptor line'


def vhd_differencing(case):
    path = case.clean('diff.vhd', 'vpc', ('-o', 'subformat=dynamic'))
    _vhd_set_type(path, headers.VHD_DIFFERENCING)
    return path, 'vhd', translate.UnsafeImage, 'differencing'


def vhd_bad_checksum(case):
    path = case.clean('bad.vhd', 'vpc', ('-o', 'subformat=dynamic'))
    _patch(path, 64, b'\xde\xad\xbe\xef')
    return path, 'vhd', translate.UnsafeImage, 'checksum'


def vhd_fixed_truncated(case):
    path = case.clean('fixed.vhd', 'vpc', ('-o', 'subformat=fixed'))
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.seek(size - 512)
        footer = f.read(512)
        f.truncate(size // 2)
        f.seek(size // 2 - 512)
        f.write(footer)
    return path, 'vhd', translate.UnsafeImage, 'holds only'


def vhdx_truncated(case):
    path = case.clean('short.vhdx', 'vhdx')
    os.truncate(path, 256 * 1024)
    return path, 'vhdx', translate.UnsafeImage, 'vhdx'


CASES = [qcow2_backing_file, qcow2_backing_file_claimed_raw,
         qcow2_external_data_file, qcow2_unknown_incompatible_feature,
         qcow2_version_1, qcow2_encrypted, qcow2_absurd_virtual_size,
         qcow2_truncated_header, qcow2_claimed_raw, raw_claimed_qcow2,
         raw_over_the_size_cap, luks_claimed_raw, luks_autodetected,
         qed_claimed_raw, vmdk_sparse_parent_hint,
         vmdk_sparse_extent_host_path, vmdk_stream_corrupt_footer,
         flat_extent_absolute_path, flat_extent_parent_folder,
         flat_extent_symlink, flat_pair_outside_staging,
         flat_pair_without_staging, flat_pair_in_shared_folder,
         flat_two_extents, flat_extent_is_nested_qcow2,
         flat_unsupported_create_type, flat_descriptor_garbage_line,
         vhd_differencing, vhd_bad_checksum, vhd_fixed_truncated,
         vhdx_truncated]


@pytest.mark.parametrize('builder', CASES, ids=[c.__name__ for c in CASES])
def test_refused_before_qemu_img(tmp_path, launches, builder):
    case = Case(tmp_path)
    path, claimed, expected, reason = builder(case)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    dst = str(out_dir / 'converted.raw')
    options = translate.ConvertOptions(staging_dir=case.staging,
                                       max_virtual_size=2 * GiB)
    with pytest.raises(expected) as raised:
        translate.convert(path, dst, 'qcow2', from_format=claimed,
                          options=options)
    assert reason in str(raised.value)
    # Nothing ran, nothing was written, the canary went nowhere.
    assert launches.calls == []
    assert helpers.files_under(str(out_dir)) == []
    assert helpers.contains_canary(case.canary)
    # The non-raising inspection (xhv-convert --info) reports it unsafe.
    info = translate.inspect_image(path, claimed, staging_dir=case.staging,
                                   max_virtual_size=2 * GiB,
                                   raise_on_unsafe=False)
    assert not info.safe and info.failures


def test_enough_hostile_cases():
    assert len(CASES) >= 20


# Controls: the same files really do leak the canary through a naive
# qemu-img run with the claimed format.
@pytest.mark.parametrize('builder', [
    qcow2_backing_file, qcow2_external_data_file, vmdk_sparse_parent_hint,
    flat_extent_absolute_path, flat_extent_parent_folder,
    flat_extent_symlink],
    ids=lambda b: b.__name__)
def test_control_naive_qemu_img_leaks(tmp_path, builder):
    case = Case(tmp_path)
    path, claimed, _expected, _reason = builder(case)
    out = str(tmp_path / 'naive.raw')
    helpers.qemu('convert', '-f', claimed, '-O', 'raw', path, out)
    assert helpers.contains_canary(out)
