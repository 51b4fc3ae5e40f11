"""Ephemeral and swap disks on moves between vSphere (vcsim) and KVM.

KVM keeps a flavor's ephemeral and swap disks as local files (disk.eph0,
disk.swap); vSphere keeps them as more disks of the VM, and XHV's vSphere
backend does not create them for a new boot.  So a move carries them as
disks, and KVM names the ones that come back by the flavor's sizes, and
creates blank the ones a server born on vSphere never had.
"""

import os
import shutil

import fixtures
from oslo_concurrency import processutils
from pyVim import task as vim_task
from pyVmomi import vim

from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional import nova_base

MiB = 1024 ** 2
GiB = 1024 ** 3


class TestLocalDisks(base.CrossHypervisorTestCase):

    def setUp(self):
        super().setUp()
        # Nova's default (vfat) needs dosfstools; ext4 is always here.
        self.flags(default_ephemeral_format='ext4')
        self.start_vmware()
        self.start_kvm()

    def driver(self, host):
        return self.computes[host].manager.driver

    def flavor_with_local_disks(self):
        return self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                   ephemeral=1, swap=64)

    def vmware_disk_files(self, server):
        """Local paths of the VM's disks on vcsim's datastore, in order."""
        files = []
        for device in self.vm_of(server).config.hardware.device:
            if isinstance(device, vim.vm.device.VirtualDisk):
                name = device.backing.fileName.split('] ', 1)[1]
                files.append(os.path.join(self.vcsim.datastore_dir(), name))
        return files

    def kvm_virtual_size(self, path):
        return base.qemu_img_info(path, 'qcow2')['virtual-size']

    def test_ephemeral_and_swap_go_to_vmware_and_come_back(self):
        image_id, raw = self.make_kvm_image()
        server = self._create_server(
            image_uuid=image_id, flavor_id=self.flavor_with_local_disks(),
            networks='none', host=base.KVM)
        folder = self.instance_dir(server)
        self.assertEqual(3, len(self.kvm_disk_bus(server)))
        saved = self.useFixture(fixtures.TempDir()).path

        server = self._migrate_server(server, host=base.VMW)
        # The KVM original is off and untouched until confirm: keep its
        # ephemeral and swap contents to compare after the round trip.
        for name in ('disk.eph0', 'disk.swap'):
            shutil.copy(os.path.join(folder, name), os.path.join(saved, name))
        vmdks = self.vmware_disk_files(server)
        self.assertEqual(3, len(vmdks))
        for vmdk, name in zip(vmdks[1:], ('disk.eph0', 'disk.swap')):
            self.assertTrue(base.same_guest_data(
                vmdk, 'vmdk', os.path.join(folder, name), 'qcow2'), name)
        self._confirm_resize(server)
        self.assertFalse(os.path.exists(folder))

        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        self.assertEqual(3, len(self.kvm_disk_bus(server)))
        self.assertTrue(base.same_guest_data(
            self.kvm_disk(server), 'qcow2', raw, 'raw'))
        for name in ('disk.eph0', 'disk.swap'):
            # The same data under the same name; not re-created blank.
            self.assertTrue(base.same_guest_data(
                os.path.join(folder, name), 'qcow2',
                os.path.join(saved, name), 'qcow2'), name)
        self.assertEqual(GiB, self.kvm_virtual_size(
            os.path.join(folder, 'disk.eph0')))
        self.assertEqual(64 * MiB, self.kvm_virtual_size(
            os.path.join(folder, 'disk.swap')))
        self.assertFalse(os.path.exists(os.path.join(
            folder, '.xhv-created-disks')))
        self._confirm_resize(server)
        self.assertIsNone(self.vm_of(server))
        self._delete_server(server)

    def test_vmware_server_gets_blank_ones_on_kvm_and_revert_removes_them(
            self):
        image_id, _raw = self.make_vmware_image()
        server = self._create_server(
            image_uuid=image_id, flavor_id=self.flavor_with_local_disks(),
            networks='none', host=base.VMW)
        # vSphere made no ephemeral or swap disk.
        self.assertEqual(1, len(self.vmware_disk_files(server)))
        original = self.guest_disk_file(server)
        checksum = disks.sha256_file(original)

        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        folder = self.instance_dir(server)
        self.assertEqual(['sata', 'sata', 'sata'],
                         [bus for _dev, bus in self.kvm_disk_bus(server)])
        self.assertEqual(GiB, self.kvm_virtual_size(
            os.path.join(folder, 'disk.eph0')))
        self.assertEqual(64 * MiB, self.kvm_virtual_size(
            os.path.join(folder, 'disk.swap')))
        log = self.stdlog.logger.output
        self.assertIn('Creating blank local disks disk.eph0, disk.swap', log)
        # Once the server runs they are its own, as after a boot.
        self.assertFalse(os.path.exists(os.path.join(
            folder, '.xhv-created-disks')))

        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertEqual(checksum, disks.sha256_file(original))
        self.assertFalse(os.path.exists(folder))
        self.assertEqual([], self.staged_leftovers(base.KVM))

    def test_a_disk_kvm_cannot_place_rolls_back_before_any_pull(self):
        # A disk added to the VM in vCenter, outside Nova: no ephemeral or
        # swap disk of the flavor has its size, and KVM keeps nothing else
        # as a local disk.
        image_id, _raw = self.make_vmware_image()
        server = self._create_server(
            image_uuid=image_id, flavor_id=self.flavor_with_local_disks(),
            networks='none', host=base.VMW)
        self.add_vmware_disk(server, 3 * MiB)
        sums = [disks.sha256_file(p) for p in self.vmware_disk_files(server)]
        self.assertEqual(2, len(sums))
        served_before = self.driver(base.VMW).moves.server.bytes_served

        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.KVM}})
        self._wait_for_migration_status(server, ['error'])
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        nova_base.wait_for(lambda: self.power_state(server) == 'poweredOn',
                           30, what='the original powered on again')
        self.assertEqual(
            sums, [disks.sha256_file(p) for p in
                   self.vmware_disk_files(server)])
        # Refused before translation: no disk data was served.
        self.assertEqual(served_before,
                         self.driver(base.VMW).moves.server.bytes_served)
        self.assertFalse(os.path.exists(self.instance_dir(server)))
        self.assertIn('matches none of the ephemeral and swap disks',
                      self.stdlog.logger.output)

    def add_vmware_disk(self, server, size):
        """A real disk beside the VM's own, attached as its next disk."""
        vm = self.vm_of(server)
        [root] = [d for d in vm.config.hardware.device
                  if isinstance(d, vim.vm.device.VirtualDisk)]
        ds_name = root.backing.fileName.split(']', 1)[0].lstrip('[')
        name = '%s/extra.vmdk' % server['id']
        path = os.path.join(self.vcsim.datastore_dir(), name)
        raw = path + '.raw'
        disks.make_raw_disk(raw, size)
        # A descriptor and its -flat extent, as ESXi stores disks.
        processutils.execute('qemu-img', 'convert', '-f', 'raw', '-O',
                             'vmdk', '-o', 'subformat=monolithicFlat', raw,
                             path)
        os.unlink(raw)
        disk = vim.vm.device.VirtualDisk(
            key=-101, controllerKey=root.controllerKey,
            unitNumber=root.unitNumber + 1, capacityInKB=size // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode='persistent',
                fileName='[%s] %s' % (ds_name, name)))
        spec = vim.vm.ConfigSpec(deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation='add', device=disk)])
        vim_task.WaitForTask(vm.ReconfigVM_Task(spec=spec))
