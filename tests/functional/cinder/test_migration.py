"""Retype between backends storing different formats, guest data compared."""

import os
import shutil

from cinder.db import api as db

from tests.functional.cinder import base


class RetypeTest(base.XHVCinderTestCase):

    def _volume_with_guest_data(self, backend='nfsraw', seed=11):
        vol = self.create_available(backend)
        raw, _image, _extents = base.make_guest_image(self.root, 'raw',
                                                      seed=seed)
        path = self.volume_file(vol)
        with open(raw, 'rb') as src, open(path, 'r+b') as dst:
            dst.write(src.read())
        return vol, raw

    def _retype(self, vol, backend, ctxt=None):
        ctxt = ctxt or self.ctxt
        self.volume_api.retype(ctxt, self.get_volume(vol.id, ctxt),
                               self.types[backend].id,
                               migration_policy='on-demand')

    def _wait_moved(self, vol, backend):
        def moved():
            current = self.get_volume(vol.id)
            if current.migration_status == 'error':
                message = 'migration of %s failed' % vol.id
                raise AssertionError(message)
            return (current if current.migration_status == 'success' and
                    current.status == 'available' and
                    base.volume_backend(current) == backend else None)
        return base.wait_for(moved, 'volume %s on %s' % (vol.id, backend))

    def _wait_refused(self, vol):
        return base.wait_for(
            lambda: (self.get_volume(vol.id).migration_status == 'error' and
                     self.get_volume(vol.id).status == 'available'),
            'migration of %s to be refused' % vol.id)

    def _export_files(self, backend):
        export = self.shares.exports[base.BACKENDS[backend]['share']]
        return sorted(f for f in os.listdir(export) if f.startswith('vol'))

    def test_retype_raw_to_qcow2_and_back(self):
        vol, raw = self._volume_with_guest_data('nfsraw')
        self._retype(vol, 'nfsqcow2')
        moved = self._wait_moved(vol, 'nfsqcow2')
        path = self.volume_file(moved)
        self.assertEqual('qcow2', base.qemu_img_info(path)['format'])
        self.assertEqual(base.GiB,
                         base.qemu_img_info(path, 'qcow2')['virtual-size'])
        self.assertTrue(base.same_guest_data(raw, 'raw', path, 'qcow2'))
        admin = self.admin_metadata(moved)
        self.assertEqual('qcow2', admin['xhv_format'])
        self.assertEqual('qcow2', admin['format'])
        self.assertEqual('qcow2', moved.metadata['xhv_format'])
        self.assertEqual(self.types['nfsqcow2'].id, moved.volume_type_id)
        # The source's file is gone from the raw share (async delete).
        base.wait_for(lambda: not self._export_files('nfsraw'),
                      'the source file to be deleted')
        # No staging file is left behind.
        base.wait_for(lambda: not os.listdir(
            os.path.join(self.root, 'convert')), 'staging files removed')

        # The connection Nova would get names the true format.
        conn = self.driver('nfsqcow2').initialize_connection(
            self.get_volume(vol.id), {'host': 'h', 'ip': '127.0.0.1'})
        self.assertEqual('qcow2', conn['data']['format'])

        self._retype(vol, 'nfsraw')
        back = self._wait_moved(vol, 'nfsraw')
        back_path = self.volume_file(back)
        self.assertEqual('raw', base.qemu_img_info(back_path)['format'])
        self.assertEqual(base.GiB, os.path.getsize(back_path))
        self.assertTrue(base.same_guest_data(raw, 'raw', back_path, 'raw'))
        self.assertEqual('raw', self.admin_metadata(back)['xhv_format'])
        self.assertEqual('raw', self.admin_metadata(back)['format'])

    def test_admin_retype_qcow2_to_raw(self):
        # An admin context makes the manager swap admin metadata between
        # the two records: the records must come out right that way too.
        vol = self.create_available('nfsqcow2')
        raw, _image, _ext = base.make_guest_image(self.root, 'raw', seed=14)
        path = self.volume_file(vol)
        staged = path + '.guest'
        base.subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O',
                             'qcow2', raw, staged], check=True)
        base.subprocess.run(['qemu-img', 'resize', '-f', 'qcow2', staged,
                             '1G'], check=True, capture_output=True)
        os.replace(staged, path)
        self._retype(vol, 'nfsraw', ctxt=self.admin)
        moved = self._wait_moved(vol, 'nfsraw')
        moved_path = self.volume_file(moved)
        self.assertEqual('raw', base.qemu_img_info(moved_path)['format'])
        self.assertTrue(base.same_guest_data(raw, 'raw', moved_path, 'raw'))
        admin = self.admin_metadata(moved)
        self.assertEqual('raw', admin['xhv_format'])
        self.assertEqual('raw', admin['format'])
        self.assertEqual('raw', moved.metadata['xhv_format'])

    def test_unknown_format_refused(self):
        vol, raw = self._volume_with_guest_data('nfsraw', seed=12)
        path = self.volume_file(vol)
        before = base.qemu_img_info(path, 'raw')
        for key in ('xhv_format', 'format'):
            db.volume_admin_metadata_delete(self.admin, vol.id, key)
        self._retype(vol, 'nfsqcow2')
        self._wait_refused(vol)
        current = self.get_volume(vol.id)
        self.assertEqual('nfsraw', base.volume_backend(current))
        self.assertEqual(self.types['nfsraw'].id, current.volume_type_id)
        self.assertTrue(base.same_guest_data(raw, 'raw', path, 'raw'))
        self.assertEqual(before, base.qemu_img_info(path, 'raw'))
        # The temporary destination volume was removed again.
        base.wait_for(lambda: not self._export_files('nfsqcow2'),
                      'the destination volume to be cleaned up')

    def test_multiattach_never_converted(self):
        vol, raw = self._volume_with_guest_data('nfsraw', seed=13)
        db.volume_update(self.admin, vol.id, {'multiattach': True})
        path = self.volume_file(vol)
        snapshot_of_file = path + '.before'
        shutil.copyfile(path, snapshot_of_file)
        self._retype(vol, 'nfsqcow2')
        self._wait_refused(vol)
        self.assertEqual('nfsraw',
                         base.volume_backend(self.get_volume(vol.id)))
        self.assertTrue(base.same_guest_data(snapshot_of_file, 'raw', path,
                                             'raw'))
        base.wait_for(lambda: not self._export_files('nfsqcow2'),
                      'the destination volume to be cleaned up')
