"""Volumes on Hyper-V and Xen through Nova, and following moves to KVM.

Nova (API, conductor, computes ``hv1`` on the Hyper-V simulator with its
real Samba, ``xen1`` on the xapi simulator, ``kvm1`` on real libvirtd,
all xhv.XHVDriver) and real cinder-api, cinder-scheduler and
cinder-volume (XHV around Cinder's NFS driver) in a child process.  The
NFS export Cinder writes is a folder of this machine: KVM bind-mounts it
(no NFS client here), Samba shares it to the Hyper-V host (a
dual-protocol filer), the Xen compute's mount of it is the folder itself
and the xapi simulator's NFS SR opens ``<export>/<SR uuid>/``.  Neither
simulator runs a guest: "the guest writes" is a write into the file the
hypervisor opens (the .vhd name Hyper-V attached, the VDI's file in the
SR), read back through the next attachment.
"""

import os

from nova_xhv.backends.hyperv import volumes as hv_volumes
from nova_xhv.backends.xenapi import volumes as xen_volumes
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional.migration import xen_bed
from tests.functional import nova_base
from tests.functional import nova_cinder
from tests.simulators.hyperv import model as hv_model

MiB = disks.MiB
GiB = 1024 * MiB
SCSI = 1


class HyperVXenBed(nova_cinder.RealCinderMixin,
                   base.CrossHypervisorTestCase):
    """Hyper-V and Xen computes only (no libvirtd)."""

    uses_kvm = False

    def setUp(self):
        super().setUp()
        self.start_volume_computes()

    #: False: the Hyper-V and Xen computes are configured without the
    #: export (no ``volume_shares`` / ``volume_exports`` entry).
    map_volume_export = True

    def start_volume_computes(self):
        export = self.cinder_services.export
        self.start_hyperv(volume_export=export,
                          map_volume_export=self.map_volume_export)
        xen_bed.start_xen(self, volume_export=export
                          if self.map_volume_export else None)

    # -- helpers -------------------------------------------------------------

    def data_volume(self, volume_type='nfsraw'):
        volume = self.cinder_services.create_volume(size=1,
                                                    volume_type=volume_type)
        path = self.cinder_services.volume_file(volume['id'])
        if volume_type == 'nfsraw':
            disks.make_raw_disk(path, GiB, seed=23)
            os.chmod(path, 0o666)
        return volume, path

    def assert_attached(self, server, volume, host):
        shown = self.cinder_services.volume(volume['id'])
        self.assertEqual('in-use', shown['status'])
        [attachment] = shown['attachments']
        self.assertEqual((server['id'], host), (attachment['server_id'],
                                                attachment['host_name']))
        self.assertEqual([volume['id']], self.server_volumes(server))

    def hyperv_volume_drives(self, server):
        vm = self.hyperv.vms().get(server['id'])
        return [d for d in (vm['HardDrives'] if vm else [])
                if d['Path'].startswith('\\\\')]

    def xen_volume_vdis(self, server):
        x, vms = xen_bed._records(self, server)
        found = []
        for vm in vms:
            for vbd in vm['VBDs']:
                record = x.VBD.get_record(vbd)
                if record['other_config'].get(xen_volumes.VOLUME_KEY):
                    found.append(x.VDI.get_record(record['VDI']))
        return found

    def write_through(self, path, offset, byte):
        """What the guest writes, into the file the hypervisor opened."""
        with open(path, 'r+b') as f:
            f.seek(offset)
            f.write(byte * 65536)

    def assert_written(self, path, offset, byte):
        with open(path, 'rb') as f:
            f.seek(offset)
            self.assertEqual(byte * 65536, f.read(65536))

    def _wait_for_state_change(self, server, expected_status,
                               max_retries=240, **kwargs):
        # A move through two simulators and libvirtd on 2 busy cores
        # takes longer than the harness's 5 s; still a wait on the state.
        return super()._wait_for_state_change(
            server, expected_status, max_retries=max_retries, **kwargs)

    def detach(self, server, volume_id):
        """Detach as the server's own compute does.

        Nova's compute calls the driver only when ``CONF.host`` is the
        instance's host; here several computes share one process, whose
        ``CONF.host`` is the last one started.
        """
        from nova import conf
        previous = conf.CONF.host
        self.flags(host=server['OS-EXT-SRV-ATTR:host'])
        try:
            return super().detach(server, volume_id)
        finally:
            self.flags(host=previous)

    def failed_migrations(self, server):
        return [m for m in self.api.api_get('/os-migrations').body[
            'migrations'] if m['instance_uuid'] == server['id']
            and m['status'] == 'error']

    def assert_plain_volume(self, path, size=GiB):
        """Nothing of any family left in the export: the raw file only."""
        self.assertEqual(size, os.path.getsize(path))
        self.assertFalse(os.path.exists(path + hv_volumes.LINK_SUFFIX))
        self.assertFalse(os.path.exists(os.path.join(
            os.path.dirname(path),
            xen_volumes.sr_uuid_for('127.0.0.1', os.path.dirname(path)))))


