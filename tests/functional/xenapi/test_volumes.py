"""Raw NFS volumes on Xen: a raw VDI of an NFS SR on their export, in place.

The xapi simulator's NFS SR opens ``<serverpath>/<SR uuid>/<location>.raw``
as SMAPI's NFS SR driver does; its PBD.plug fails when that folder is
missing (NFS mount error), VDI.introduce when the file is (VDI not
available), VBD.plug when the VM is halted.
"""

import os
import uuid

import pytest

from nova_xhv.backends.xenapi import session as xsession
from nova_xhv.backends.xenapi import volumes
from tests.fixtures import disks
from tests.functional.backends import conformance
from tests.functional.backends.test_xenapi import _guest
from tests.functional.backends.test_xenapi import make_backend  # noqa: F401
from tests.functional.backends.test_xenapi import sim  # noqa: F401
from tests.functional.backends.test_xenapi import XenBed

pytestmark = pytest.mark.timeout(180)
MiB = disks.MiB


@pytest.fixture
def bed(make_backend, sim):  # noqa: F811
    return XenBed(make_backend(), sim)


@pytest.fixture
def volume(bed, tmp_path):
    export = bed.nfs_export(tmp_path)
    name = 'volume-%s' % uuid.uuid4()
    path = os.path.join(export, name)
    disks.make_raw_disk(path, 4 * MiB, seed=3)
    info = conformance.nfs_connection_info(export, name)
    return info, path


def _srs(bed):
    return {r['uuid']: r for r in
            bed.admin.xenapi.SR.get_all_records().values()
            if r['content_type'] == volumes.SR_CONTENT_TYPE}


def test_attach_to_a_running_vm_writes_through_and_leaves_nothing(
        bed, tmp_path, volume):
    info, path = volume
    export, name = os.path.dirname(path), os.path.basename(path)
    x = bed.admin.xenapi
    instance = _guest(bed, tmp_path)
    try:
        bed.backend.attach_volume(None, info, instance, '/dev/xvdb')
        sr_uuid = volumes.sr_uuid_for('127.0.0.1', export)
        assert list(_srs(bed)) == [sr_uuid]
        sr = x.SR.get_by_uuid(sr_uuid)
        assert x.SR.get_type(sr) == 'nfs' and x.SR.get_shared(sr)
        pbds = x.SR.get_PBDs(sr)
        assert [x.PBD.get_device_config(p) for p in pbds] == [
            {'server': '127.0.0.1', 'serverpath': export}]
        assert all(x.PBD.get_currently_attached(p) for p in pbds)
        vm = x.VM.get_by_name_label(instance.uuid)[0]
        vbds = [x.VBD.get_record(v) for v in x.VM.get_VBDs(vm)]
        volume_vbd = [v for v in vbds if v['other_config'].get(
            volumes.VOLUME_KEY)]
        assert len(volume_vbd) == 1 and volume_vbd[0]['currently_attached']
        vdi = x.VDI.get_record(volume_vbd[0]['VDI'])
        assert (vdi['location'], vdi['sm_config']) == (name, {'type': 'raw'})
        assert int(vdi['virtual_size']) == 4 * MiB
        # The SR's name for it is the volume file itself.
        in_sr = os.path.join(export, sr_uuid, name + '.raw')
        assert os.stat(in_sr).st_ino == os.stat(path).st_ino
        with open(in_sr, 'r+b') as f:  # the guest writing, through the SR
            f.seek(MiB)
            f.write(b'\xa5' * 4096)
        # The VM's own disks are what a move carries; the volume is not.
        bed.backend.power_off(instance)
        exported = bed.backend.export_disks(None, instance)
        assert len(exported) == 1
        bed.backend.release_exported_disks(None, instance, exported)
        bed.backend.detach_volume(None, info, instance, '/dev/xvdb')
        assert not [v for v in x.VM.get_VBDs(vm) if x.VBD.get_other_config(
            v).get(volumes.VOLUME_KEY)]
        assert _srs(bed) == {}
        assert os.listdir(export) == [name]
        with open(path, 'rb') as f:
            f.seek(MiB)
            assert f.read(4096) == b'\xa5' * 4096
        assert os.path.getsize(path) == 4 * MiB
    finally:
        bed.destroy(instance)


