"""The hardware a move between families asks for, end to end.

The default (SATA, e1000) is covered in test_vmware_kvm; these tests cover
the other ways the issue names: the image's ``xhv_disk_bus`` /
``xhv_nic_model`` properties, and ``[xhv] cross_family_disk_bus``.
"""

from tests.fixtures import disks
from tests.functional.migration import base


def _buses(pairs):
    # Only the bus: the target name (sda, vda) stays the server's
    # root_device_name, which a move does not rename (migration.rst).
    return [bus for _dev, bus in pairs]


def _controllers(vm):
    return sorted(type(d).__name__.rsplit('.', 1)[-1]
                  for d in vm.config.hardware.device
                  if 'Controller' in type(d).__name__)


class TestHardwareChoice(base.CrossHypervisorTestCase):

    def test_image_asks_for_paravirtual_on_both_sides(self):
        self.start_vmware()
        self.start_kvm()
        image_id, raw = self.make_vmware_image(
            {'xhv_disk_bus': 'paravirtual', 'xhv_nic_model': 'paravirtual'})
        server = self.boot_on(base.VMW, image_id)

        # vSphere -> KVM: virtio instead of the safe SATA default.
        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self.assertEqual(['virtio'], _buses(self.kvm_disk_bus(server)))
        sysmeta = self.instance(server).system_metadata
        self.assertEqual('virtio', sysmeta['image_hw_disk_bus'])
        self.assertEqual('virtio', sysmeta['image_hw_vif_model'])
        self._confirm_resize(server)
        # A hard reboot rebuilds the guest with the same bus.
        server = self._reboot_server(server, hard=True)
        self.assertEqual(['virtio'], _buses(self.kvm_disk_bus(server)))

        # And back, KVM -> vSphere: PVSCSI, the paravirtual class there.
        kvm_disk = self.kvm_disk(server)
        server = self._migrate_server(server, host=base.VMW)
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        controllers = _controllers(self.vm_of(server))
        self.assertIn('ParaVirtualSCSIController', controllers)
        self.assertNotIn('VirtualAHCIController', controllers)
        self.assertTrue(base.same_guest_data(
            self.guest_disk_file(server), 'vmdk', kvm_disk, 'qcow2'))
        sysmeta = self.instance(server).system_metadata
        self.assertEqual('vmpvscsi', sysmeta['image_hw_scsi_model'])
        self.assertEqual('vmxnet3', sysmeta['image_hw_vif_model'])
        self._confirm_resize(server)
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertTrue(base.same_guest_data(
            self.guest_disk_file(server), 'vmdk', raw, 'raw'))
        self._delete_server(server)

    def test_operator_default_bus_for_moves_between_families(self):
        self.flags(cross_family_disk_bus='ide', group='xhv')
        self.start_vmware()
        self.start_kvm()
        image_id, _raw = self.make_vmware_image()
        server = self.boot_on(base.VMW, image_id)
        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self.assertEqual(['ide'], _buses(self.kvm_disk_bus(server)))
        self.assertEqual(
            'ide', self.instance(server).system_metadata['image_hw_disk_bus'])
        # Revert: the vSphere original keeps its own controller.
        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertIn('VirtualLsiLogicController',
                      _controllers(self.vm_of(server)))
        self.assertNotIn('image_hw_disk_bus',
                         self.instance(server).system_metadata)
