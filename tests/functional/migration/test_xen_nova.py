"""The Xen compute through Nova: a server's life, and moves that fail.

The life: boot from a vhd image (and a qcow2 one, through the engine),
stop, start, reboot, snapshot to Glance as vhd, delete.  The faults, one
stage each, broken for real in the xapi simulator: the upload into Xen
(``/import_raw_vdi`` answers 500), the SR refusing a new VDI, and the
export out of Xen cut mid-stream.  Each leaves the server ACTIVE on its
source, byte-identical, and nothing on the destination.
"""

import os

from nova_xhv.backends.xenapi import vm as vmops
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional.migration import xen_bed
from tests.functional import nova_base


class XenNovaTestCase(base.CrossHypervisorTestCase):

    def sim(self):
        return xen_bed.simulator(self)

    def xen_state(self, server):
        _, vms = xen_bed._records(self, server)
        return vms[0]['power_state'] if vms else None


class TestXenLifecycle(XenNovaTestCase):

    def test_boot_stop_start_reboot_snapshot_delete(self):
        xen_bed.start_xen(self)
        image_id, raw = xen_bed.make_xen_image(self)
        server = self.boot_on(xen_bed.XEN, image_id)
        self.assertEqual('Running', self.xen_state(server))
        disk, fmt = xen_bed.guest_disk(self, server)
        self.assertTrue(base.same_guest_data(disk, fmt, raw, 'raw'))
        # The flavor's 1 GiB root disk, the flavor's memory.
        x = self.sim().session().xenapi
        vm = x.VM.get_by_name_label(server['id'])[0]
        self.assertEqual(str(256 * vmops.MiB),
                         x.VM.get_memory_static_max(vm))
        self.assertEqual(1024 ** 3, os.path.getsize(disk))

        server = self._stop_server(server)
        self.assertEqual('Halted', self.xen_state(server))
        server = self._start_server(server)
        self.assertEqual('Running', self.xen_state(server))
        server = self._reboot_server(server, hard=True)
        self.assertEqual('Running', self.xen_state(server))

        self._snapshot_server(server, 'xen-snap')
        snapshot = nova_base.wait_for(
            lambda: [i for i in self.glance.detail(self.ctxt)
                     if i['name'] == 'xen-snap'
                     and i['id'] in self.glance._imagedata], 60,
            what='the snapshot image and its data')[0]
        self.assertEqual('vhd', snapshot['disk_format'])
        snap_file = os.path.join(self.workdir, 'snap.vhd')
        with open(snap_file, 'wb') as f:
            f.write(self.glance._imagedata[snapshot['id']])
        self.assertTrue(base.same_guest_data(snap_file, 'vpc', raw, 'raw'))
        # The VDI snapshot taken for a consistent copy is gone again.
        self.assertEqual([], self.snapshot_vdis())
        self._wait_for_state_change(server, 'ACTIVE')

        self._delete_server(server)
        self.assertEqual([], xen_bed.xen_leftovers(self, server))
        self.assertFalse(os.path.exists(disk))

    def test_boot_from_qcow2_through_the_engine(self):
        xen_bed.start_xen(self)
        image_id, raw = self.make_image('qcow2', name='xen-qcow2')
        server = self.boot_on(xen_bed.XEN, image_id)
        disk, fmt = xen_bed.guest_disk(self, server)
        self.assertTrue(base.same_guest_data(disk, fmt, raw, 'raw'))
        self._delete_server(server)

    def snapshot_vdis(self):
        x = self.sim().session().xenapi
        return [r['uuid'] for r in x.VDI.get_all_records().values()
                if r['is_a_snapshot']]


class TestXenMoveFaults(XenNovaTestCase):

    def setUp(self):
        super().setUp()
        xen_bed.start_xen(self)
        self.start_kvm()

    def migrate_expecting_rollback(self, server, host):
        self.api.post_server_action(server['id'], {'migrate': {'host': host}})
        self._wait_for_migration_status(server, ['error'])
        return self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})

    def boot_kvm_server(self):
        image_id, _raw = self.make_kvm_image()
        server = self.boot_on(base.KVM, image_id)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        return server, disks.sha256_file(self.kvm_disk(server))

    def assert_back_on_kvm(self, server, checksum):
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        nova_base.wait_for(lambda: self.domain_state(server) == 'running',
                           30, what='the KVM original running again')
        self.assertEqual(checksum, disks.sha256_file(self.kvm_disk(server)))
        self.assertEqual([], xen_bed.xen_leftovers(self, server))
        self.assertEqual([], self.staged_leftovers(xen_bed.XEN))
        # No spooled upload or lost VDI file in the SR.
        x = self.sim().session().xenapi
        known = {r['uuid'] + '.raw' for r in x.VDI.get_all_records().values()}
        self.assertEqual([], [n for n in os.listdir(self.sim().sr_dir())
                              if n not in known])

    def test_failed_upload_into_xen_rolls_back(self):
        server, checksum = self.boot_kvm_server()
        self.sim().inject(import_raw_vdi={'status': 500})
        server = self.migrate_expecting_rollback(server, xen_bed.XEN)
        self.assert_back_on_kvm(server, checksum)

    def test_sr_refusing_a_vdi_rolls_back(self):
        server, checksum = self.boot_kvm_server()
        self.sim().inject(calls={'VDI.create': ['SR_BACKEND_FAILURE_44',
                                                '', 'insufficient space']})
        server = self.migrate_expecting_rollback(server, xen_bed.XEN)
        self.assert_back_on_kvm(server, checksum)

    def test_export_cut_out_of_xen_rolls_back(self):
        image_id, _raw = xen_bed.make_xen_image(self)
        server = self.boot_on(xen_bed.XEN, image_id)
        disk, _ = xen_bed.guest_disk(self, server)
        checksum = disks.sha256_file(disk)
        self.sim().inject(export_raw_vdi={'cut_after': 65536})
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assertEqual(xen_bed.XEN, server['OS-EXT-SRV-ATTR:host'])
        xen_bed.wait_running(self, server)
        self.assertEqual(checksum, disks.sha256_file(disk))
        self.assertFalse(nova_base.LibvirtFunctionalTestCase
                         .hypervisor_guest_exists(self, server))
        self.assertEqual([], self.staged_leftovers(base.KVM))
        # The partial export copy is gone from the Xen compute too.
        staging = os.path.join(self.workdir, 'xen-staging')
        self.assertEqual([], os.listdir(staging))
