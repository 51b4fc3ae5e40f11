"""A fault at each stage of a move leaves the server ACTIVE on its source.

Each test breaks one stage for real (the export, the HTTP transfer, the
safety inspection, the translation, the upload into the destination, a
restart of the source compute mid-transfer) and checks: the server is
ACTIVE on its source with the original powered on and byte-identical,
the migration is in error, and the destination kept nothing.
"""

import os
import re
import shutil
import tempfile
import threading

import greenlet
from nova import exception
from nova import objects

from nova_xhv.migration import exchange
from nova_xhv import translate
from nova_xhv.translate import exceptions as translate_exceptions
from nova_xhv.translate import qemu_img
from nova_xhv.translate import remote
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.fixtures import vcsim as vcsim_fixture
from tests.functional.migration import base
from tests.functional import nova_base
from tests.functional.translate import helpers as translate_helpers


class _HintedReader(object):
    """A disk reader serving its vmdk with a parent hint slipped in."""

    def __init__(self, reader, parent, cid):
        self.size = reader.size
        data = bytearray(b''.join(reader.iter_range(0, reader.size - 1)))
        text = bytes(data[512:512 + 10240]).split(b'\0', 1)[0]
        hinted = b'# parentCID=%s\n# parentFileNameHint="%s"\n' % (
            cid, parent) + text
        data[512:512 + len(hinted)] = hinted
        self._data = bytes(data)

    def iter_range(self, start, end, chunk=1024 * 1024):
        for offset in range(start, end + 1, chunk):
            yield self._data[offset:min(offset + chunk, end + 1)]


