import pytest

from nova_xhv import translate
from nova_xhv.translate import formats


@pytest.mark.parametrize('name,canonical', [
    ('raw', 'raw'), ('QCOW2', 'qcow2'), ('vpc', 'vhd'), ('VHD', 'vhd'),
    (' vhdx ', 'vhdx'), ('vmdk', 'vmdk')])
def test_canonical_names(name, canonical):
    assert formats.canonical_name(name) == canonical


@pytest.mark.parametrize('name', ['vdi', 'qed', 'luks', 'iso', '', None])
def test_unsupported_names(name):
    with pytest.raises(translate.UnsupportedFormat):
        formats.canonical_name(name)


def test_qemu_driver_names():
    assert [formats.qemu_driver(f) for f in formats.FORMATS] == [
        'raw', 'qcow2', 'vmdk', 'vhdx', 'vpc']
    assert formats.qemu_driver('vpc') == 'vpc'


def test_target_subformats():
    assert formats.target_subformat('vmdk') == 'streamOptimized'
    assert formats.target_subformat('vmdk', 'MONOLITHICSPARSE') == \
        'monolithicSparse'
    assert formats.target_subformat('vhd') == 'dynamic'
    assert formats.target_subformat('vhd', 'Fixed') == 'fixed'
    assert formats.target_subformat('vhdx') == 'dynamic'
    assert formats.target_subformat('qcow2') is None
    with pytest.raises(translate.UnsupportedFormat, match='monolithicFlat'):
        formats.target_subformat('vmdk', 'monolithicFlat')
    with pytest.raises(translate.UnsupportedFormat, match='no subformats'):
        formats.target_subformat('qcow2', 'v3')


def test_source_subformats_include_flat():
    assert formats.source_subformat('vmdk', 'monolithicflat') == \
        'monolithicFlat'
    assert formats.source_subformat('vhdx', 'fixed') == 'fixed'
    with pytest.raises(translate.UnsupportedFormat):
        formats.source_subformat('vmdk', 'twoGbMaxExtentSparse')


def test_create_options():
    assert formats.create_options('qcow2') == ['compat=1.1']
    assert formats.create_options('vhd', 'fixed') == [
        'subformat=fixed', 'force_size=on']
    assert formats.create_options('vmdk') == ['subformat=streamOptimized']
    assert formats.create_options('vhdx') == ['subformat=dynamic']
    assert formats.create_options('raw') == []