class HyperVXenVolumesTestCase(HyperVXenBed):

    def test_one_volume_handed_between_hyperv_and_xen_servers(self):
        hv_image, _ = self.make_image('vhdx', name='hyperv-guest')
        xen_image, _ = xen_bed.make_xen_image(self)
        on_hv = self.boot_on(base.HYPERV, hv_image)
        on_xen = self.boot_on(xen_bed.XEN, xen_image)
        volume, path = self.data_volume()
        export = self.cinder_services.export
        vhd = path + hv_volumes.LINK_SUFFIX
        in_sr = os.path.join(export, xen_volumes.sr_uuid_for(
            '127.0.0.1', export), 'volume-%s.raw' % volume['id'])

        self.attach(on_hv, volume['id'])
        self.assert_attached(on_hv, volume, base.HYPERV)
        [drive] = self.hyperv_volume_drives(on_hv)
        self.assertEqual(SCSI, drive['ControllerType'])
        self.assertEqual(GiB, base.qemu_img_info(vhd, 'vpc')['virtual-size'])
        self.write_through(vhd, 3 * MiB, b'\x11')
        self.detach(on_hv, volume['id'])
        self.assertEqual([], self.hyperv_volume_drives(on_hv))
        self.assert_plain_volume(path)

        self.attach(on_xen, volume['id'])
        self.assert_attached(on_xen, volume, xen_bed.XEN)
        [vdi] = self.xen_volume_vdis(on_xen)
        self.assertEqual(('volume-%s' % volume['id'], {'type': 'raw'},
                          str(GiB)), (vdi['location'], vdi['sm_config'],
                                      vdi['virtual_size']))
        self.assert_written(in_sr, 3 * MiB, b'\x11')
        self.write_through(in_sr, 5 * MiB, b'\x22')
        self.detach(on_xen, volume['id'])
        self.assertEqual([], self.xen_volume_vdis(on_xen))
        self.assert_plain_volume(path)

        self.attach(on_hv, volume['id'])
        self.assert_written(vhd, 5 * MiB, b'\x22')
        # Deleting the server keeps the volume, as it was.
        self._delete_server(on_hv)
        self.cinder_services.wait_volume(volume['id'], 'available')
        self.assert_plain_volume(path)
        self.assert_written(path, 3 * MiB, b'\x11')
        self.assert_written(path, 5 * MiB, b'\x22')

    def test_a_volume_extended_while_detached_attaches_at_its_new_size(self):
        cinder = self.cinder_services
        volume, path = self.data_volume()
        cinder.request('POST', '/volumes/%s/action' % volume['id'],
                       json={'os-extend': {'new_size': 2}})
        cinder.wait_for(lambda: cinder.volume(volume['id'])['size'] == 2,
                        'the volume extended to 2 GiB')
        cinder.wait_volume(volume['id'], 'available')
        self.assertEqual(2 * GiB, os.path.getsize(path))
        hv_image, _ = self.make_image('vhdx', name='hyperv-guest')
        xen_image, _ = xen_bed.make_xen_image(self)
        on_hv = self.boot_on(base.HYPERV, hv_image)
        on_xen = self.boot_on(xen_bed.XEN, xen_image)

        self.attach(on_hv, volume['id'])
        vhd = path + hv_volumes.LINK_SUFFIX
        self.assertEqual(2 * GiB,
                         base.qemu_img_info(vhd, 'vpc')['virtual-size'])
        self.detach(on_hv, volume['id'])
        self.attach(on_xen, volume['id'])
        [vdi] = self.xen_volume_vdis(on_xen)
        self.assertEqual(str(2 * GiB), vdi['virtual_size'])
        self.detach(on_xen, volume['id'])
        self.assert_plain_volume(path, 2 * GiB)


