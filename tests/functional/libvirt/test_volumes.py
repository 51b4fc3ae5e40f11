"""Volumes on real libvirtd/KVM through Nova's attachment flow and Cinder.

Nova's API, conductor and a compute on xhv.XHVDriver + the libvirt
backend (stock LibvirtDriver, real libvirtd), and real cinder-api,
cinder-scheduler and cinder-volume (XHV around Cinder's NFS driver;
tests/fixtures/cinder_services.py) in a child process.  The stand-in on
the Nova side is the NFS mount itself: this kernel has no NFS client, so
``mount -t nfs host:/path`` becomes a bind mount of ``/path`` (the export
is a directory of this machine); libvirt's own NFS volume driver does
everything else (mount point, domain XML, format).
"""

import builtins
import glob
import hashlib
import os
import subprocess
import tempfile

import fixtures

from tests.fixtures import disks
from tests.functional.libvirt.test_lifecycle import upload_bootable_image
from tests.functional import nova_base
from tests.functional import nova_cinder

MiB = disks.MiB
# Nova's harness poisons /sys reads (SysFsPoisonFixture); os-brick's
# connector reads the real host's /sys (FC HBAs, NVMe host NQN) to build
# the connector this compute sends Cinder.
_REAL_SYS_READERS = {'glob.glob': glob.glob, 'glob.iglob': glob.iglob,
                     'os.listdir': os.listdir,
                     'os.path.isdir': os.path.isdir,
                     'builtins.open': builtins.open}
PATTERN = b'XHV-KVM-ATTACHMENT-ONE\n' * 1000


def bind_mount_nfs(fstype, export, mountpoint, options):
    """Stand-in for ``mount -t nfs``: bind the exported directory."""
    if fstype != 'nfs':
        raise AssertionError('only NFS mounts are stood in for: %s'
                             % fstype)
    _, _, path = export.partition(':')
    subprocess.run(['mount', '--bind', path, mountpoint], check=True,
                   capture_output=True)


class LibvirtVolumeTestCase(nova_cinder.RealCinderMixin,
                            nova_base.LibvirtFunctionalTestCase):

    def setUp(self):
        super().setUp()
        # Searchable by libvirt's qemu user (not the harness's 0700 TMPDIR).
        self.mount_base = tempfile.mkdtemp(prefix='xhv-nova-mnt-',
                                           dir=nova_base.LIBVIRT_TEST_ROOT)
        os.chmod(self.mount_base, 0o755)
        # libvirt starts each QEMU in a private mount namespace (a slave
        # of the host's): NFS mounts made later for hot-attach reach it
        # only below a shared mount, as on hosts whose / is shared
        # (systemd's default).  This machine's / is private.
        subprocess.run(['mount', '--bind', self.mount_base,
                        self.mount_base], check=True)
        subprocess.run(['mount', '--make-shared', self.mount_base],
                       check=True)
        self.addCleanup(self._unmount_all)
        self.flags(nfs_mount_point_base=self.mount_base, group='libvirt')
        self.useFixture(fixtures.MonkeyPatch('nova.privsep.fs.mount',
                                             bind_mount_nfs))
        for name, real in _REAL_SYS_READERS.items():
            self.stub_out(name, real)
        # os-brick's privileged calls (the connector's initiator probe)
        # run in this root process, like Nova's own (PrivsepFixture).
        import os_brick.privileged
        previous = os_brick.privileged.default.client_mode
        os_brick.privileged.default.set_client_mode(False)
        self.addCleanup(os_brick.privileged.default.set_client_mode,
                        previous)
        compute = self.start_compute('kvm1')
        # libvirt's connection event (which the harness's stubbed event
        # loop never delivers) is what tells Nova's NFS mount manager that
        # the host is up.
        from nova.virt.libvirt.volume import mount
        mount.get_manager().host_up(
            compute.driver.backend.stock_driver._host)
        self.addCleanup(mount.get_manager().host_down)

    def _unmount_all(self):
        with open('/proc/mounts') as f:
            points = [line.split()[1] for line in f
                      if self.mount_base in line]
        for point in sorted(points, reverse=True):
            subprocess.run(['umount', '-l', point], capture_output=True)
        subprocess.run(['rm', '-rf', self.mount_base])

    def domain_disks(self, server):
        """[(source file, driver type)] of the domain's disks."""
        xml = nova_base.virsh('dumpxml', server['id'])
        import xml.etree.ElementTree as ET
        found = []
        for disk in ET.fromstring(xml).findall('./devices/disk'):
            source = disk.find('source')
            driver = disk.find('driver')
            found.append((source.get('file') if source is not None
                          else None, driver.get('type')))
        return found

    def volume_disks(self, server):
        return [(path, fmt) for path, fmt in self.domain_disks(server)
                if path and path.startswith(self.mount_base)]

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
        [(path, fmt)] = self.volume_disks(first)
        self.assertEqual('raw', fmt)
        self.assertEqual('volume-%s' % volume['id'], os.path.basename(path))
        # The running guest's disk is Cinder's file, through the compute's
        # own mount of the share: what is written there is the volume.
        with open(path, 'r+b') as f:
            f.seek(MiB)
            f.write(PATTERN)
        self.detach(first, volume['id'])
        self.assertEqual([], self.volume_disks(first))
        self.assertEqual([], cinder.attachments(volume['id']))

        self.attach(second, volume['id'])
        [(path, _)] = self.volume_disks(second)
        with open(path, 'rb') as f:
            f.seek(MiB)
            self.assertEqual(PATTERN, f.read(len(PATTERN)))
        self.detach(second, volume['id'])

    def test_qcow2_volume_attaches_as_qcow2(self):
        cinder = self.cinder_services
        server = self.boot_image_server()
        volume = cinder.create_volume(size=1, volume_type='nfsqcow2')
        before = hashlib.sha256(open(cinder.volume_file(volume['id']),
                                     'rb').read()).hexdigest()
        self.attach(server, volume['id'])
        [(path, fmt)] = self.volume_disks(server)
        self.assertEqual('qcow2', fmt)
        self.detach(server, volume['id'])
        self.assertEqual(before, hashlib.sha256(open(
            cinder.volume_file(volume['id']), 'rb').read()).hexdigest())

    def test_boot_from_volume(self):
        cinder = self.cinder_services
        volume, extents = self.bootable_volume()
        server = self.boot_volume(volume['id'])
        # The guest boots from the volume's bytes: its marker on COM1.
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(path, fmt)] = self.volume_disks(server)
        self.assertEqual('raw', fmt)
        self.assertEqual('in-use', cinder.volume(volume['id'])['status'])
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        self.assertTrue(disks.check_extents(cinder.volume_file(volume['id']),
                                            extents))
