"""Small pieces of the vSphere backend that need no vCenter."""

import importlib
import struct
import sys
import time

from nova import objects
from nova.objects import image_meta as nova_image_meta
from oslo_utils import uuidutils
import pytest

from nova_xhv.backends.vmware import disk_storage
from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import session as vsession
from nova_xhv.backends.vmware import vm as vmops


def _instance():
    objects.register_all()
    return objects.Instance(
        uuid=uuidutils.generate_uuid(), display_name='t',
        flavor=objects.Flavor(vcpus=1, memory_mb=128, root_gb=1,
                              ephemeral_gb=0, swap=0))


def _meta(**properties):
    return nova_image_meta.ImageMeta.from_dict(
        {'disk_format': 'vmdk', 'properties': properties})


@pytest.mark.parametrize('properties, expected', [
    ({}, 'lsiLogic'),
    ({'vmware_adaptertype': 'paraVirtual'}, 'paraVirtual'),
    ({'vmware_adaptertype': 'lsiLogicsas'}, 'lsiLogicsas'),
    ({'vmware_adaptertype': 'ide'}, 'ide'),
    ({'hw_disk_bus': 'sata'}, 'sata'),
    ({'hw_disk_bus': 'scsi', 'hw_scsi_model': 'vmpvscsi'}, 'paraVirtual'),
    # KVM images say virtio, which vSphere does not have.
    ({'hw_disk_bus': 'virtio'}, 'lsiLogic'),
])
def test_adapter_type_from_image_properties(properties, expected):
    assert vmops.adapter_type(_meta(**properties), 'lsiLogic') == expected


@pytest.mark.parametrize('properties, expected', [
    ({}, 'bios'),
    ({'hw_firmware_type': 'bios'}, 'bios'),
    ({'hw_firmware_type': 'uefi'}, 'efi'),
])
def test_firmware_from_image_properties(properties, expected):
    assert vmops.firmware(_meta(**properties)) == expected
    spec = vmops.config_spec('n', _instance(), 'ds', 'dir', [], 'lsiLogic',
                             firmware=vmops.firmware(_meta(**properties)))
    assert spec.firmware == expected


def test_firmware_without_image_meta_is_bios():
    assert vmops.firmware(None) == 'bios'


def test_sparse_header_gives_type_and_size():
    descriptor = (b'# Disk DescriptorFile\nversion=1\nCID=1\n'
                  b'parentCID=ffffffff\ncreateType="streamOptimized"\n'
                  b'RW 16384 SPARSE "x.vmdk"\n')
    head = bytearray(4096)
    head[:4] = b'KDMV'
    struct.pack_into('<IIQQQQ', head, 4, 3, 0, 16384, 128, 1, 2)
    head[512:512 + len(descriptor)] = descriptor
    assert disk_storage.parse_sparse_head(bytes(head), 'x') == (
        'streamOptimized', 16384 * 512)
    with pytest.raises(errors.VSphereDiskError):
        disk_storage.parse_sparse_head(b'KDMV', 'x')


def test_missing_pyvmomi_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'pyVmomi', None)
    monkeypatch.delitem(sys.modules, 'nova_xhv.backends.vmware.backend',
                        raising=False)
    with pytest.raises(ImportError) as caught:
        importlib.import_module('nova_xhv.backends.vmware.backend')
    assert caught.value.name == 'pyVmomi'
    assert 'openstack-xhv[vmware]' in str(caught.value)


def test_task_wait_gives_up_after_task_timeout_and_cancels(monkeypatch):
    session = vsession.VSphereSession('127.0.0.1', 1, 'u', 'p',
                                      task_timeout=0.3, poll_interval=0.05)

    class StuckTask:
        cancelled = False

        def CancelTask(self):
            self.cancelled = True

    task = StuckTask()
    monkeypatch.setattr(session, '_task_info',
                        lambda *args: {'info.state': 'running'})
    start = time.monotonic()
    with pytest.raises(errors.VSphereTaskTimeout) as caught:
        session.wait_for_task(task, 'PowerOnVM_Task')
    assert 0.3 <= time.monotonic() - start < 2
    assert task.cancelled
    assert 'PowerOnVM_Task' in str(caught.value)
    assert 'task_timeout' in str(caught.value)
