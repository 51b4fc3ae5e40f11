"""Create, snapshot, clone, extend and delete through the XHV wrapper."""

import os

from cinder import objects
from cinder.volume import volume_types

from tests.functional.cinder import base


class LifecycleTest(base.XHVCinderTestCase):

    def _wait_snapshot(self, snapshot_id, status='available'):
        def ready():
            snap = objects.Snapshot.get_by_id(self.admin, snapshot_id)
            if snap.status == 'error':
                message = 'snapshot %s failed' % snapshot_id
                raise AssertionError(message)
            return snap if snap.status == status else None
        return base.wait_for(ready, 'snapshot %s' % snapshot_id)

    def test_volume_lifecycle_in_both_formats(self):
        for backend, fmt in (('nfsraw', 'raw'), ('nfsqcow2', 'qcow2')):
            vol = self.create_available(backend)
            path = self.volume_file(vol)
            self.assertEqual(fmt, base.qemu_img_info(path)['format'])
            self.assertEqual(base.GiB, base.qemu_img_info(
                path, fmt)['virtual-size'])
            self.assertEqual(fmt, self.admin_metadata(vol)['xhv_format'])
            self.assertEqual(fmt, self.get_volume(vol.id).metadata[
                'xhv_format'])

            # Guest data written before the snapshot must reach the clone.
            raw, _image, extents = base.make_guest_image(self.root, 'raw')
            if fmt == 'raw':
                with open(raw, 'rb') as src, open(path, 'r+b') as dst:
                    dst.write(src.read())
            else:
                os.unlink(path)
                base.subprocess.run(
                    ['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw,
                     path], check=True)
                base.subprocess.run(['qemu-img', 'resize', '-f', 'qcow2',
                                     path, '1G'], check=True)

            snapshot = self.volume_api.create_snapshot(
                self.ctxt, self.get_volume(vol.id, self.ctxt), 'snap', None)
            snapshot = self._wait_snapshot(snapshot.id)
            # With a snapshot the data is an overlay chain: XHV refuses to
            # upload it rather than upload the stale base file.
            self.volume_api.copy_volume_to_image(
                self.ctxt, self.get_volume(vol.id, self.ctxt),
                {'name': 'chain', 'disk_format': 'vmdk',
                 'container_format': 'bare'}, False)
            self.wait_logged('XHV does not convert snapshot chains')
            self.wait_volume(vol.id)
            from_snap = self.volume_api.create(
                self.ctxt, 1, 'from-snap', None, snapshot=snapshot,
                volume_type=self.types[backend])
            from_snap = self.wait_volume(from_snap.id)
            snap_path = self.volume_file(from_snap)
            self.assertEqual(fmt, base.qemu_img_info(snap_path)['format'])
            self.assertTrue(base.same_guest_data(raw, 'raw', snap_path, fmt))
            self.assertEqual(fmt,
                             self.admin_metadata(from_snap)['xhv_format'])

            clone = self.volume_api.create(
                self.ctxt, 1, 'clone', None,
                source_volume=self.get_volume(from_snap.id, self.ctxt),
                volume_type=self.types[backend])
            clone = self.wait_volume(clone.id)
            clone_path = self.volume_file(clone)
            self.assertTrue(base.same_guest_data(raw, 'raw', clone_path,
                                                 fmt))
            self.assertEqual(fmt, self.admin_metadata(clone)['xhv_format'])

            self.volume_api.extend(self.ctxt,
                                   self.get_volume(clone.id, self.ctxt), 2)
            base.wait_for(lambda: self.get_volume(clone.id).size == 2 and
                          self.get_volume(clone.id).status == 'available',
                          'extend to 2 GiB')
            self.assertEqual(2 * base.GiB, base.qemu_img_info(
                clone_path, fmt)['virtual-size'])
            self.assertTrue(base.same_guest_data(raw, 'raw', clone_path,
                                                 fmt))

            for volume in (clone, from_snap):
                self.volume_api.delete(self.ctxt,
                                       self.get_volume(volume.id, self.ctxt))
            self.volume_api.delete_snapshot(
                self.ctxt, objects.Snapshot.get_by_id(self.ctxt, snapshot.id))
            base.wait_for(lambda: not os.path.exists(clone_path) and
                          not os.path.exists(snap_path),
                          'deleted volumes\' files to disappear')
            base.wait_for(
                lambda: objects.SnapshotList.get_all_for_volume(
                    self.admin, vol.id).objects == [],
                'snapshot deletion')
            self.volume_api.delete(self.ctxt,
                                   self.get_volume(vol.id, self.ctxt))
            base.wait_for(lambda: not os.path.exists(path),
                          'volume file %s to disappear' % path)


class SchedulingTest(base.XHVCinderTestCase):

    def test_scheduler_picks_backend_by_xhv_capabilities(self):
        states = self.scheduler.manager.driver.host_manager.service_states
        raw_caps = states['%s@nfsraw' % base.HOST]
        self.assertEqual('raw', raw_caps['xhv_volume_format'])
        self.assertEqual(['hyperv', 'kvm', 'vmware', 'xen'],
                         raw_caps['xhv_attach_families'])
        self.assertEqual(['kvm'], states['%s@nfsqcow2' % base.HOST][
            'xhv_attach_families'])
        self.assertEqual('qcow2', states['%s@nfsqcow2' % base.HOST][
            'xhv_volume_format'])
        vtype = volume_types.create(
            self.admin, 'qcow2-for-kvm',
            {'capabilities:xhv_volume_format': 'qcow2',
             'capabilities:xhv_attach_families': '<in> kvm'})
        vtype = objects.VolumeType.get_by_id(self.admin, vtype['id'])
        vol = self.volume_api.create(self.ctxt, 1, 'by-caps', None,
                                     volume_type=vtype)
        vol = self.wait_volume(vol.id)
        self.assertEqual('nfsqcow2', base.volume_backend(vol))
        # vSphere opens only raw files: asking for qcow2 ones fails.
        vmware = volume_types.create(
            self.admin, 'for-vmware',
            {'capabilities:xhv_volume_format': 'qcow2',
             'capabilities:xhv_attach_families': '<in> vmware'})
        vmware = objects.VolumeType.get_by_id(self.admin, vmware['id'])
        vol = self.volume_api.create(self.ctxt, 1, 'nowhere', None,
                                     volume_type=vmware)
        self.wait_volume(vol.id, status='error')
        self.assertIsNone(self.get_volume(vol.id).host)
