"""Nova's functional harness talking to real Cinder services.

``RealCinderMixin`` goes before a backend's test base in the class
bases: it starts cinder-api, cinder-scheduler and cinder-volume in a
child process (tests/fixtures/cinder_services.py), keeps Nova's
CinderFixture out and points Nova's volume API at the real one.  Tests
use the admin API (Cinder's noauth maps Nova's user and project 1:1).
"""

import builtins
import glob
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree

import fixtures

from tests.fixtures import cinder_services
from tests.functional import nova_base

# Nova's harness poisons /sys reads (SysFsPoisonFixture); os-brick's
# connector reads the real host's /sys (FC HBAs, NVMe host NQN) to build
# the connector a KVM compute sends Cinder.
_REAL_SYS_READERS = {'glob.glob': glob.glob, 'glob.iglob': glob.iglob,
                     'os.listdir': os.listdir,
                     'os.path.isdir': os.path.isdir,
                     'builtins.open': builtins.open}


bind_mount_nfs = cinder_services.bind_mount_nfs


class RealCinderMixin(object):

    def setUp(self):
        self.cinder_services = self.useFixture(
            cinder_services.CinderServices())
        self.useFixture(fixtures.MonkeyPatch(
            'nova.tests.fixtures.CinderFixture',
            cinder_services.NoCinderFixture))
        super().setUp()
        self.useFixture(cinder_services.NovaUsesCinder(
            self, self.cinder_services))
        self.api = self.admin_api

    def server_volumes(self, server):
        return sorted(a['volumeId'] for a in self.api.get_server_volumes(
            server['id']))

    def attach(self, server, volume_id):
        self.api.post_server_volume(
            server['id'], {'volumeAttachment': {'volumeId': volume_id}})
        return self.cinder_services.wait_volume(volume_id, 'in-use')

    def detach(self, server, volume_id):
        self.api.delete_server_volume(server['id'], volume_id)
        return self.cinder_services.wait_volume(volume_id, 'available')

    def boot_volume(self, volume_id, name='bfv', host=None):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=0,
                                     ephemeral=0)
        body = {'server': {
            'name': name, 'flavorRef': flavor, 'networks': 'none',
            'block_device_mapping_v2': [{
                'boot_index': 0, 'uuid': volume_id, 'source_type': 'volume',
                'destination_type': 'volume'}]}}
        if host:
            body['server']['host'] = host
        server = self.api.post_server(body)
        return self._wait_for_state_change(server, 'ACTIVE')

    def bootable_volume(self, size=1, volume_type='nfsraw'):
        """(volume holding the tiny bootable test disk, its extents)."""
        from tests.fixtures import disks

        cinder = self.cinder_services
        volume = cinder.create_volume(size=size, volume_type=volume_type)
        path = cinder.volume_file(volume['id'])
        extents = disks.make_bootable_disk(path,
                                           virtual_size=size * 1024 ** 3)
        cinder.set_bootable(volume['id'])
        return volume, extents


class LibvirtNFSMixin(object):
    """What a KVM compute needs to attach NFS volumes on this machine.

    libvirt's own NFS volume driver does the work (mount point, domain
    XML, format); the stand-ins: ``mount -t nfs host:/path`` becomes a
    bind mount of ``/path`` (no NFS client in this kernel; the export is
    a directory of this machine), os-brick's privileged calls and /sys
    reads run for real in this (root) process, and the mount manager is
    told the host is up (the harness's stubbed libvirt event loop never
    says so).
    """

    def set_up_libvirt_nfs(self):
        for name, real in _REAL_SYS_READERS.items():
            self.stub_out(name, real)
        import os_brick.privileged
        previous = os_brick.privileged.default.client_mode
        os_brick.privileged.default.set_client_mode(False)
        self.addCleanup(os_brick.privileged.default.set_client_mode,
                        previous)
        self.useFixture(fixtures.MonkeyPatch('nova.privsep.fs.mount',
                                             bind_mount_nfs))
        # Searchable by libvirt's qemu user (not the harness's TMPDIR).
        self.mount_base = tempfile.mkdtemp(prefix='xhv-nova-mnt-',
                                           dir=nova_base.LIBVIRT_TEST_ROOT)
        os.chmod(self.mount_base, 0o755)
        self.addCleanup(self._unmount_nfs)
        cinder_services.make_shared_mount(self.mount_base)
        self.flags(nfs_mount_point_base=self.mount_base, group='libvirt')

    def libvirt_nfs_host_up(self, compute):
        from nova.virt.libvirt.volume import mount
        # A fresh manager per test: the module-level one keeps the
        # condition variable (and state) of whichever earlier test of this
        # process used it ("cannot notify on un-acquired lock").
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.volume.mount.__manager__',
            mount._HostMountStateManager()))
        mount.get_manager().host_up(
            compute.driver.backend.stock_driver._host)
        self.addCleanup(mount.get_manager().host_down)
        return compute

    def _unmount_nfs(self):
        with open('/proc/mounts') as f:
            points = [line.split()[1] for line in f
                      if self.mount_base in line]
        for point in sorted(points, reverse=True):
            subprocess.run(['umount', '-l', point], capture_output=True)
        subprocess.run(['rm', '-rf', self.mount_base])

    def kvm_volume_disks(self, server):
        """[(source file, driver type)] of the domain's volume disks."""
        xml = nova_base.virsh('dumpxml', server['id'])
        found = []
        for disk in ElementTree.fromstring(xml).findall('./devices/disk'):
            source = disk.find('source')
            path = source.get('file') if source is not None else None
            if path and path.startswith(self.mount_base):
                found.append((path, disk.find('driver').get('type')))
        return found
