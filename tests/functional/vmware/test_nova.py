"""Nova's functional harness with a compute on xhv.XHVDriver + the vmware
backend, against a real vcsim (patched build) per test.

vcsim runs no guest code, so "booted" means: the API says ACTIVE and
vcsim holds a powered-on VM whose instanceUuid is the server's id, whose
disk on the datastore carries the image's guest data.
"""

import os
import shutil
import ssl
import struct
import tempfile

from pyVim import connect
from pyVmomi import vim
from pyVmomi import vmodl

from nova_xhv import translate
from nova_xhv.translate import vmdk_writer
from tests.fixtures import disks
from tests.fixtures.vcsim import VcsimServer
from tests.functional import nova_base


class VMwareFunctionalTestCase(nova_base.XHVFunctionalTestCase):
    """Computes run XHV's vmware backend against this test's vcsim."""

    xhv_backend = 'vmware'

    def set_up_backend(self):
        self.vcsim_server = VcsimServer()
        self.vcsim = self.vcsim_server.start()
        self.addCleanup(self.vcsim_server.stop)
        self.workdir = tempfile.mkdtemp(prefix='xhv-vmware-test-')
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)
        for name, value in dict(
                host=self.vcsim.host, port=self.vcsim.port,
                username=self.vcsim.username, password=self.vcsim.password,
                ca_file=self.vcsim.ca_file, cluster_name=self.vcsim.cluster,
                staging_dir=os.path.join(self.workdir, 'staging')).items():
            self.flags(group='xhv_vmware', **{name: value})
        self.si = connect.SmartConnect(
            host=self.vcsim.host, port=self.vcsim.port,
            user=self.vcsim.username, pwd=self.vcsim.password,
            sslContext=ssl.create_default_context(cafile=self.vcsim.ca_file))
        self.addCleanup(connect.Disconnect, self.si)
        # Nova's Glance fixture drops the bytes of image updates; keep them
        # like Glance does, so a snapshot's data can be checked.
        real_update = self.glance.update

        def update(context, image_id, metadata, data=None, **kwargs):
            if data is not None:
                self.glance._imagedata[image_id] = data.read()
            return real_update(context, image_id, metadata, **kwargs)

        self.glance.update = update

    def hypervisor_guest_exists(self, server):
        return self.vm_of(server) is not None

    def vm_of(self, server):
        return self.si.content.searchIndex.FindByUuid(None, server['id'],
                                                      True, True)

    def vm_snapshots(self, server):
        # Through the PropertyCollector: vcsim 0.24's Fetch (what
        # ``vm.snapshot`` uses) panics on a property that is unset.
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=self.vm_of(server))],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                     pathSet=['snapshot'])])
        result = self.si.content.propertyCollector.RetrievePropertiesEx(
            [spec], pc.RetrieveOptions())
        info = [p.val for p in result.objects[0].propSet]
        return [t.name for i in info for t in i.rootSnapshotList]

    def power_state(self, server):
        return self.vm_of(server).runtime.powerState

    def vm_folder(self, server):
        return os.path.join(self.vcsim.datastore_dir(), server['id'])

    def guest_disk_file(self, server):
        return os.path.join(self.vm_folder(server), server['id'] + '.vmdk')

    def make_image(self, disk_format, properties=None, name='guest',
                   make_disk=None):
        """A test disk (default: the tiny bootable one) as a Glance image.

        :returns: (image id, path of the raw disk it was made from)
        """
        raw = os.path.join(self.workdir, name + '.raw')
        if make_disk is None:
            disks.make_bootable_disk(raw, virtual_size=8 * disks.MiB)
        else:
            make_disk(raw)
        image_file = os.path.join(self.workdir, '%s.%s' % (name,
                                                           disk_format))
        if disk_format == 'vmdk':
            translate.convert(raw, image_file, to_format='vmdk',
                              from_format='raw',
                              subformat=(properties or {}).get(
                                  'vmware_disktype', 'streamOptimized'))
        else:
            translate.convert(raw, image_file, to_format=disk_format,
                              from_format='raw')
        with open(image_file, 'rb') as data:
            image = self.glance.create(self.ctxt, {
                'name': 'xhv-%s' % disk_format, 'disk_format': disk_format,
                'container_format': 'bare', 'status': 'active',
                'size': os.path.getsize(image_file),
                'properties': dict(properties or {})}, data=data)
        return image['id'], raw

    def boot(self, image_id):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1)
        return self._create_server(image_uuid=image_id, flavor_id=flavor,
                                   networks='none')


