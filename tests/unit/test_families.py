"""The family registry: facts of every installed backend, found by name.

(Moved from tests/unit/translate/test_formats.py: the engine knows formats,
not hypervisor families.)
"""

import pytest

from nova_xhv.backends import family


@pytest.mark.parametrize('name,expected', [
    ('kvm', ('qcow2', None)), ('qemu', ('qcow2', None)),
    ('libvirt', ('qcow2', None)),
    ('vmware', ('vmdk', 'streamOptimized')),
    ('VSphere', ('vmdk', 'streamOptimized')),
    ('fake', ('vhdx', 'dynamic'))])
def test_native_format(name, expected):
    native = family.native_format(name)
    assert (native.format, native.subformat) == expected


def test_native_format_unknown():
    with pytest.raises(family.UnknownFamily, match='powervm'):
        family.native_format('powervm')


def test_every_installed_family_is_found_by_its_hypervisor_types():
    for name, facts in family.families().items():
        assert family.lookup(name) is facts
        for hv_type in facts.hypervisor_types:
            assert family.family_of_hv_type(hv_type.upper()) == name
    assert family.family_of_hv_type('powervm') is None


def test_a_vocabulary_missing_a_class_is_refused():
    with pytest.raises(ValueError, match='no nic_model for e1000'):
        family.Family(
            name='half', native_format='raw', native_subformat=None,
            spawn_formats=('raw',), hypervisor_types=(), image_hv_types=(),
            hardware_names={
                family.DISK_BUS: dict.fromkeys(family.DISK_CLASSES, 'x'),
                family.NIC_MODEL: {'paravirtual': 'pv'},
                family.FIRMWARE: dict.fromkeys(family.FIRMWARE_CLASSES)})
