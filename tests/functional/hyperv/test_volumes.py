"""Raw NFS volumes on Hyper-V: attached in place as fixed VHDs over SMB.

The simulated host opens the volume through the real Samba share that
shows the bed's NFS export (tests/fixtures/hyperv.py); what it checks is
what Hyper-V checks (extension, VHD content).  The bytes are checked with
qemu-img, independently of XHV's own footer code.
"""

import json
import os
import subprocess
import uuid

import pytest

from nova_xhv.backends.hyperv import backend as hyperv_backend
from nova_xhv.backends.hyperv import remote
from nova_xhv.backends.hyperv import volumes
from tests.fixtures import disks
from tests.fixtures.hyperv import hyperv_sim  # noqa: F401
from tests.functional.backends import conformance
from tests.functional.hyperv.conftest import conf  # noqa: F401
from tests.functional.hyperv.conftest import make_backend  # noqa: F401
from tests.functional.hyperv.conftest import make_instance
from tests.functional.hyperv.test_backend import _spawn
from tests.simulators.hyperv import model as hyperv_sim_model

pytestmark = pytest.mark.timeout(180)
MiB = disks.MiB


@pytest.fixture
def volume(hyperv_sim):  # noqa: F811
    export = os.path.join(hyperv_sim.info.volume_dir,
                          'export-%s' % uuid.uuid4().hex[:12])
    os.mkdir(export)
    name = 'volume-%s' % uuid.uuid4()
    path = os.path.join(export, name)
    disks.make_raw_disk(path, 4 * MiB, seed=9)
    info = conformance.nfs_connection_info(export, name)
    return info, path


def _qemu_info(path, fmt):
    out = subprocess.run(['qemu-img', 'info', '--output=json', '-U', '-f',
                          fmt, path], capture_output=True, text=True)
    return out.returncode, (json.loads(out.stdout) if out.returncode == 0
                            else out.stderr)


def test_footer_makes_a_fixed_vhd_qemu_reads(tmp_path):
    path = str(tmp_path / 'v')
    disks.make_raw_disk(path, 3 * MiB + 512 * 7, seed=2)
    before = disks.sha256_file(path)
    with open(path, 'ab') as f:
        f.write(volumes.footer('v', 3 * MiB + 512 * 7))
    code, info = _qemu_info(path, 'vpc')
    assert code == 0, info
    assert info['virtual-size'] == 3 * MiB + 512 * 7
    converted = str(tmp_path / 'back.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'vpc', '-O', 'raw', path,
                    converted], check=True)
    assert disks.sha256_file(converted) == before


def test_attach_writes_through_and_detach_gives_the_raw_file_back(
        make_backend, hyperv_sim, tmp_path, volume):  # noqa: F811
    backend = make_backend()
    info, path = volume
    name = os.path.basename(path)
    before = disks.sha256_file(path)
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    try:
        backend.attach_volume(None, info, instance, '/dev/sdb')
        vm = hyperv_sim.vms()[instance.uuid]
        link = [d for d in vm['HardDrives'] if d['Path'].startswith('\\\\')]
        assert [d['Path'] for d in link] == [
            '%s\\%s\\%s%s' % (hyperv_sim.info.volume_unc,
                              os.path.basename(os.path.dirname(path)), name,
                              volumes.LINK_SUFFIX)]
        assert link[0]['ControllerType'] == 1  # SCSI, hot-added
        # The .vhd name is the same file: a fixed VHD of the volume's size.
        vhd = path + volumes.LINK_SUFFIX
        assert os.stat(vhd).st_ino == os.stat(path).st_ino
        code, qinfo = _qemu_info(vhd, 'vpc')
        assert code == 0 and qinfo['virtual-size'] == 4 * MiB
        # What the guest writes lands in the volume's data.
        subprocess.run(['qemu-io', '-f', 'vpc', '-c',
                        'write -P 0x5a 1M 64k', vhd], check=True,
                       capture_output=True)
        backend.detach_volume(None, info, instance, '/dev/sdb')
        assert not [d for d in hyperv_sim.vms()[instance.uuid]['HardDrives']
                    if d['Path'].startswith('\\\\')]
        assert os.listdir(os.path.dirname(path)) == [name]
        assert os.path.getsize(path) == 4 * MiB
        with open(path, 'rb') as f:
            f.seek(MiB)
            assert f.read(64 * 1024) == b'\x5a' * 64 * 1024
        assert disks.sha256_file(path) != before
        # Detach again: nothing to do, nothing cut.
        after = disks.sha256_file(path)
        backend.detach_volume(None, info, instance, '/dev/sdb')
        assert disks.sha256_file(path) == after
    finally:
        backend.destroy(None, instance, [])


def test_hyperv_refuses_what_is_not_a_vhd(
        make_backend, hyperv_sim, tmp_path, volume):  # noqa: F811
    backend = make_backend()
    info, path = volume
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    unc = '%s\\%s\\%s' % (hyperv_sim.info.volume_unc,
                          os.path.basename(os.path.dirname(path)),
                          os.path.basename(path))
    try:
        # The raw file as it is, its name, and the raw file named .vhd.
        os.link(path, path + '.vhd')
        for bad in (unc, unc + '.vhd'):
            with pytest.raises(remote.HyperVCommandError) as caught:
                backend._run('Add-VMHardDiskDrive', hyperv_backend.ps.command(
                    'Add-VMHardDiskDrive', VMName=instance.uuid, Path=bad,
                    ControllerType='SCSI', ControllerNumber=0,
                    ControllerLocation=5))
            assert 'virtual hard disk' in str(caught.value)
        os.unlink(path + '.vhd')
    finally:
        backend.destroy(None, instance, [])


