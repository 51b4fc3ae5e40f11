"""Raw NFS volume files attached to vSphere VMs in place (vcsim).

The "export" is a local directory (this machine has no NFS server or
client); vcsim's patched CreateNasDatastore serves the exported directory
under the datastore name, as an ESXi host shows a mounted export.  The
checks read the export directly and through qemu-img (an independent VMDK
reader) and vSphere's own view (an independent pyvmomi session).
"""

import hashlib
import os
import subprocess

from nova import exception
import pytest
from pyVmomi import vim

from nova_xhv.backends.vmware import volumes
from tests.fixtures import disks
from tests.functional.vmware.conftest import make_instance
from tests.functional.vmware.test_backend import _stage_and_spawn
from tests.functional.vmware.test_backend import _vm_by_uuid

pytestmark = pytest.mark.timeout(120)
MiB = disks.MiB


@pytest.fixture
def export(tmp_path):
    path = tmp_path / 'export'
    path.mkdir()
    os.chmod(str(path), 0o777)
    return str(path)


def nfs_info(export, name, fmt='raw'):
    """What Cinder's NFS driver answers initialize_connection with."""
    return {'driver_volume_type': 'nfs',
            'data': {'export': '127.0.0.1:%s' % export, 'name': name,
                     'options': None, 'format': fmt},
            'mount_point_base': '/var/lib/nova/mnt'}


def make_volume(export, name, size=4 * MiB, pattern=b'\0'):
    path = os.path.join(export, name)
    with open(path, 'wb') as f:
        f.write(pattern * (size // len(pattern)))
    return path


def volume_disks(si, instance):
    vm = _vm_by_uuid(si, instance.uuid)
    return [d for d in vm.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)
            and d.backing.fileName.endswith(volumes.DESCRIPTOR_SUFFIX)]


def test_attach_mounts_the_share_and_writes_a_descriptor(
        make_backend, admin_si, guest_disk, export):
    backend = make_backend()
    instance = make_instance()
    _stage_and_spawn(backend, instance, guest_disk)
    name = 'volume-%s' % instance.uuid
    path = make_volume(export, name, pattern=b'XHV-VOLUME-DATA!')
    before = hashlib.sha256(open(path, 'rb').read()).hexdigest()
    info = nfs_info(export, name)
    try:
        backend.attach_volume(None, info, instance, '/dev/sdb')
        # vSphere's view: one NAS datastore for the export, on the VM's
        # host, and a disk backed by the descriptor in it.
        vm = _vm_by_uuid(admin_si, instance.uuid)
        stores = [ds for ds in vm.runtime.host.datastore
                  if getattr(ds.info, 'nas', None) is not None
                  and ds.info.nas.remotePath == export]
        assert len(stores) == 1
        ds_name = stores[0].name
        assert ds_name.startswith(volumes.DATASTORE_PREFIX)
        attached = volume_disks(admin_si, instance)
        assert [d.backing.fileName for d in attached] == [
            '[%s] %s%s' % (ds_name, name, volumes.DESCRIPTOR_SUFFIX)]
        assert attached[0].backing.diskMode == 'independent_persistent'
        assert attached[0].capacityInKB == 4 * 1024
        # The descriptor sits next to the volume file and qemu-img reads
        # the volume's own bytes through it: no copy, no conversion.
        descriptor = path + volumes.DESCRIPTOR_SUFFIX
        assert os.path.exists(descriptor)
        compare = subprocess.run(
            ['qemu-img', 'compare', '-f', 'vmdk', '-F', 'raw', descriptor,
             path], capture_output=True, text=True)
        assert compare.returncode == 0, compare.stdout + compare.stderr
        # A second attach of the same volume changes nothing.
        backend.attach_volume(None, info, instance, '/dev/sdb')
        assert len(volume_disks(admin_si, instance)) == 1

        backend.detach_volume(None, info, instance, '/dev/sdb')
        assert volume_disks(admin_si, instance) == []
        assert not os.path.exists(descriptor)
        # The volume file itself is untouched by attach and detach.
        assert hashlib.sha256(open(path, 'rb').read()).hexdigest() == before
        # Detach again: nothing attached, nothing to do.
        backend.detach_volume(None, info, instance, '/dev/sdb')
    finally:
        backend.destroy(None, instance, [])
    assert os.path.exists(path)


def test_destroy_detaches_volumes_before_deleting_the_vm(
        make_backend, admin_si, guest_disk, export):
    backend = make_backend()
    instance = make_instance()
    _stage_and_spawn(backend, instance, guest_disk)
    name = 'volume-%s' % instance.uuid
    path = make_volume(export, name, pattern=b'KEEP')
    backend.attach_volume(None, nfs_info(export, name), instance, '/dev/sdb')
    backend.destroy(None, instance, [])
    assert _vm_by_uuid(admin_si, instance.uuid) is None
    assert open(path, 'rb').read(4) == b'KEEP'
    assert not os.path.exists(path + volumes.DESCRIPTOR_SUFFIX)


@pytest.mark.parametrize('info, error', [
    ({'driver_volume_type': 'iscsi', 'data': {}},
     exception.VolumeDriverNotFound),
    ({'driver_volume_type': 'nfs',
      'data': {'export': '127.0.0.1:/x', 'name': 'v', 'format': 'qcow2'}},
     volumes.VolumeRequestError),
    ({'driver_volume_type': 'nfs',
      'data': {'export': 'no-path', 'name': 'v'}},
     volumes.VolumeRequestError),
    ({'driver_volume_type': 'nfs',
      'data': {'export': '127.0.0.1:/x', 'name': '../etc/shadow'}},
     volumes.VolumeRequestError),
])
def test_what_cannot_be_attached_is_refused_before_any_change(
        make_backend, admin_si, guest_disk, info, error):
    backend = make_backend()
    instance = make_instance()
    _stage_and_spawn(backend, instance, guest_disk)
    try:
        with pytest.raises(error):
            backend.attach_volume(None, info, instance, '/dev/sdb')
        assert volume_disks(admin_si, instance) == []
    finally:
        backend.destroy(None, instance, [])


def test_descriptor_names_a_flat_extent_of_the_whole_file():
    text = volumes.descriptor_text('volume-1', 3 * MiB).decode()
    assert 'RW %d VMFS "volume-1"' % (3 * MiB // 512) in text
    assert 'createType="vmfs"' in text
    with pytest.raises(volumes.VolumeRequestError):
        volumes.descriptor_text('volume-1', 1000)
    with pytest.raises(volumes.VolumeRequestError):
        volumes.descriptor_text('a"b', 1024)