class KVMHyperVXenBed(nova_cinder.LibvirtNFSMixin, HyperVXenBed):
    """The same, with a KVM compute on real libvirtd: moves."""

    uses_kvm = True

    def start_volume_computes(self):
        self.set_up_libvirt_nfs()
        self.libvirt_nfs_host_up(self.start_kvm())
        super().start_volume_computes()

    def assert_refused_running(self, server, volume, path, before, words):
        """A move to Hyper-V, then Xen, refused before power-off."""
        for host in (base.HYPERV, xen_bed.XEN):
            failed = len(self.failed_migrations(server))
            self.api.post_server_action(server['id'],
                                        {'migrate': {'host': host}})
            nova_base.wait_for(
                lambda: len(self.failed_migrations(server)) > failed, 60,
                what='the migration to %s in error' % host)
            server = self._wait_for_state_change(server, 'ACTIVE')
            self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
            self.assertNotIn('xhv_power_off', self.action_events(server))
            for word in words[host]:
                self.assertIn(word, self.stdlog.logger.output)
            self.assert_attached(server, volume, base.KVM)
            self.assertEqual('running', self.domain_state(server))
            self.assertEqual(before, disks.sha256_file(path))
        return server


class VolumesFollowHyperVXenKVMTestCase(KVMHyperVXenBed):

    def test_hyperv_attach_detach_and_the_volume_follows_to_kvm_and_back(self):
        image_id, _ = self.make_image('vhdx', name='hyperv-guest')
        server = self.boot_on(base.HYPERV, image_id)
        volume, path = self.data_volume()
        self.attach(server, volume['id'])
        self.assert_attached(server, volume, base.HYPERV)
        [drive] = self.hyperv_volume_drives(server)
        self.assertEqual(SCSI, drive['ControllerType'])
        vhd = path + hv_volumes.LINK_SUFFIX
        self.assertTrue(drive['Path'].endswith(
            '\\volume-%s%s' % (volume['id'], hv_volumes.LINK_SUFFIX)))
        # A fixed VHD of the volume's size: data, then the footer.
        self.assertEqual(GiB, base.qemu_img_info(vhd, 'vpc')['virtual-size'])
        self.assertEqual(GiB + 512, os.path.getsize(path))
        self.write_through(vhd, 3 * MiB, b'\x11')
        self.detach(server, volume['id'])
        self.assertEqual([], self.hyperv_volume_drives(server))
        self.assert_plain_volume(path)
        self.assert_written(path, 3 * MiB, b'\x11')
        self.attach(server, volume['id'])

        # Hyper-V -> KVM: the volume follows, its bytes as they were.
        self.assertEqual(GiB + 512, os.path.getsize(path))
        server = self._migrate_server(server, host=base.KVM)
        self.assertIn('xhv_detach_volumes', self.action_events(server))
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(kvm_path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual('raw', fmt)
        self.assertTrue(kvm_path.endswith('/volume-%s' % volume['id']))
        self.assert_plain_volume(path)
        on_kvm = disks.sha256_file(path)
        self._confirm_resize(server)
        self.assert_attached(server, volume, base.KVM)
        self.assertNotIn(server['id'], self.hyperv.vms())

        # KVM -> Hyper-V, revert first (nothing converted, attachment
        # given back), then for real.
        server = self._migrate_server(server, host=base.HYPERV)
        self.assertEqual(1, len(self.hyperv_volume_drives(server)))
        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assert_attached(server, volume, base.KVM)
        self.assertEqual(1, len(self.kvm_volume_disks(server)))
        self.assert_plain_volume(path)
        self.assertEqual(on_kvm, disks.sha256_file(path))
        server = self._migrate_server(server, host=base.HYPERV)
        self._confirm_resize(server)
        self.assert_attached(server, volume, base.HYPERV)
        self.assertEqual(1, len(self.hyperv_volume_drives(server)))
        self.assert_written(path, 3 * MiB, b'\x11')
        self._delete_server(server)
        self.cinder_services.wait_volume(volume['id'], 'available')
        self.assert_plain_volume(path)
        self.assertEqual(on_kvm, disks.sha256_file(path))

    def test_xen_attach_detach_and_the_volume_follows_to_kvm_and_back(self):
        image_id, _ = xen_bed.make_xen_image(self)
        server = self.boot_on(xen_bed.XEN, image_id)
        volume, path = self.data_volume()
        self.attach(server, volume['id'])
        self.assert_attached(server, volume, xen_bed.XEN)
        [vdi] = self.xen_volume_vdis(server)
        self.assertEqual(('volume-%s' % volume['id'], {'type': 'raw'},
                          str(GiB)), (vdi['location'], vdi['sm_config'],
                                      vdi['virtual_size']))
        sr_uuid = xen_volumes.sr_uuid_for('127.0.0.1',
                                          self.cinder_services.export)
        in_sr = os.path.join(self.cinder_services.export, sr_uuid,
                             'volume-%s.raw' % volume['id'])
        self.write_through(in_sr, 5 * MiB, b'\x22')
        self.detach(server, volume['id'])
        self.assertEqual([], self.xen_volume_vdis(server))
        self.assert_plain_volume(path)
        self.assert_written(path, 5 * MiB, b'\x22')
        self.attach(server, volume['id'])
        before = disks.sha256_file(path)

        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(kvm_path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual(('raw', True), (fmt, kvm_path.endswith(
            '/volume-%s' % volume['id'])))
        self._confirm_resize(server)
        self.assert_attached(server, volume, base.KVM)
        self.assert_plain_volume(path)
        self.assertEqual(before, disks.sha256_file(path))

        server = self._migrate_server(server, host=xen_bed.XEN)
        self._confirm_resize(server)
        self.assert_attached(server, volume, xen_bed.XEN)
        self.assertEqual(1, len(self.xen_volume_vdis(server)))
        self._delete_server(server)
        self.cinder_services.wait_volume(volume['id'], 'available')
        self.assert_plain_volume(path)
        self.assertEqual(before, disks.sha256_file(path))


class RefusedBeforePowerOffTestCase(KVMHyperVXenBed):
    """Hyper-V and Xen computes configured without the volumes' export."""

    map_volume_export = False

    def test_moves_that_cannot_carry_the_volume_are_refused_running(self):
        image_id, _ = self.make_kvm_image()
        # Two servers: the tiny guest never lets go of a volume while it
        # runs (no hot-unplug), and each check needs a running one.
        servers = [self.boot_on(base.KVM, image_id) for _ in range(2)]
        server, other = [self._wait_for_state_change(s, 'ACTIVE')
                         for s in servers]
        # A qcow2 volume: no Hyper-V or Xen host opens it (the source
        # knows from the families' facts).
        volume, path = self.data_volume('nfsqcow2')
        self.attach(server, volume['id'])
        self.assert_refused_running(
            server, volume, path, disks.sha256_file(path), {
                host: ['stored as qcow2, which the %s family does not '
                       'attach' % family]
                for host, family in ((base.HYPERV, 'hyperv'),
                                     (xen_bed.XEN, 'xen'))})

        # A raw volume the families attach, but these two computes have
        # no way to its export: each destination says so itself.
        server = other
        volume, path = self.data_volume()
        self.attach(server, volume['id'])
        export = '127.0.0.1:%s' % self.cinder_services.export
        refused = 'the destination %s cannot attach volume %s'
        self.assert_refused_running(
            server, volume, path, disks.sha256_file(path), {
                base.HYPERV: [
                    refused % (base.HYPERV, volume['id']),
                    'add %s=\\\\<smb host>\\<share> to [xhv_hyperv] '
                    'volume_shares' % export],
                xen_bed.XEN: [
                    refused % (xen_bed.XEN, volume['id']),
                    'add %s=/<its mount point> to [xhv_xenapi] '
                    'volume_exports' % export]})
        self.assert_plain_volume(path)


class BootFromVolumeTestCase(KVMHyperVXenBed):
    """Servers booted from a raw NFS volume on Hyper-V and Xen, and moved.

    The boot volume is the tiny bootable disk: KVM boots it (the marker on
    its console proves the bytes Hyper-V/Xen had are a bootable disk);
    the simulators run no guest, so there the proof is where the volume
    sits (the slot the generation boots from; the bootable device 0).
    """

    def assert_boot_volume_on_hyperv(self, server, boot, boot_path):
        [drive] = self.hyperv_volume_drives(server)
        vm = self.hyperv.vms()[server['id']]
        # Nothing of its own: the volume is its only disk.
        self.assertEqual([drive['Path']], [d['Path']
                                           for d in vm['HardDrives']])
        slot = (0, 0, 0) if vm['Generation'] == 1 else (SCSI, 0, 0)
        self.assertEqual(slot, (drive['ControllerType'],
                                drive['ControllerNumber'],
                                drive['ControllerLocation']))
        self.assertTrue(drive['Path'].endswith(
            '\\volume-%s%s' % (boot['id'], hv_volumes.LINK_SUFFIX)))
        self.assertEqual(GiB, base.qemu_img_info(
            boot_path + hv_volumes.LINK_SUFFIX, 'vpc')['virtual-size'])
        self.assertEqual(hv_model.VM_RUNNING, vm['State'])
        self.assert_attached(server, boot, base.HYPERV)

    def assert_boot_volume_on_xen(self, server, boot):
        x, [vm] = xen_bed._records(self, server)
        vbds = [x.VBD.get_record(v) for v in vm['VBDs']]
        [vbd] = [v for v in vbds if v['type'] == 'Disk']
        self.assertEqual(('0', True, 'volume-%s' % boot['id']),
                         (vbd['userdevice'], vbd['bootable'],
                          vbd['other_config'][xen_volumes.VOLUME_KEY]))
        vdi = x.VDI.get_record(vbd['VDI'])
        self.assertEqual(({'type': 'raw'}, str(GiB)),
                         (vdi['sm_config'], vdi['virtual_size']))
        self.assertEqual('Running', vm['power_state'])
        self.assert_attached(server, boot, xen_bed.XEN)

    def _boot_moves(self, host, assert_on_family):
        cinder = self.cinder_services
        boot, extents = self.bootable_volume()
        boot_path = cinder.volume_file(boot['id'])
        before = disks.sha256_file(boot_path)
        server = self.boot_volume(boot['id'], host=host)
        assert_on_family(server)

        # Out to KVM, reverted: the original boots from it again.
        server = self._migrate_server(server, host=base.KVM)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        [(kvm_path, fmt)] = self.kvm_volume_disks(server)
        self.assertEqual(('raw', True), (fmt, kvm_path.endswith(
            '/volume-%s' % boot['id'])))
        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(host, server['OS-EXT-SRV-ATTR:host'])
        assert_on_family(server)
        self.assertFalse(nova_base.LibvirtFunctionalTestCase
                         .hypervisor_guest_exists(self, server))

        # To KVM for real, and back again.
        server = self._migrate_server(server, host=base.KVM)
        self._confirm_resize(server)
        self.assert_attached(server, boot, base.KVM)
        self.assert_plain_volume(boot_path)
        self.assertEqual(before, disks.sha256_file(boot_path))
        server = self._migrate_server(server, host=host)
        self._confirm_resize(server)
        assert_on_family(server)

        # Deleted: the volume is the raw file it was.
        self._delete_server(server)
        cinder.wait_volume(boot['id'], 'available')
        self.assert_plain_volume(boot_path)
        self.assertTrue(disks.check_extents(boot_path, extents))
        self.assertEqual(before, disks.sha256_file(boot_path))

    def test_hyperv_boots_from_a_volume_that_follows_to_kvm_and_back(self):
        self._boot_moves(base.HYPERV, lambda server: (
            self.assert_boot_volume_on_hyperv(
                server, *self._boot_of(server))))

    def test_xen_boots_from_a_volume_that_follows_to_kvm_and_back(self):
        self._boot_moves(xen_bed.XEN, lambda server: (
            self.assert_boot_volume_on_xen(server,
                                           self._boot_of(server)[0])))

    def _boot_of(self, server):
        [volume_id] = self.server_volumes(server)
        volume = self.cinder_services.volume(volume_id)
        return volume, self.cinder_services.volume_file(volume_id)
