"""Volumes on real libvirtd/KVM through Nova's attachment flow and Cinder.

Detaching happens with the server stopped: the tiny test guest does not
answer PCI hot-unplug requests (a real guest OS does).

Nova's API, conductor and a compute on xhv.XHVDriver + the libvirt
backend (stock LibvirtDriver, real libvirtd), and real cinder-api,
cinder-scheduler and cinder-volume (XHV around Cinder's NFS driver;
tests/fixtures/cinder_services.py) in a child process.  The stand-in on
the Nova side is the NFS mount itself: this kernel has no NFS client, so
``mount -t nfs host:/path`` becomes a bind mount of ``/path`` (the export
is a directory of this machine); libvirt's own NFS volume driver does
everything else (mount point, domain XML, format).
"""

import hashlib
import os

from tests.fixtures import disks
from tests.functional.libvirt.test_lifecycle import upload_bootable_image
from tests.functional import nova_base
from tests.functional import nova_cinder

MiB = disks.MiB
PATTERN = b'XHV-KVM-ATTACHMENT-ONE\n' * 1000


class LibvirtVolumeTestCase(nova_cinder.RealCinderMixin,
                            nova_cinder.LibvirtNFSMixin,
                            nova_base.LibvirtFunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.set_up_libvirt_nfs()
        self.libvirt_nfs_host_up(self.start_compute('kvm1'))

    def boot_image_server(self, name='srv'):
        if not hasattr(self, 'image_id'):
            self.image_id = upload_bootable_image(self, 'raw')
        server = self._create_server(image_uuid=self.image_id,
                                     networks='none', name=name)
        return self._wait_for_state_change(server, 'ACTIVE')

    def test_attach_detach_and_data_reach_the_next_attachment(self):
        cinder = self.cinder_services
        first = self.boot_image_server('first')
        second = self.boot_image_server('second')
        volume = cinder.create_volume(size=1)

        shown = self.attach(first, volume['id'])
        [attachment] = shown['attachments']
        self.assertEqual(first['id'], attachment['server_id'])
        self.assertEqual('kvm1', attachment['host_name'])
        self.assertEqual([volume['id']], self.server_volumes(first))
        [(path, fmt)] = self.kvm_volume_disks(first)
        self.assertEqual('raw', fmt)
        self.assertEqual('volume-%s' % volume['id'], os.path.basename(path))
        # The running guest's disk is Cinder's file, through the compute's
        # own mount of the share: what is written there is the volume.
        with open(path, 'r+b') as f:
            f.seek(MiB)
            f.write(PATTERN)
        # The tiny test guest cannot answer a PCI hot-unplug request:
        # detach from the stopped server (libvirt edits its definition).
        first = self._stop_server(first)
        self.detach(first, volume['id'])
        self.assertEqual([], self.kvm_volume_disks(first))
        self.assertEqual([], cinder.attachments(volume['id']))

        self.attach(second, volume['id'])
        [(path, _)] = self.kvm_volume_disks(second)
        with open(path, 'rb') as f:
            f.seek(MiB)
            self.assertEqual(PATTERN, f.read(len(PATTERN)))
        second = self._stop_server(second)
        self.detach(second, volume['id'])

    def test_qcow2_volume_attaches_as_qcow2(self):
        cinder = self.cinder_services
        server = self.boot_image_server()
        volume = cinder.create_volume(size=1, volume_type='nfsqcow2')
        before = hashlib.sha256(open(cinder.volume_file(volume['id']),
                                     'rb').read()).hexdigest()
        self.attach(server, volume['id'])
        [(path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual('qcow2', fmt)
        server = self._stop_server(server)
        self.detach(server, volume['id'])
        self.assertEqual(before, hashlib.sha256(open(
            cinder.volume_file(volume['id']), 'rb').read()).hexdigest())

    def test_boot_from_volume(self):
        cinder = self.cinder_services
        volume, extents = self.bootable_volume()
        server = self.boot_volume(volume['id'])
        # The guest boots from the volume's bytes: its marker on COM1.
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual('raw', fmt)
        self.assertEqual('in-use', cinder.volume(volume['id'])['status'])
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        self.assertTrue(disks.check_extents(cinder.volume_file(volume['id']),
                                            extents))
