"""A fault at each stage of a move in or out of Hyper-V leaves the original
whole: the export (a cmdlet failing on the host), the transfer (SMB reads
failing midway), the stage (an SMB write failing) and the spawn (Start-VM
failing on the host).  The other side is the fake family (no guest to
run), so each test checks Hyper-V's part only.
"""

from nova_xhv.backends.hyperv import storage as hv_storage
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional import nova_base

VM_RUNNING = 2


class HyperVFaultTestCase(base.CrossHypervisorTestCase):

    def setUp(self):
        super().setUp()
        self.start_hyperv()
        self.start_fake()

    def migrate_expecting_rollback(self, server, host):
        self.api.post_server_action(server['id'], {'migrate': {'host': host}})
        self._wait_for_migration_status(server, ['error'])
        return self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})

    def boot_hyperv_server(self):
        image_id, _raw = self.make_image('vhdx', name='hyperv-guest')
        server = self.boot_on(base.HYPERV, image_id)
        return server, disks.sha256_file(self.hyperv_disk(server))

    def boot_fake_server(self):
        image_id, _raw = self.make_image('qcow2', name='fake-guest')
        server = self.boot_on(base.FAKE, image_id)
        return server, disks.sha256_file(self.fake_disk(server))

    def assert_back_on_hyperv(self, server, checksum):
        self.assertEqual(base.HYPERV, server['OS-EXT-SRV-ATTR:host'])
        nova_base.wait_for(
            lambda: self.hyperv.vms()[server['id']]['State'] == VM_RUNNING,
            30, what='the Hyper-V original running again')
        self.assertEqual(checksum,
                         disks.sha256_file(self.hyperv_disk(server)))
        nova_base.wait_for(lambda: not self.staged_leftovers(base.FAKE), 30,
                           what='the fake destination to drop its staging')

    def assert_nothing_on_hyperv(self, server):
        self.assertNotIn(server['id'], self.hyperv.vms())
        self.assertEqual([], [f for f in self.hyperv.storage_files()
                              if server['id'] in f])

    def test_fault_in_export_from_hyperv(self):
        server, checksum = self.boot_hyperv_server()
        self.hyperv.fail_cmdlet('Get-VHD', 'The file is in use by another '
                                           'process (injected).')
        server = self.migrate_expecting_rollback(server, base.FAKE)
        self.assert_back_on_hyperv(server, checksum)

    def test_fault_in_transfer_from_hyperv(self):
        server, checksum = self.boot_hyperv_server()
        real = hv_storage.SMBReader.iter_range
        reads = []

        def failing_after_the_headers(reader, start, end, chunk=1 << 20):
            reads.append((start, end))
            if len(reads) > 3:
                raise OSError('STATUS_CONNECTION_RESET (injected)')
            return real(reader, start, end, chunk)

        self.stub_out('nova_xhv.backends.hyperv.storage.SMBReader.iter_range',
                      failing_after_the_headers)
        server = self.migrate_expecting_rollback(server, base.FAKE)
        self.assertGreater(len(reads), 3)
        self.assert_back_on_hyperv(server, checksum)

    def test_fault_in_stage_into_hyperv(self):
        server, checksum = self.boot_fake_server()
        real = hv_storage.Share.upload

        def upload_then_fail(share, local, relative):
            real(share, local, relative)
            raise hv_storage.HyperVStorageError(
                share=share.label, reason='STATUS_DISK_FULL (injected)')

        self.stub_out('nova_xhv.backends.hyperv.storage.Share.upload',
                      upload_then_fail)
        server = self.migrate_expecting_rollback(server, base.HYPERV)
        self.assertEqual(base.FAKE, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(checksum, disks.sha256_file(self.fake_disk(server)))
        self.assert_nothing_on_hyperv(server)

    def test_fault_in_spawn_on_hyperv(self):
        server, checksum = self.boot_fake_server()
        self.hyperv.fail_cmdlet('Start-VM', 'The hypervisor is not running '
                                            '(injected).')
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.HYPERV}})
        server = self._wait_for_state_change(server, 'ERROR')
        # Nova's rule: ERROR on the destination.  The original is whole and
        # Hyper-V created nothing that stays.
        self.assertEqual(base.HYPERV, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual(checksum, disks.sha256_file(self.fake_disk(server)))
        self.assertNotIn(server['id'], self.hyperv.vms())