class TestVMwareLifecycle(VMwareFunctionalTestCase):

    def test_vmdk_boot_stop_start_reboot_snapshot_delete(self):
        self.start_compute('vmw1')
        image_id, raw = self.make_image(
            'vmdk', {'vmware_disktype': 'streamOptimized',
                     'vmware_adaptertype': 'paraVirtual'})
        server = self.boot(image_id)
        self.assertEqual('vmw1', server['OS-EXT-SRV-ATTR:host'])

        vm = self.vm_of(server)
        self.assertIsNotNone(vm)
        self.assertEqual('poweredOn', vm.runtime.powerState)
        self.assertEqual(256, vm.config.hardware.memoryMB)
        # The root disk grew to the flavor's root_gb (1 GiB).
        disk = [d for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk)]
        self.assertEqual([1024 * 1024], [d.capacityInKB for d in disk])
        self.assertIn(server['id'], vm.config.annotation)
        self.assertEqual(['ParaVirtualSCSIController'], [
            type(d).__name__.rsplit('.', 1)[-1]
            for d in vm.config.hardware.device
            if 'SCSIController' in type(d).__name__])
        self.assertTrue(translate.compare(self.guest_disk_file(server),
                                          'vmdk', raw, 'raw'))
        # The compute node reports vSphere's resources and type.
        node = self.compute_node('vmw1')
        self.assertEqual('VMware vCenter Server', node['hypervisor_type'])

        server = self._stop_server(server)
        self.assertEqual('poweredOff', self.power_state(server))
        server = self._start_server(server)
        self.assertEqual('poweredOn', self.power_state(server))
        server = self._reboot_server(server, hard=True)
        self.assertEqual('poweredOn', self.power_state(server))

        self._snapshot_server(server, 'xhv-snap')
        snapshot = nova_base.wait_for(
            lambda: [i for i in self.glance.detail(self.ctxt)
                     if i['name'] == 'xhv-snap'
                     and i['id'] in self.glance._imagedata], 60,
            what='the snapshot image and its data')[0]
        self.assertEqual('vmdk', snapshot['disk_format'])
        self.assertEqual('streamOptimized',
                         snapshot['properties']['vmware_disktype'])
        self.assertEqual('paraVirtual',
                         snapshot['properties']['vmware_adaptertype'])
        snap_file = os.path.join(self.workdir, 'snapshot.vmdk')
        with open(snap_file, 'wb') as f:
            f.write(self.glance._imagedata[snapshot['id']])
        self.assertTrue(translate.compare(snap_file, 'vmdk', raw, 'raw'))
        # The VM snapshot taken for a consistent copy is gone again.
        self.assertEqual([], self.vm_snapshots(server))
        self._wait_for_state_change(server, 'ACTIVE')

        folder = self.vm_folder(server)
        self.assertTrue(os.listdir(folder))
        self._delete_server(server)
        self.assert_guest_gone(server)
        self.assertFalse(os.path.exists(folder))

    def test_qcow2_image_is_translated_to_stream_optimized(self):
        self.start_compute('vmw1')
        image_id, raw = self.make_image('qcow2')
        server = self.boot(image_id)
        disk_file = self.guest_disk_file(server)
        info = translate.inspect_image(disk_file, claimed_format='vmdk')
        self.assertEqual('streamOptimized', info.subformat)
        self.assertTrue(translate.compare(disk_file, 'vmdk', raw, 'raw'))
        # XHV's own stream writer wrote what vSphere imported: its header
        # leaves the grain directory to the footer (qemu-img's does not).
        with open(disk_file, 'rb') as f:
            header = f.read(512)
        self.assertEqual(b'KDMV', header[:4])
        self.assertEqual(vmdk_writer.GD_AT_END,
                         struct.unpack_from('<Q', header, 56)[0])
        # No image property: the default adapter (LSI Logic).
        self.assertEqual(['VirtualLsiLogicController'], [
            type(d).__name__.rsplit('.', 1)[-1]
            for d in self.vm_of(server).config.hardware.device
            if 'Controller' in type(d).__name__
            and 'LsiLogic' in type(d).__name__])
        self._delete_server(server)
        self.assert_guest_gone(server)
        self.assertFalse(os.path.exists(self.vm_folder(server)))

    def test_monolithic_sparse_vmdk_on_ide(self):
        self.start_compute('vmw1')
        image_id, raw = self.make_image(
            'vmdk', {'vmware_disktype': 'monolithicSparse',
                     'vmware_adaptertype': 'ide'})
        server = self.boot(image_id)
        disk_file = self.guest_disk_file(server)
        info = translate.inspect_image(disk_file, claimed_format='vmdk')
        self.assertEqual('streamOptimized', info.subformat)
        self.assertTrue(translate.compare(disk_file, 'vmdk', raw, 'raw'))
        devices = self.vm_of(server).config.hardware.device
        disk = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
        controller = [d for d in devices if d.key == disk[0].controllerKey]
        self.assertIsInstance(controller[0],
                              vim.vm.device.VirtualIDEController)
        self._delete_server(server)
        self.assert_guest_gone(server)