def test_refusals_change_nothing(bed, tmp_path, volume):
    info, path = volume
    export = os.path.dirname(path)
    before = disks.sha256_file(path)
    elsewhere = dict(info, data=dict(info['data'],
                                     export='127.0.0.1:/srv/not-mounted'))
    qcow2 = dict(info, data=dict(info['data'], format='qcow2'))
    missing = dict(info, data=dict(info['data'], name='volume-missing'))
    instance = _guest(bed, tmp_path)
    try:
        with pytest.raises(volumes.XenVolumeError, match='volume_exports'):
            bed.backend.attach_volume(None, elsewhere, instance, '/dev/xvdb')
        with pytest.raises(volumes.XenVolumeError, match='Retype'):
            bed.backend.attach_volume(None, qcow2, instance, '/dev/xvdb')
        with pytest.raises(volumes.XenVolumeError, match='does not exist'):
            bed.backend.attach_volume(None, missing, instance, '/dev/xvdb')
        assert bed.attached_volume_files(instance) == []
    finally:
        bed.destroy(instance)
    assert _srs(bed) == {}
    assert os.listdir(export) == [os.path.basename(path)]
    assert disks.sha256_file(path) == before


def test_pool_failure_during_attach_rolls_back(bed, tmp_path, volume):
    info, path = volume
    export = os.path.dirname(path)
    instance = _guest(bed, tmp_path)
    try:
        bed.sim.inject(calls={'VBD.plug': ['SR_BACKEND_FAILURE_47', '',
                                           'injected: tapdisk failed']})
        with pytest.raises(xsession.XapiError):
            bed.backend.attach_volume(None, info, instance, '/dev/xvdb')
        assert bed.attached_volume_files(instance) == []
    finally:
        bed.sim.inject()
        bed.destroy(instance)
    assert _srs(bed) == {}
    assert os.listdir(export) == [os.path.basename(path)]


def test_simulator_refuses_what_the_pool_refuses(bed, tmp_path, volume):
    info, path = volume
    export = os.path.dirname(path)
    x = bed.admin.xenapi
    sr_uuid = str(uuid.uuid4())
    sr = x.SR.introduce(sr_uuid, 'probe', '', 'nfs', '', True, {})
    pbd = x.PBD.create({'host': x.host.get_all()[0], 'SR': sr,
                        'device_config': {'server': '127.0.0.1',
                                          'serverpath': export},
                        'other_config': {}})
    try:
        # NFSSR mounts <serverpath>/<SR uuid>: missing -> mount error.
        with pytest.raises(Exception, match='SR_BACKEND_FAILURE_73'):
            x.PBD.plug(pbd)
        os.mkdir(os.path.join(export, sr_uuid))
        x.PBD.plug(pbd)
        # The volume file is not <location>.raw in the SR's folder.
        with pytest.raises(Exception, match='SR_BACKEND_FAILURE_46'):
            x.VDI.introduce(str(uuid.uuid4()), '', '', sr, 'user', False,
                            False, {}, os.path.basename(path), {},
                            {'type': 'raw'}, True, '0', '0',
                            'OpaqueRef:NULL', False, '19700101T00:00:00Z',
                            'OpaqueRef:NULL')
    finally:
        x.PBD.unplug(pbd)
        x.PBD.destroy(pbd)
        x.SR.forget(sr)
        os.rmdir(os.path.join(export, sr_uuid))


def test_boots_from_a_volume_and_delete_forgets_the_vdi(bed, volume):
    from tests.functional.backends.test_xenapi import make_instance
    info, path = volume
    export = os.path.dirname(path)
    before = disks.sha256_file(path)
    x = bed.admin.xenapi
    instance = make_instance()
    instance.root_device_name = '/dev/xvda'
    boot = {'block_device_mapping': [{'connection_info': info,
                                      'boot_index': 0,
                                      'mount_device': '/dev/xvda'}]}
    bed.backend.spawn(None, instance, bed.image_meta(instance), [], None,
                      {}, [], boot)

    def disks_of():
        [vm] = x.VM.get_by_name_label(instance.uuid)
        return vm, [x.VBD.get_record(v) for v in x.VM.get_VBDs(vm)
                    if x.VBD.get_type(v) == 'Disk']
    try:
        vm, [vbd] = disks_of()
        assert x.VM.get_power_state(vm) == 'Running'
        # Its only disk: the volume's VDI, bootable, device 0.
        assert (vbd['userdevice'], vbd['bootable']) == ('0', True)
        assert x.VDI.get_location(vbd['VDI']) == os.path.basename(path)
        bed.backend.power_off(instance)
        assert bed.backend.export_disks(None, instance) == []
        # Given back after a move (off, as the root device): device 0.
        bed.backend.detach_volume(None, info, instance, '/dev/xvda')
        assert disks_of()[1] == []
        bed.backend.attach_volume(None, info, instance, '/dev/xvda')
        [vbd] = disks_of()[1]
        assert (vbd['userdevice'], vbd['bootable']) == ('0', True)
    finally:
        bed.destroy(instance)
    # Forgotten, never destroyed: the file is the raw volume it was.
    assert bed.leftovers(instance) == []
    assert _srs(bed) == {}
    assert os.listdir(export) == [os.path.basename(path)]
    assert disks.sha256_file(path) == before
