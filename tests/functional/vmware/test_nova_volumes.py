"""Volumes on vSphere through Nova's own attachment flow and real Cinder.

Nova's API, conductor and a compute on xhv.XHVDriver + the vmware backend
(vcsim), and real cinder-api, cinder-scheduler and cinder-volume (XHV
around Cinder's NFS driver; tests/fixtures/cinder_services.py) in a child
process.  vcsim runs no guest code: "what the guest wrote" is written
into the volume's file on the export while it is attached, and read back
through vSphere's datastore file API while attached to the next server.
"""

import hashlib
import os
import ssl
import urllib.request

from pyVmomi import vim

from nova_xhv.backends.vmware import volumes
from tests.fixtures import disks
from tests.functional import nova_cinder
from tests.functional.vmware import test_nova

MiB = disks.MiB
PATTERN = b'XHV-WRITTEN-BY-ATTACHMENT-ONE\n' * 1000


class VMwareVolumeTestCase(nova_cinder.RealCinderMixin,
                           test_nova.VMwareFunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.start_compute('vmware1')

    # -- helpers -----------------------------------------------------------

    def volume_disks(self, server):
        vm = self.vm_of(server)
        return [d for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk)
                and volumes.is_volume_disk(d)]

    def read_through_datastore(self, ds_name, path, length):
        url = 'https://%s:%d/folder/%s?dcPath=%s&dsName=%s' % (
            self.vcsim.host, self.vcsim.port, path, self.vcsim.datacenter,
            ds_name)
        request = urllib.request.Request(
            url, headers={'Range': 'bytes=0-%d' % (length - 1)})
        context = ssl.create_default_context(cafile=self.vcsim.ca_file)
        with urllib.request.urlopen(request, context=context) as resp:
            return resp.read()[:length]

    def boot_server(self):
        if not hasattr(self, 'image_id'):
            self.image_id, _ = self.make_image('vmdk')
        server = self.boot(self.image_id)
        return self._wait_for_state_change(server, 'ACTIVE')

    # -- tests -------------------------------------------------------------

    def test_attach_detach_and_data_reach_the_next_attachment(self):
        cinder = self.cinder_services
        first, second = self.boot_server(), self.boot_server()
        volume = cinder.create_volume(size=1)
        path = cinder.volume_file(volume['id'])

        shown = self.attach(first, volume['id'])
        [attachment] = shown['attachments']
        self.assertEqual(first['id'], attachment['server_id'])
        self.assertEqual('vmware1', attachment['host_name'])
        self.assertEqual([volume['id']], self.server_volumes(first))
        [disk] = self.volume_disks(first)
        ds_name = disk.backing.fileName[1:].split(']')[0]
        self.assertEqual(1024 * 1024, disk.capacityInKB)
        # The datastore is the export, mounted through the vSphere API.
        [store] = [ds for ds in self.vm_of(first).runtime.host.datastore
                   if ds.name == ds_name]
        self.assertEqual(cinder.export, store.info.nas.remotePath)
        self.assertEqual('127.0.0.1', store.info.nas.remoteHost)
        # What the guest writes lands in Cinder's volume file (vcsim has
        # no guest: the test writes where the disk's extent is).
        with open(path, 'r+b') as f:
            f.seek(MiB)
            f.write(PATTERN)

        self.detach(first, volume['id'])
        self.assertEqual([], self.volume_disks(first))
        self.assertEqual([], self.server_volumes(first))
        self.assertEqual([], cinder.attachments(volume['id']))
        self.assertFalse(os.path.exists(path + volumes.DESCRIPTOR_SUFFIX))

        shown = self.attach(second, volume['id'])
        self.assertEqual(second['id'],
                         shown['attachments'][0]['server_id'])
        [disk] = self.volume_disks(second)
        data = self.read_through_datastore(
            ds_name, 'volume-%s' % volume['id'], MiB + len(PATTERN))
        self.assertEqual(PATTERN, data[MiB:])
        self.detach(second, volume['id'])

        # Deleting a server with a volume leaves the volume (and its
        # bytes) with Cinder.
        self.attach(first, volume['id'])
        self._delete_server(first)
        cinder.wait_volume(volume['id'], 'available')
        with open(path, 'rb') as f:
            f.seek(MiB)
            self.assertEqual(PATTERN, f.read(len(PATTERN)))

    def test_qcow2_volume_is_refused_with_the_reason(self):
        cinder = self.cinder_services
        server = self.boot_server()
        volume = cinder.create_volume(size=1, volume_type='nfsqcow2')
        before = hashlib.sha256(open(cinder.volume_file(volume['id']),
                                     'rb').read()).hexdigest()
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume['id']}})
        # Nova rolls the attachment back: the volume is available again,
        # the server ACTIVE without it.
        self._wait_for_action_fail_completion(
            server, 'attach_volume', 'compute_attach_volume')
        cinder.wait_for(lambda: cinder.volume(volume['id'])['status'] ==
                        'available' and not cinder.attachments(volume['id']),
                        'the refused attachment to be rolled back')
        self.assertEqual([], self.server_volumes(server))
        self.assertEqual([], self.volume_disks(server))
        self.assertEqual('ACTIVE', self.api.get_server(server['id'])['status'])
        self.assertIn('stored as qcow2, which the vmware family does not '
                      'attach', cinder.tail(400))
        after = hashlib.sha256(open(cinder.volume_file(volume['id']),
                                    'rb').read()).hexdigest()
        self.assertEqual(before, after)

    def test_boot_from_volume(self):
        cinder = self.cinder_services
        # The volume holds a bootable disk (as "volume create --image"
        # would leave it).
        volume, extents = self.bootable_volume()
        path = cinder.volume_file(volume['id'])
        server = self.boot_volume(volume['id'])
        self.assertEqual('poweredOn', self.power_state(server))
        # The VM's only disk is the volume, on the first SCSI unit.
        vm = self.vm_of(server)
        all_disks = [d for d in vm.config.hardware.device
                     if isinstance(d, vim.vm.device.VirtualDisk)]
        self.assertEqual(1, len(all_disks))
        self.assertTrue(volumes.is_volume_disk(all_disks[0]))
        self.assertEqual(0, all_disks[0].unitNumber)
        self.assertEqual('in-use', cinder.volume(volume['id'])['status'])
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        self.assertTrue(disks.check_extents(path, extents))
