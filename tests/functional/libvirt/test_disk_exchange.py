"""Export the disks of a stopped KVM server and import them as a new one.

The import runs on real libvirtd after the server's image was deleted from
Glance: it must download nothing and leave the image cache (_base) alone.
"""

import copy
import json
import os
import stat
import subprocess

from nova.compute import power_state
from nova.compute import vm_states
from nova import context as nova_context
from nova.network import model as network_model
from nova import objects
from oslo_utils import uuidutils

from nova_xhv.backends.libvirt import backend as libvirt_backend
from nova_xhv import disk as xhv_disk
from tests.fixtures import disks
from tests.functional.libvirt import test_lifecycle
from tests.functional import nova_base


def qemu_img_info(path, fmt):
    out = subprocess.run(('qemu-img', 'info', '--output=json', '-U', '-f',
                          fmt, path), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


class TestDiskExchange(nova_base.LibvirtFunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.cell_ctxt = copy.copy(self.ctxt)
        nova_context.set_target_cell(self.cell_ctxt,
                                     self.cell_mappings['cell1'])

    def _start_host1(self):
        self.start_compute('host1')
        self.backend = self.computes['host1'].manager.driver.backend

    def _hide_image_cache(self):
        """Make _base look like a host that never saw the image."""
        hidden = self.base_path + '.hidden'
        os.rename(self.base_path, hidden)
        return lambda: os.rename(hidden, self.base_path)

    def _import_and_check(self, source, exported):
        """Import as a new instance with the image gone; check it boots."""
        downloads = self._record_glance_downloads()
        restore_base = self._hide_image_cache()
        target = self._new_instance_like(source)
        self.addCleanup(self._destroy, target)
        staged = self.backend.import_disks(
            self.cell_ctxt, target, exported, network_model.NetworkInfo([]),
            objects.ImageMeta.from_instance(source))

        target_disk = os.path.join(self.instance_dir(target.uuid), 'disk')
        self.assertEqual([target_disk], [d.path for d in staged])
        self.assertEqual(power_state.RUNNING,
                         self.backend.get_info(target).state)
        nova_base.wait_for(
            lambda: disks.BOOT_MARKER in self.backend.get_console_output(
                self.cell_ctxt, target), 30, what='imported guest marker')
        self.assertEqual([], downloads)
        self.assertFalse(os.path.exists(self.base_path))
        restore_base()
        self.assertNotIn('backing-filename',
                         qemu_img_info(target_disk, 'qcow2'))
        xml = nova_base.virsh('dumpxml', target.uuid)
        self.assertNotIn('_base', xml)
        self.assertIn("type='qcow2'", xml)
        self.assertEqual(0o644, stat.S_IMODE(os.stat(target_disk).st_mode))
        with open(os.path.join(self.instance_dir(target.uuid),
                               'disk.info')) as disk_info:
            self.assertEqual({target_disk: 'qcow2'}, json.load(disk_info))
        return target

    def _record_glance_downloads(self):
        calls = []
        real_download = self.glance.download

        def download(*args, **kwargs):
            calls.append(args)
            return real_download(*args, **kwargs)

        self.glance.download = download
        self.addCleanup(setattr, self.glance, 'download', real_download)
        return calls

    def _new_instance_like(self, source):
        """A new instance record on host1 with the source's flavor."""
        target = objects.Instance(
            context=self.cell_ctxt, uuid=uuidutils.generate_uuid(),
            user_id=source.user_id, project_id=source.project_id,
            display_name='imported', host=source.host, node=source.node,
            compute_id=source.compute_id,
            image_ref=source.image_ref, flavor=source.flavor,
            instance_type_id=source.flavor.id,
            memory_mb=source.memory_mb, vcpus=source.vcpus,
            root_gb=source.root_gb, ephemeral_gb=source.ephemeral_gb,
            kernel_id='', ramdisk_id='', root_device_name='/dev/vda',
            system_metadata=dict(source.system_metadata),
            vm_state=vm_states.BUILDING, power_state=power_state.NOSTATE)
        target.create()
        return target

    def test_export_stopped_then_import_as_new_instance(self):
        self._start_host1()
        image_id = test_lifecycle.upload_bootable_image(self, 'qcow2')
        server = self._create_server(image_uuid=image_id, networks='none')
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        source = objects.Instance.get_by_uuid(
            self.cell_ctxt, server['id'],
            expected_attrs=['flavor', 'system_metadata'])
        source_disk = os.path.join(self.instance_dir(server), 'disk')

        # A running guest is refused, with what to do.
        error = self.assertRaises(libvirt_backend.DiskExchangeError,
                                  self.backend.export_disks, self.cell_ctxt,
                                  source)
        self.assertIn('stop it first', str(error))

        self._stop_server(server)
        exported = self.backend.export_disks(self.cell_ctxt, source)
        self.assertEqual(1, len(exported))
        export = exported[0]
        self.assertEqual(('qcow2', 0, 'disk', 'vda', 'virtio'),
                         (export.format, export.boot_index, export.handle,
                          export.device_name, export.bus))
        # The live disk is an overlay on _base; the export is a private,
        # self-contained copy that names no _base file.
        self.assertIn('_base',
                      qemu_img_info(source_disk, 'qcow2')['backing-filename'])
        info = qemu_img_info(export.path, 'qcow2')
        self.assertNotIn('backing-filename', info)
        self.assertEqual(1024 ** 3, export.virtual_size)
        self.assertEqual(info['virtual-size'], export.virtual_size)
        self.assertEqual(0o600, stat.S_IMODE(os.stat(export.path).st_mode))
        self.assertEqual(0o700, stat.S_IMODE(
            os.stat(os.path.dirname(export.path)).st_mode))
        subprocess.run(('qemu-img', 'compare', '-U', '-f', 'qcow2', '-F',
                        'qcow2', source_disk, export.path), check=True,
                       capture_output=True)

        # The original image goes away before the import, and this host's
        # image cache looks like one that never saw it (the stock driver
        # would download the image into _base again, and fail).
        self.glance.delete(self.ctxt, image_id)
        target = self._import_and_check(source, exported)
        self.backend.release_exported_disks(self.cell_ctxt, source, exported)
        self.assertFalse(os.path.exists(os.path.dirname(export.path)))

        # The source is untouched and still boots.
        self._start_server(server)
        self.wait_for_console_marker(server, disks.BOOT_MARKER)

        self._destroy(target)
        self.assertFalse(self.hypervisor_guest_exists({'id': target.uuid}))
        self.assertFalse(os.path.exists(self.instance_dir(target.uuid)))
        self._delete_server(server)
        self.assert_guest_gone(server)

    def test_raw_layout_exports_in_place_and_imports_qcow2(self):
        # [DEFAULT] use_cow_images = False: raw instance disks, no overlay.
        self.flags(use_cow_images=False)
        self._start_host1()
        image_id = test_lifecycle.upload_bootable_image(self, 'raw')
        server = self._create_server(image_uuid=image_id, networks='none')
        self._stop_server(server)
        source = objects.Instance.get_by_uuid(
            self.cell_ctxt, server['id'],
            expected_attrs=['flavor', 'system_metadata'])
        live_disk = os.path.join(self.instance_dir(server), 'disk')

        [export] = self.backend.export_disks(self.cell_ctxt, source)
        # Self-contained already: described in place, nothing copied.
        self.assertEqual((live_disk, 'raw'), (export.path, export.format))
        self.assertFalse(os.path.exists(os.path.join(
            self.instance_dir(server), libvirt_backend.EXPORT_DIR)))
        # The caller translates to KVM's native qcow2 (here with qemu-img).
        translated = os.path.join(self.instances_path, 'translated.qcow2')
        subprocess.run(('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        export.path, translated), check=True)
        incoming = xhv_disk.DiskDescriptor(
            format='qcow2', virtual_size=export.virtual_size,
            path=translated, bus=export.bus, boot_index=0)
        self.backend.release_exported_disks(self.cell_ctxt, source, [export])
        self.assertTrue(os.path.exists(live_disk))

        self.glance.delete(self.ctxt, image_id)
        # The raw image backend must take the imported file for qcow2
        # (disk.info), never for raw: _import_and_check reads the XML.
        target = self._import_and_check(source, [incoming])
        self._destroy(target)
        self._delete_server(server)
        self.assert_guest_gone(server)

    def _destroy(self, instance):
        if self.hypervisor_guest_exists({'id': instance.uuid}):
            self.backend.destroy(self.cell_ctxt, instance,
                                 network_model.NetworkInfo([]))
