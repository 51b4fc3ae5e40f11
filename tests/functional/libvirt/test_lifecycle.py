"""Servers on real libvirtd/KVM through xhv.XHVDriver: boot, power, delete."""

import os
import subprocess
import tempfile

from tests.fixtures import disks
from tests.functional import nova_base


def upload_bootable_image(test, disk_format, name=None):
    """Upload the tiny bootable disk to the Glance fixture as raw or qcow2."""
    workdir = tempfile.mkdtemp(prefix='xhv-image-')
    test.addCleanup(subprocess.run, ('rm', '-rf', workdir))
    raw = os.path.join(workdir, 'boot.raw')
    disks.make_bootable_disk(raw)
    path = raw
    if disk_format == 'qcow2':
        path = os.path.join(workdir, 'boot.qcow2')
        subprocess.run(('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, path), check=True)
    with open(path, 'rb') as data:
        image = test.glance.create(test.ctxt, {
            'name': name or 'xhv-boot-%s' % disk_format,
            'disk_format': disk_format, 'container_format': 'bare',
            'visibility': 'public', 'status': 'active', 'min_disk': 0,
            'min_ram': 0, 'properties': {}}, data=data)
    return image['id']


class TestLifecycle(nova_base.LibvirtFunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.start_compute('host1')

    def _boot_and_check(self, disk_format):
        image_id = upload_bootable_image(self, disk_format)
        server = self._create_server(image_uuid=image_id, networks='none')
        self.assertEqual('running', self.domain_state(server))
        self.assertIn("<domain type='%s'" % self.virt_type,
                      nova_base.virsh('dumpxml', server['id']))
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        hypervisor = self.compute_node('host1')
        self.assertEqual('QEMU', hypervisor['hypervisor_type'])
        return server

    def test_boot_raw_power_cycle_and_delete(self):
        server = self._boot_and_check('raw')
        console_log = os.path.join(self.instance_dir(server), 'console.log')

        server = self._stop_server(server)
        self.assertEqual('shut off', self.domain_state(server))

        os.truncate(console_log, 0)  # the next boot must write it again
        server = self._start_server(server)
        self.assertEqual('running', self.domain_state(server))
        self.wait_for_console_marker(server, disks.BOOT_MARKER)

        os.truncate(console_log, 0)
        server = self._reboot_server(server, hard=True)
        self.assertEqual('running', self.domain_state(server))
        self.wait_for_console_marker(server, disks.BOOT_MARKER)

        self._delete_server(server)
        self.assert_guest_gone(server)
        self.assertFalse(os.path.exists(self.instance_dir(server)))

    def test_boot_qcow2_and_delete(self):
        server = self._boot_and_check('qcow2')
        # The stock driver's layout: a qcow2 overlay on a raw _base file.
        self.assertEqual(1, len(self.base_files()))
        self._delete_server(server)
        self.assert_guest_gone(server)
