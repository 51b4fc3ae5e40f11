"""The one hardware mapping table between hypervisor families."""

import json

import pytest

from nova_xhv.migration import hardware


def test_classify_reads_every_native_name():
    assert hardware.classify('kvm', 'disk_bus', 'virtio') == 'paravirtual'
    assert hardware.classify('vmware', 'disk_bus', 'paraVirtual') == \
        'paravirtual'
    assert hardware.classify('vmware', 'disk_bus', 'lsiLogicsas') == 'scsi'
    assert hardware.classify('vmware', 'disk_bus', 'busLogic') == 'scsi'
    assert hardware.classify('vmware', 'nic_model', 'vmxnet3') == \
        'paravirtual'
    assert hardware.classify('vmware', 'firmware', 'efi') == 'uefi'
    assert hardware.classify('kvm', 'disk_bus', 'floppy') is None
    assert hardware.classify('kvm', 'disk_bus', None) is None


def test_between_families_defaults_to_a_safe_first_boot():
    chosen = hardware.choose(
        'vmware', 'kvm', hardware.classify_all('vmware', {
            'disk_bus': 'paraVirtual', 'nic_model': 'vmxnet3',
            'firmware': 'bios'}), {})
    assert chosen == {'disk_bus': 'sata', 'nic_model': 'e1000',
                      'firmware': 'bios'}
    assert hardware.native_hardware('kvm', chosen) == {
        'disk_bus': 'sata', 'nic_model': 'e1000', 'firmware': 'bios'}


def test_firmware_is_kept_across_families():
    chosen = hardware.choose('kvm', 'vmware', {'firmware': 'uefi'}, {})
    assert chosen['firmware'] == 'uefi'
    assert hardware.native_hardware('vmware', chosen)['firmware'] == 'efi'


def test_image_properties_then_options_choose_paravirtual():
    props = {'xhv_disk_bus': 'paravirtual', 'xhv_nic_model': 'paravirtual'}
    chosen = hardware.choose('vmware', 'kvm', {}, props)
    assert hardware.native_hardware('kvm', chosen)['disk_bus'] == 'virtio'
    assert hardware.native_hardware('kvm', chosen)['nic_model'] == 'virtio'
    chosen = hardware.choose('kvm', 'vmware', {}, {},
                             default_disk_bus='scsi')
    assert hardware.native_hardware('vmware', chosen)['disk_bus'] == \
        'lsiLogic'


def test_same_family_keeps_what_the_server_had():
    current = hardware.classify_all('kvm', {'disk_bus': 'virtio',
                                            'nic_model': 'virtio'})
    chosen = hardware.choose('kvm', 'kvm', current, {})
    assert chosen['disk_bus'] == 'paravirtual'
    assert chosen['nic_model'] == 'paravirtual'


def test_bad_image_property_names_the_fix():
    with pytest.raises(hardware.HardwareError, match='xhv_disk_bus'):
        hardware.choose('vmware', 'kvm', {}, {'xhv_disk_bus': 'nvme'})
    with pytest.raises(hardware.HardwareError,
                       match='known: (.*, )?kvm, (.*, )?vmware'):
        hardware.choose('kvm', 'zvm', {}, {})


def test_system_metadata_apply_and_restore_round_trip():
    sysmeta = {'image_hw_disk_bus': 'virtio', 'image_disk_format': 'qcow2'}
    original = dict(sysmeta)
    classes = {'disk_bus': 'paravirtual', 'nic_model': 'e1000',
               'firmware': 'bios'}
    hardware.apply_to_system_metadata(sysmeta, 'vmware', classes)
    assert sysmeta['image_hw_disk_bus'] == 'scsi'
    assert sysmeta['image_hw_scsi_model'] == 'vmpvscsi'
    assert sysmeta['image_hw_vif_model'] == 'e1000'
    assert json.loads(sysmeta['xhv_hw_mapping'])['family'] == 'vmware'
    # A retried finish keeps the first originals.
    hardware.apply_to_system_metadata(sysmeta, 'vmware', dict(
        classes, disk_bus='sata'))
    assert sysmeta['image_hw_disk_bus'] == 'sata'
    assert 'image_hw_scsi_model' not in sysmeta
    assert hardware.restore_system_metadata(sysmeta)
    assert sysmeta == original
    assert not hardware.restore_system_metadata(sysmeta)


def test_confirm_keeps_the_mapping_as_the_servers_own():
    sysmeta = {}
    hardware.apply_to_system_metadata(sysmeta, 'kvm', {
        'disk_bus': 'sata', 'nic_model': 'e1000', 'firmware': 'bios'})
    hardware.forget_original(sysmeta)
    assert sysmeta['image_hw_disk_bus'] == 'sata'
    assert not hardware.restore_system_metadata(sysmeta)
    assert sysmeta['image_hw_disk_bus'] == 'sata'