def test_unmapped_export_is_refused_before_anything_changes(
        make_backend, hyperv_sim, tmp_path, volume):  # noqa: F811
    backend = make_backend()
    info, path = volume
    before = disks.sha256_file(path)
    other = dict(info, data=dict(info['data'],
                                 export='127.0.0.1:/srv/elsewhere'))
    qcow2 = dict(info, data=dict(info['data'], format='qcow2'))
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    try:
        with pytest.raises(volumes.HyperVVolumeError,
                           match='volume_shares'):
            backend.attach_volume(None, other, instance, '/dev/sdb')
        with pytest.raises(volumes.HyperVVolumeError, match='Retype'):
            backend.attach_volume(None, qcow2, instance, '/dev/sdb')
        assert len(hyperv_sim.vms()[instance.uuid]['HardDrives']) == 1
    finally:
        backend.destroy(None, instance, [])
    assert disks.sha256_file(path) == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_failed_attach_leaves_the_volume_as_it_was(
        make_backend, hyperv_sim, tmp_path, volume):  # noqa: F811
    backend = make_backend()
    info, path = volume
    before = disks.sha256_file(path)
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    try:
        hyperv_sim.fail_cmdlet('Add-VMHardDiskDrive', 'injected: no slot')
        with pytest.raises(remote.HyperVCommandError, match='no slot'):
            backend.attach_volume(None, info, instance, '/dev/sdb')
    finally:
        hyperv_sim.clear_faults()
        backend.destroy(None, instance, [])
    assert disks.sha256_file(path) == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def _boot_info(info, device='/dev/sda'):
    return {'block_device_mapping': [{'connection_info': info,
                                      'boot_index': 0,
                                      'mount_device': device}]}


@pytest.mark.parametrize('generation, slot', [(1, (0, 0, 0)),
                                              (2, (1, 0, 0))])
def test_boots_from_a_volume_and_delete_gives_the_raw_file_back(
        make_backend, hyperv_sim, volume, generation, slot):  # noqa: F811
    from nova import objects
    backend = make_backend()
    info, path = volume
    before = disks.sha256_file(path)
    instance = make_instance()
    instance.root_device_name = '/dev/sda'
    meta = objects.ImageMeta.from_dict({'properties': {
        'hw_firmware_type': 'uefi' if generation == 2 else 'bios'}})
    backend.spawn(None, instance, meta, [], None, {}, [],
                  _boot_info(info))
    vhd = path + volumes.LINK_SUFFIX

    def drives():
        vm = hyperv_sim.vms()[instance.uuid]
        return vm, [(d['ControllerType'], d['ControllerNumber'],
                     d['ControllerLocation'], d['Path'])
                    for d in vm['HardDrives']]
    try:
        vm, found = drives()
        # Its only disk, where the generation boots from, and running.
        assert (vm['Generation'], vm['State']) == (generation,
                                                   hyperv_sim_model.VM_RUNNING)
        assert [f[:3] for f in found] == [slot]
        assert found[0][3].endswith(os.path.basename(vhd))
        code, qemu = _qemu_info(vhd, 'vpc')
        assert code == 0 and qemu['virtual-size'] == 4 * MiB, qemu
        # Volumes are never exported with the guest's disks.
        backend.power_off(instance)
        assert backend.export_disks(None, instance) == []
        # Given back after a move (off, as the root device): same slot.
        backend.detach_volume(None, info, instance, '/dev/sda')
        assert drives()[1] == []
        assert disks.sha256_file(path) == before
        backend.attach_volume(None, info, instance, '/dev/sda')
        assert [f[:3] for f in drives()[1]] == [slot]
        backend.power_on(None, instance, [])
    finally:
        backend.destroy(None, instance, [])
    assert instance.uuid not in hyperv_sim.vms()
    assert disks.sha256_file(path) == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    assert not os.path.exists(os.path.join(hyperv_sim.info.storage_dir,
                                           instance.uuid))


def test_a_boot_volume_it_cannot_reach_is_refused_before_a_vm_exists(
        make_backend, hyperv_sim, volume):  # noqa: F811
    backend = make_backend()
    info, path = volume
    other = dict(info, data=dict(info['data'],
                                 export='127.0.0.1:/srv/elsewhere'))
    instance = make_instance()
    with pytest.raises(volumes.HyperVVolumeError, match='volume_shares'):
        backend.spawn(None, instance, None, [], None, {}, [],
                      _boot_info(other))
    with pytest.raises(volumes.HyperVVolumeError, match='volume_shares'):
        backend.check_volume_attachable(other)
    backend.check_volume_attachable(info)
    assert instance.uuid not in hyperv_sim.vms()
    assert not os.path.exists(os.path.join(hyperv_sim.info.storage_dir,
                                           instance.uuid))
