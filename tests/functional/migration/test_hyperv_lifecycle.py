"""A server's life on the Hyper-V backend through Nova's API."""

import os

from nova_xhv import translate
from tests.functional.migration import base
from tests.functional import nova_base

VM_RUNNING, VM_OFF = 2, 3
CONTROLLER_IDE, CONTROLLER_SCSI = 0, 1


class TestHyperVLifecycle(base.CrossHypervisorTestCase):

    def vm(self, server):
        return self.hyperv.vms().get(server['id'])

    def test_qcow2_boot_stop_start_reboot_snapshot_delete(self):
        self.start_hyperv()
        image_id, raw = self.make_image('qcow2', name='hyperv-guest')
        server = self.boot_on(base.HYPERV, image_id)
        vm = self.vm(server)
        self.assertEqual(VM_RUNNING, vm['State'])
        self.assertEqual((1, 1, 256 * 1024 * 1024), (
            vm['Generation'], vm['ProcessorCount'], vm['MemoryStartup']))
        self.assertTrue(vm['Notes'].startswith('xhv:%s\n' % server['id']))
        self.assertEqual([(CONTROLLER_IDE, 0, 0)], [
            (d['ControllerType'], d['ControllerNumber'],
             d['ControllerLocation']) for d in vm['HardDrives']])
        self.assertTrue(translate.compare(self.hyperv_disk(server), 'vhdx',
                                          raw, 'raw'))
        node = self.compute_node(base.HYPERV)
        self.assertEqual('hyperv', node['hypervisor_type'])
        self.assertEqual((base.HYPERV, 'XHV-HV01'), (
            node['service']['host'], node['hypervisor_hostname']))

        server = self._stop_server(server)
        self.assertEqual(VM_OFF, self.vm(server)['State'])
        server = self._start_server(server)
        self.assertEqual(VM_RUNNING, self.vm(server)['State'])
        starts = self.vm(server)['Starts']
        server = self._reboot_server(server)
        self.assertEqual(VM_RUNNING, self.vm(server)['State'])
        self.assertEqual(starts + 1, self.vm(server)['Starts'])

        self._snapshot_server(server, 'xhv-snap')
        snapshot = nova_base.wait_for(
            lambda: [i for i in self.glance.detail(self.ctxt)
                     if i['name'] == 'xhv-snap'
                     and i['id'] in self.glance._imagedata], 60,
            what='the snapshot image and its data')[0]
        self.assertEqual('vhdx', snapshot['disk_format'])
        self.assertEqual('hyperv', snapshot['properties']['hypervisor_type'])
        snap_file = os.path.join(self.workdir, 'snapshot.vhdx')
        with open(snap_file, 'wb') as f:
            f.write(self.glance._imagedata[snapshot['id']])
        self.assertTrue(translate.compare(snap_file, 'vhdx', raw, 'raw'))
        # The checkpoint taken for a consistent copy is gone again.
        self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual([], self.vm(server)['Checkpoints'])

        self._delete_server(server)
        self.assert_guest_gone(server)
        self.assertEqual([], [f for f in self.hyperv.storage_files()
                              if server['id'] in f])

    def test_uefi_image_gets_generation_2_on_scsi(self):
        self.start_hyperv()
        image_id, raw = self.make_image(
            'vhdx', {'hw_firmware_type': 'uefi'}, name='uefi-guest')
        server = self.boot_on(base.HYPERV, image_id)
        vm = self.vm(server)
        self.assertEqual((2, False), (vm['Generation'], vm['SecureBoot']))
        self.assertEqual([CONTROLLER_SCSI],
                         [d['ControllerType'] for d in vm['HardDrives']])
        self._delete_server(server)
        self.assert_guest_gone(server)