class FaultTestCase(base.CrossHypervisorTestCase):

    def setUp(self):
        super().setUp()
        self.start_vmware()
        self.start_kvm()

    def driver(self, host):
        return self.computes[host].manager.driver

    def boot_vmware_server(self):
        image_id, _raw = self.make_vmware_image()
        server = self.boot_on(base.VMW, image_id)
        return server, disks.sha256_file(self.guest_disk_file(server))

    def migrate_expecting_rollback(self, server, host):
        self.api.post_server_action(server['id'], {'migrate': {'host': host}})
        self._wait_for_migration_status(server, ['error'])
        return self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})

    def assert_back_on_vmware(self, server, checksum):
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        nova_base.wait_for(lambda: self.power_state(server) == 'poweredOn',
                           30, what='the original powered on again')
        self.assertEqual(checksum,
                         disks.sha256_file(self.guest_disk_file(server)))
        self.assert_nothing_staged_on_kvm(server)

    def assert_nothing_staged_on_kvm(self, server):
        nova_base.wait_for(
            lambda: not self.staged_leftovers(base.KVM), 30,
            what='the KVM destination to drop its staging records')
        self.assertFalse(os.path.exists(self.instance_dir(server)))
        self.assertFalse(nova_base.LibvirtFunctionalTestCase
                         .hypervisor_guest_exists(self, server))
        # No staging folder, no half-converted file anywhere.
        state = os.path.join(self.state_dir, base.KVM)
        self.assertEqual([], os.listdir(state) if os.path.isdir(state)
                         else [])

    # -- the stages --------------------------------------------------------

    def test_fault_in_export(self):
        server, checksum = self.boot_vmware_server()
        backend = self.driver(base.VMW).backend

        def broken_export(*args, **kwargs):
            raise OSError('datastore read error (injected)')

        self.stub_out_attr(backend, 'export_disks', broken_export)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assert_back_on_vmware(server, checksum)

    def test_fault_in_transfer(self):
        server, checksum = self.boot_vmware_server()
        # The exchange path: as with [xhv_vmware] direct_datastore_reads =
        # False (the direct path has its own test below).
        self.stub_out(
            'nova_xhv.backends.vmware.datastore.DatastoreReader.direct_read',
            lambda reader: None)
        inspected = threading.Event()
        refused = []
        real_inspect = remote.inspect_remote
        real_serve = exchange._Handler._serve_disk

        def inspect_then_cut(*args, **kwargs):
            info = real_inspect(*args, **kwargs)
            inspected.set()
            return info

        def flaky_serve(handler, disk_id):
            if inspected.is_set():
                # The header reads of the safety inspection got through;
                # then the link dies under the conversion's reads.
                refused.append(handler.headers.get('Range'))
                handler.close_connection = True
                return handler._error(503, 'link down (injected)')
            return real_serve(handler, disk_id)

        self.stub_out('nova_xhv.translate.remote.inspect_remote',
                      inspect_then_cut)
        self.stub_out('nova_xhv.migration.exchange._Handler._serve_disk',
                      flaky_serve)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assertTrue(refused)
        self.assert_back_on_vmware(server, checksum)

    def test_fault_in_direct_transfer(self):
        # The destination streams the disk straight from "the datastore"
        # (here a copy served by a Range server that dies midway, with its
        # own CA): the move rolls back like any transfer fault.
        server, checksum = self.boot_vmware_server()
        folder = tempfile.mkdtemp(prefix='datastore-', dir=self.workdir)
        stored = self.guest_disk_file(server)
        shutil.copy(stored, os.path.join(folder, 'disk.vmdk'))
        size = os.path.getsize(stored)
        tls = http_range.make_tls_files(folder)
        store = http_range.RangeServerProcess(folder, tls=tls,
                                              cut=(size // 2, size))
        self.addCleanup(store.stop)
        with open(tls.ca) as f:
            ca_pem = f.read()

        def dying_direct_read(reader):
            return translate.DirectRead(
                url=store.url('disk.vmdk'), headers={}, ca_pem=ca_pem)

        self.stub_out(
            'nova_xhv.backends.vmware.datastore.DatastoreReader.direct_read',
            dying_direct_read)
        server = self.migrate_expecting_rollback(server, base.KVM)
        store.stop()
        self.assertEqual(['bytes=0-%d' % (size - 1)],
                         [r[2] for r in store.requests])
        self.assert_back_on_vmware(server, checksum)

    def test_fault_in_inspection(self):
        server, checksum = self.boot_vmware_server()
        backend = self.driver(base.VMW).backend
        real_export = backend.export_disks

        def lying_export(*args, **kwargs):
            exported = real_export(*args, **kwargs)
            for disk in exported:
                # Claims qcow2 for what is a vmdk: the inspection on the
                # destination must refuse it before qemu-img opens it.
                disk.format, disk.subformat = 'qcow2', None
            return exported

        self.stub_out_attr(backend, 'export_disks', lying_export)
        seen = []
        real_convert = translate.convert

        def recording_convert(*args, **kwargs):
            try:
                return real_convert(*args, **kwargs)
            except Exception as error:
                seen.append(error)
                raise

        self.stub_out('nova_xhv.translate.convert', recording_convert)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assertEqual(1, len(seen))
        self.assertIsInstance(seen[0], translate.TranslationError)
        self.assert_back_on_vmware(server, checksum)

    def test_source_serving_a_changed_disk_is_refused(self):
        # A compromised source compute answers the inspection with the real
        # disk, then serves the conversion the same disk with a parent hint
        # naming a file on the destination (issue 16).
        server, checksum = self.boot_vmware_server()
        self.stub_out(
            'nova_xhv.backends.vmware.datastore.DatastoreReader.direct_read',
            lambda reader: None)
        host = tempfile.mkdtemp(prefix='xhv-host-')
        self.addCleanup(shutil.rmtree, host, ignore_errors=True)
        canary = translate_helpers.write_canary(
            os.path.join(host, 'secret.bin'), 4 * 1024 * 1024)
        parent = os.path.join(host, 'parent.vmdk')
        translate_helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', canary,
                               parent)
        with open(parent, 'rb') as f:
            f.seek(512)
            cid = re.search(rb'\nCID=(\w+)', f.read(10240)).group(1)
        inspected = threading.Event()
        real_inspect = remote.inspect_remote
        real_lookup = exchange._Handler._disk_reader

        def inspect_then_change(*args, **kwargs):
            info = real_inspect(*args, **kwargs)
            inspected.set()
            return info

        def changing_reader(handler, disk_id):
            reader = real_lookup(handler, disk_id)
            if reader is None or not inspected.is_set():
                return reader
            return _HintedReader(reader, parent.encode(), cid)

        seen = []
        real_convert = translate.convert

        def recording_convert(*args, **kwargs):
            try:
                return real_convert(*args, **kwargs)
            except Exception as error:
                seen.append(error)
                raise

        self.stub_out('nova_xhv.translate.remote.inspect_remote',
                      inspect_then_change)
        self.stub_out('nova_xhv.migration.exchange._Handler._disk_reader',
                      changing_reader)
        self.stub_out('nova_xhv.translate.convert', recording_convert)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assertEqual(1, len(seen))
        self.assertIn('changed after it was inspected', str(seen[0]))
        self.assert_back_on_vmware(server, checksum)
        for root in (self.state_dir, os.path.dirname(
                self.instance_dir(server))):
            for path in translate_helpers.files_under(root):
                self.assertFalse(translate_helpers.contains_canary(path),
                                 path)

    def test_fault_in_translation(self):
        server, checksum = self.boot_vmware_server()

        def failing_convert(*args, **kwargs):
            raise translate_exceptions.ConversionFailed(
                'qemu-img convert: write error (injected)')

        self.stub_out('nova_xhv.translate.qemu_img.run_convert',
                      failing_convert)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assert_back_on_vmware(server, checksum)

    def test_fault_in_upload_into_kvm(self):
        server, checksum = self.boot_vmware_server()
        backend = self.driver(base.KVM).backend
        real_stage = backend.stage_disks
        attempts = []

        def stage_then_fail(context, instance, disks_):
            staged = real_stage(context, instance, disks_)
            attempts.append(staged)
            # Staged, then the host's storage fails: the backend's own
            # discard must take back what it placed.
            backend.discard_staged_disks(context, instance, staged)
            raise OSError('No space left on device (injected)')

        self.stub_out_attr(backend, 'stage_disks', stage_then_fail)
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assertEqual(1, len(attempts))
        self.assert_back_on_vmware(server, checksum)

    def test_fault_in_upload_into_vmware(self):
        image_id, _raw = self.make_kvm_image()
        server = self.boot_on(base.KVM, image_id)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        checksum = disks.sha256_file(self.kvm_disk(server))
        backend = self.driver(base.VMW).backend

        def failing_import(*args, **kwargs):
            raise OSError('NFC lease aborted (injected)')

        self.stub_out_attr(backend, '_import', failing_import)
        server = self.migrate_expecting_rollback(server, base.VMW)
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        nova_base.wait_for(lambda: self.domain_state(server) == 'running',
                           30, what='the KVM original running again')
        self.assertEqual(checksum, disks.sha256_file(self.kvm_disk(server)))
        self.assertIsNone(self.vm_of(server))
        self.assertEqual([], self.staged_leftovers(base.VMW))

    def test_destination_with_the_wrong_ca_refuses_to_pull(self):
        server, checksum = self.boot_vmware_server()
        # KVM verifies its peers against another CA than the one that
        # signed vSphere's exchange certificate.
        other_ca = vcsim_fixture.make_ca_and_server_cert(
            tempfile.mkdtemp(prefix='other-ca-', dir=self.workdir))[0]
        self.flags(exchange_ca_file=other_ca, group='xhv')
        self.restart_compute(base.KVM, backend='libvirt')
        server = self.migrate_expecting_rollback(server, base.KVM)
        self.assert_back_on_vmware(server, checksum)
        # Refused at the TLS handshake: not one byte of the disk left.
        self.assertEqual(
            0, self.driver(base.VMW).moves.server.bytes_served)
        # Nova records the fault as the exception leaves the compute
        # manager, just after the rollback set the server ACTIVE: wait.

        def fault_details():
            faults = objects.InstanceFaultList.get_by_instance_uuids(
                self.cell_context(), [server['id']])
            return '\n'.join(f.details or '' for f in faults)

        details = nova_base.wait_for(fault_details, 30, what='the fault')
        self.assertIn('CERTIFICATE_VERIFY_FAILED', details)
        self.assertIn('[xhv] exchange_ca_file (%s)' % other_ca, details)

    def test_stage_timeout(self):
        # [xhv] migration_stage_timeout, as read by the source at start.
        self.driver(base.VMW).moves._conf['migration_stage_timeout'] = 3
        server, checksum = self.boot_vmware_server()
        release = self.block_translation()
        server = self.migrate_expecting_rollback(server, base.KVM)
        release.set()
        self.assert_back_on_vmware(server, checksum)

    def test_source_crash_mid_transfer(self):
        server, checksum = self.boot_vmware_server()
        release = self.block_translation()
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.KVM}})
        nova_base.wait_for(lambda: self.kvm_job_stage() == 'translate', 30,
                           what='the transfer to start')
        # The source dies while KVM pulls: its move thread ends without
        # any cleanup (GreenletExit passes every except Exception), the
        # server stays in resize_migrating, the disks stay exported.
        old = self.driver(base.VMW).moves.client

        crashed = []

        def crash(*args, **kwargs):
            crashed.append(True)
            raise greenlet.GreenletExit()

        old.stage_status = crash
        nova_base.wait_for(lambda: crashed, 10, what='the source to die')
        self.assertEqual('resize_migrating', self.api.get_server(
            server['id'])['OS-EXT-STS:task_state'])
        # On restart Nova finds it in resize_migrating and calls
        # finish_revert_migration: XHV tells KVM to discard and powers the
        # original on.
        self.restart_compute(base.VMW, backend='vmware')
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        release.set()
        self.assert_back_on_vmware(server, checksum)
        self.assertEqual([], self.staged_leftovers(base.VMW))

    def test_source_stop_mid_transfer_rolls_back(self):
        server, checksum = self.boot_vmware_server()
        release = self.block_translation()
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.KVM}})
        nova_base.wait_for(lambda: self.kvm_job_stage() == 'translate', 30,
                           what='the transfer to start')
        # A graceful stop/restart: the waiting move rolls back at once.
        self.restart_compute(base.VMW, backend='vmware')
        server = self._wait_for_server_parameter(
            server, {'status': 'ACTIVE', 'OS-EXT-STS:task_state': None})
        release.set()
        self.assert_back_on_vmware(server, checksum)

    # -- helpers -----------------------------------------------------------

    def stub_out_attr(self, obj, name, value):
        real = getattr(obj, name)
        setattr(obj, name, value)
        self.addCleanup(setattr, obj, name, real)

    def block_translation(self):
        """Make the destination's conversion hang until released."""
        release = threading.Event()
        real_run = qemu_img.run_convert

        def hanging_run(argv, limits, timeout, progress=None,
                        cancel_event=None, **kwargs):
            while not release.is_set():
                if cancel_event is not None and cancel_event.is_set():
                    raise translate_exceptions.ConversionFailed(
                        'cancelled')
                release.wait(0.1)
            raise translate_exceptions.ConversionFailed(
                'released by the test')

        self.stub_out('nova_xhv.translate.qemu_img.run_convert', hanging_run)
        self.addCleanup(release.set)
        self.assertIsNotNone(real_run)
        return release

    def kvm_job_stage(self):
        stager = self.driver(base.KVM).moves.stager
        with stager._lock:
            jobs = list(stager._jobs.values())
        return jobs[0].report()['stage'] if jobs else None

    # -- finish_migration --------------------------------------------------

    def test_finish_fault_then_documented_recovery_copies_nothing(self):
        server, checksum = self.boot_vmware_server()
        kvm = self.driver(base.KVM).backend

        def failing_spawn(*args, **kwargs):
            raise OSError('libvirt: internal error (injected)')

        self.stub_out_attr(kvm, 'spawn_from_disks', failing_spawn)
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.KVM}})
        server = self._wait_for_state_change(server, 'ERROR')
        # Nova's rule: ERROR on the destination.  XHV kept the original.
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOff', self.power_state(server))
        self.assertEqual(checksum,
                         disks.sha256_file(self.guest_disk_file(server)))

        # The documented recovery: reset to active, move back by host.
        self.admin_api.post_server_action(
            server['id'], {'os-resetState': {'state': 'active'}})
        served_before = self.driver(base.KVM).moves.server.bytes_served
        converts = []
        self.stub_out('nova_xhv.translate.convert',
                      lambda *a, **k: converts.append(a))
        server = self._migrate_server(server, host=base.VMW)
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self.assertEqual('poweredOn', self.power_state(server))
        self.assertEqual(checksum,
                         disks.sha256_file(self.guest_disk_file(server)))
        # Nothing was copied or translated.
        self.assertEqual([], converts)
        self.assertEqual(served_before,
                         self.driver(base.KVM).moves.server.bytes_served)
        sysmeta = self.instance(server).system_metadata
        self.assertNotIn('image_hw_disk_bus', sysmeta)

        # Reverting the recovery would destroy the original: refused.
        self.assertRaises(
            exception.NovaException,
            self.driver(base.VMW).moves.guard_destroy,
            type('I', (), {'uuid': server['id'],
                           'task_state': 'resize_reverting'})())
        self._confirm_resize(server)
        # Confirm removed what the failed finish left on KVM.
        self.assert_nothing_staged_on_kvm(server)
        self.assertEqual('poweredOn', self.power_state(server))
        # vSphere remembers the reclaim (to refuse a revert) until the
        # server is deleted or moves again.
        self.assertEqual(1, len(self.staged_leftovers(base.VMW)))
        self._delete_server(server)
        self.assert_guest_gone(server)
        self.assertEqual([], self.staged_leftovers(base.VMW))
