"""Volumes follow their server between vSphere and KVM.

Nova (API, conductor, a vSphere compute on vcsim and a KVM compute on
real libvirtd, both xhv.XHVDriver) and real cinder-api, cinder-scheduler
and cinder-volume (XHV around Cinder's NFS driver) in a child process.
The server moves with ``openstack server migrate``'s API; its data volume
is detached from the source and attached on the destination by Nova's own
attachment flow with the destination's connector.  The volume's file is
the same bytes on both families (no conversion): checksums before and
after prove nothing changed hands but the attachment.
"""

import os

from nova_xhv.backends.vmware import volumes
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional import nova_base
from tests.functional import nova_cinder

MiB = disks.MiB


class VolumesFollowTestCase(nova_cinder.RealCinderMixin,
                            nova_cinder.LibvirtNFSMixin,
                            base.CrossHypervisorTestCase):

    def setUp(self):
        super().setUp()
        self.set_up_libvirt_nfs()
        self.start_vmware()
        self.libvirt_nfs_host_up(self.start_kvm())

    def data_volume(self, volume_type='nfsraw'):
        cinder = self.cinder_services
        volume = cinder.create_volume(size=1, volume_type=volume_type)
        path = cinder.volume_file(volume['id'])
        extents = None
        if volume_type == 'nfsraw':
            # Data a guest wrote (a qcow2 volume keeps its container).
            extents = disks.make_raw_disk(path, 1024 * MiB, seed=21)
            os.chmod(path, 0o666)
        return volume, path, extents

    def vmware_volume_files(self, server):
        vm = self.vm_of(server)
        if vm is None:
            return []
        return sorted(d.backing.fileName.split('] ', 1)[1]
                      for d in vm.config.hardware.device
                      if volumes.is_volume_disk(d))

    def assert_attached(self, server, volume, host):
        shown = self.cinder_services.volume(volume['id'])
        self.assertEqual('in-use', shown['status'])
        [attachment] = shown['attachments']
        self.assertEqual(server['id'], attachment['server_id'])
        self.assertEqual(host, attachment['host_name'])
        self.assertEqual([volume['id']], self.server_volumes(server))

    def test_vmware_to_kvm_confirm_and_back_with_a_data_volume(self):
        cinder = self.cinder_services
        image_id, _ = self.make_vmware_image()
        server = self._wait_for_state_change(
            self.boot_on(base.VMW, image_id), 'ACTIVE')
        volume, path, extents = self.data_volume()
        self.attach(server, volume['id'])
        self.assert_attached(server, volume, base.VMW)
        before = disks.sha256_file(path)

        server = self._migrate_server(server, host=base.KVM)
        self.assertIn('xhv_detach_volumes', self.action_events(server))
        # On KVM now: the same file, attached by libvirt's NFS driver.
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(kvm_path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual('raw', fmt)
        self.assertTrue(kvm_path.endswith('/volume-%s' % volume['id']))
        self._confirm_resize(server)
        self.assert_attached(server, volume, base.KVM)
        self.assertIsNone(self.vm_of(server))
        self.assertEqual(before, disks.sha256_file(path))
        self.assertTrue(disks.check_extents(path, extents))

        # And back to vSphere: the volume follows again.
        server = self._migrate_server(server, host=base.VMW)
        self._confirm_resize(server)
        self.assert_attached(server, volume, base.VMW)
        self.assertEqual(['volume-%s.xhv.vmdk' % volume['id']],
                         self.vmware_volume_files(server))
        self.assertEqual(before, disks.sha256_file(path))
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        self.assertEqual(before, disks.sha256_file(path))

    def test_revert_gives_back_the_original_attachment(self):
        image_id, _ = self.make_vmware_image()
        server = self._wait_for_state_change(
            self.boot_on(base.VMW, image_id), 'ACTIVE')
        volume, path, _ = self.data_volume()
        self.attach(server, volume['id'])
        before = disks.sha256_file(path)

        server = self._migrate_server(server, host=base.KVM)
        self.assertEqual([], self.vmware_volume_files(server))
        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assert_attached(server, volume, base.VMW)
        self.assertEqual(['volume-%s.xhv.vmdk' % volume['id']],
                         self.vmware_volume_files(server))
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertFalse(nova_base.LibvirtFunctionalTestCase
                         .hypervisor_guest_exists(self, server))
        self.assertEqual(before, disks.sha256_file(path))

    def test_fault_after_detach_rolls_back_with_the_volume(self):
        image_id, _ = self.make_kvm_image()
        server = self._wait_for_state_change(
            self.boot_on(base.KVM, image_id), 'ACTIVE')
        volume, path, _ = self.data_volume()
        self.attach(server, volume['id'])
        before = disks.sha256_file(path)

        # The destination fails to stage the disks: the volume is already
        # detached from the (powered-off) original at that point.
        def broken(*args, **kwargs):
            raise RuntimeError('injected staging fault')

        # Both routes into vSphere: a local vmdk (stage_disks) and the
        # stream writer's output uploaded while written (stream_uploads).
        for route in ('stage_disks', 'stage_disk_streams'):
            self.stub_out(
                'nova_xhv.backends.vmware.backend.VMwareBackend.' + route,
                broken)
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.VMW}})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        events = self.action_events(server)
        self.assertIn('xhv_detach_volumes', events)
        self.assert_attached(server, volume, base.KVM)
        [(kvm_path, _)] = self.kvm_volume_disks(server)
        self.assertTrue(kvm_path.endswith('/volume-%s' % volume['id']))
        self.assertEqual('running', self.domain_state(server))
        self.assertEqual(before, disks.sha256_file(path))

    def test_qcow2_volume_is_refused_before_power_off(self):
        image_id, _ = self.make_kvm_image()
        server = self._wait_for_state_change(
            self.boot_on(base.KVM, image_id), 'ACTIVE')
        volume, path, _ = self.data_volume('nfsqcow2')
        self.attach(server, volume['id'])
        before = disks.sha256_file(path)
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.VMW}})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        # Refused while the server ran: never powered off.
        events = self.action_events(server)
        self.assertNotIn('xhv_power_off', events)
        self.assertIn('stored as qcow2, which the vmware family does not '
                      'attach', self.stdlog.logger.output)
        self.assert_attached(server, volume, base.KVM)
        self.assertEqual('running', self.domain_state(server))
        self.assertEqual(before, disks.sha256_file(path))

    def test_volume_backed_server_with_a_data_volume_moves_to_kvm(self):
        cinder = self.cinder_services
        boot, boot_extents = self.bootable_volume()
        server = self.boot_volume(boot['id'], host=base.VMW)
        volume, path, extents = self.data_volume()
        self.attach(server, volume['id'])
        boot_path = cinder.volume_file(boot['id'])
        before = (disks.sha256_file(boot_path), disks.sha256_file(path))

        server = self._migrate_server(server, host=base.KVM)
        # KVM boots from the same volume file vSphere booted from.
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self._confirm_resize(server)
        self.assertEqual(sorted([boot['id'], volume['id']]),
                         self.server_volumes(server))
        for vol in (boot, volume):
            [attachment] = cinder.volume(vol['id'])['attachments']
            self.assertEqual(base.KVM, attachment['host_name'])
        self.assertEqual(2, len(self.kvm_volume_disks(server)))
        self.assertIsNone(self.vm_of(server))
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        cinder.wait_volume(boot['id'], 'available')
        self.assertTrue(disks.check_extents(boot_path, boot_extents))
        self.assertTrue(disks.check_extents(path, extents))
        self.assertEqual(before[1], disks.sha256_file(path))

    def test_volume_backed_server_with_a_data_volume_moves_to_vmware(self):
        cinder = self.cinder_services
        boot, boot_extents = self.bootable_volume()
        server = self.boot_volume(boot['id'], host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        volume, path, extents = self.data_volume()
        self.attach(server, volume['id'])
        boot_path = cinder.volume_file(boot['id'])
        before = (disks.sha256_file(boot_path), disks.sha256_file(path))

        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.VMW}})
        server = self._wait_for_state_change(server, 'VERIFY_RESIZE',
                                             max_retries=240)
        self._confirm_resize(server)
        self.assertEqual(sorted([boot['id'], volume['id']]),
                         self.server_volumes(server))
        for vol in (boot, volume):
            [attachment] = cinder.volume(vol['id'])['attachments']
            self.assertEqual(base.VMW, attachment['host_name'])
        # vSphere's VM: no disk of its own, both volumes in place through
        # their descriptors, the boot volume on the first SCSI unit.
        self.assertEqual(sorted('volume-%s.xhv.vmdk' % v['id']
                                for v in (boot, volume)),
                         self.vmware_volume_files(server))
        vm = self.vm_of(server)
        units = {d.backing.fileName.split('] ', 1)[1]: d.unitNumber
                 for d in vm.config.hardware.device
                 if volumes.is_volume_disk(d)}
        self.assertEqual(0, units['volume-%s.xhv.vmdk' % boot['id']])
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertFalse(nova_base.LibvirtFunctionalTestCase
                         .hypervisor_guest_exists(self, server))
        self.assertEqual(before, (disks.sha256_file(boot_path),
                                  disks.sha256_file(path)))
        self._delete_server(server)
        cinder.wait_volume(volume['id'], 'available')
        cinder.wait_volume(boot['id'], 'available')
        self.assertTrue(disks.check_extents(boot_path, boot_extents))
        self.assertTrue(disks.check_extents(path, extents))
