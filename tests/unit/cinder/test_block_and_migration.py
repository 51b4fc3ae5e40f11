"""XHV's image and migration logic with a block-device inner driver.

The block path (LVM, iSCSI, ...) needs a kernel this machine lacks, so the
inner driver here hands out a regular file as its attached "device"; the
translation engine, qemu-img and Cinder's dd copy are real.
"""

# Cinder's test base applies Cinder's eventlet monkey patching first.
from tests.unit.cinder import cinder_test as test  # noqa: I202

import os
import subprocess
from unittest import mock

import fixtures

from cinder import context
from cinder.db import api as db
from cinder import exception
from cinder.tests.unit import utils as test_utils

from cinder_xhv import images
from cinder_xhv import migration
from cinder_xhv import volume_format
from tests.fixtures import disks

GiB = 1024 ** 3
MiB = 1024 ** 2


class _BlockInner(object):
    """Just what XHV uses of a block driver: attach and detach."""

    def __init__(self, device):
        self.device = device
        self.detached = 0
        self.configuration = mock.Mock(volume_dd_blocksize='1M',
                                       use_multipath_for_image_xfer=False,
                                       enforce_multipath_for_image_xfer=False)

    def _attach_volume(self, context, volume, properties, remote=False):
        return {'device': {'path': self.device}}, volume

    def _detach_volume(self, context, attach_info, volume, properties,
                       force=False, remote=False, ignore_errors=False):
        self.detached += 1


class _Images(object):
    """The few image-service calls XHV makes, on local files."""

    def __init__(self, root):
        self.root = root
        self.meta = {}

    def add(self, path, disk_format):
        image_id = 'img-%d' % len(self.meta)
        self.meta[image_id] = {'id': image_id, 'disk_format': disk_format,
                               'container_format': 'bare',
                               'size': os.path.getsize(path),
                               'properties': {}}
        os.link(path, os.path.join(self.root, image_id))
        return image_id

    def show(self, context, image_id):
        return dict(self.meta[image_id])

    def download(self, context, image_id, data):
        with open(os.path.join(self.root, image_id), 'rb') as f:
            data.write(f.read())

    def update(self, context, image_id, meta, data=None, purge_props=True,
               store_id=None, base_image_ref=None):
        self.meta[image_id]['properties'].update(meta.get('properties', {}))
        if data is not None:
            with open(os.path.join(self.root, image_id), 'wb') as f:
                f.write(data.read())


class BlockPathTest(test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.flags(image_conversion_dir=os.path.join(self.root, 'convert'),
                   verify_glance_signatures='disabled')
        self.patch('cinder.volume.volume_utils.'
                   'brick_get_connector_properties', return_value={})
        self.ctxt = context.get_admin_context()
        self.device = os.path.join(self.root, 'device')
        with open(self.device, 'wb') as f:
            f.truncate(GiB)
        self.inner = _BlockInner(self.device)
        self.images = _Images(self.root)
        self.raw = os.path.join(self.root, 'guest.raw')
        disks.make_raw_disk(self.raw, 8 * MiB, seed=21, bootable=True)

    def _volume(self, fmt='raw'):
        return test_utils.create_volume(
            self.ctxt, size=1, admin_metadata={'xhv_format': fmt},
            volume_type_id=self.vt['id'])

    def _same(self, a, fa, b, fb):
        return subprocess.run(['qemu-img', 'compare', '-f', fa, '-F', fb, a,
                               b], capture_output=True).returncode == 0

    def test_image_written_onto_block_device(self):
        qcow2 = os.path.join(self.root, 'guest.qcow2')
        subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', self.raw,
                        qcow2], check=True)
        image_id = self.images.add(qcow2, 'qcow2')
        volume = self._volume()
        with images.fetched_image(self.ctxt, self.images, image_id,
                                  GiB) as info:
            images.write_into_volume(self.inner, self.ctxt, volume, info,
                                     'raw')
        self.assertTrue(self._same(self.raw, 'raw', self.device, 'raw'))
        self.assertEqual(GiB, os.path.getsize(self.device))
        self.assertEqual(1, self.inner.detached)
        self.assertEqual([], os.listdir(os.path.join(self.root, 'convert')))

    def test_block_volume_uploaded_as_streamoptimized_vmdk(self):
        with open(self.raw, 'rb') as src, open(self.device, 'r+b') as dst:
            dst.write(src.read())
        image_id = self.images.add(self.raw, 'vmdk')
        volume = self._volume()
        images.upload_volume(self.inner, self.ctxt, volume, 'raw',
                             self.images, self.images.show(self.ctxt,
                                                           image_id),
                             'paraVirtual')
        stored = os.path.join(self.root, image_id)
        out = subprocess.run(['qemu-img', 'info', stored],
                             capture_output=True, text=True, check=True)
        self.assertIn('create type: streamOptimized', out.stdout)
        self.assertTrue(self._same(self.device, 'raw', stored, 'vmdk'))
        self.assertEqual({'vmware_disktype': 'streamOptimized',
                          'vmware_adaptertype': 'paraVirtual'},
                         self.images.meta[image_id]['properties'])

    def test_block_volume_recorded_as_qcow2_is_refused(self):
        image_id = self.images.add(self.raw, 'raw')
        volume = self._volume('qcow2')
        with images.fetched_image(self.ctxt, self.images, image_id,
                                  GiB) as info:
            self.assertRaises(exception.VolumeDriverException,
                              images.write_into_volume, self.inner,
                              self.ctxt, volume, info, 'qcow2')
        with open(self.device, 'rb') as f:
            self.assertEqual(b'\0' * 4096, f.read(4096))


class StagerTest(test.TestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.flags(image_conversion_dir=os.path.join(self.root, 'convert'))
        self.patch('cinder.volume.volume_utils.'
                   'brick_get_connector_properties', return_value={})
        self.ctxt = context.get_admin_context()
        self.device = os.path.join(self.root, 'device')
        disks.make_raw_disk(self.device, GiB, seed=22)
        self.inner = _BlockInner(self.device)
        self.stager = migration.Stager()

    def _pair(self, dest_format, multiattach=False):
        src = test_utils.create_volume(self.ctxt, size=1,
                                       admin_metadata={'xhv_format': 'raw'},
                                       multiattach=multiattach,
                                       migration_status='migrating')
        dest = test_utils.create_volume(
            self.ctxt, size=1, admin_metadata={'format': dest_format})
        return src, dest

    def test_raw_to_raw_needs_no_staging(self):
        src, dest = self._pair('raw')
        self.assertIsNone(self.stager.prepare(self.inner, self.ctxt, src,
                                              dest, 'raw'))
        self.assertIsNone(self.stager.connection_info(src))

    def test_staged_conversion_serves_the_copy_then_goes(self):
        src, dest = self._pair('qcow2')
        staged = self.stager.prepare(self.inner, self.ctxt, src, dest, 'raw')
        info = subprocess.run(['qemu-img', 'info', staged],
                              capture_output=True, text=True, check=True)
        self.assertIn('file format: qcow2', info.stdout)
        conn = self.stager.connection_info(src)
        self.assertEqual('local', conn['driver_volume_type'])
        self.assertEqual(staged, conn['data']['device_path'])
        # Only while the volume is migrating.
        src.migration_status = None
        self.assertIsNone(self.stager.connection_info(src))
        self.assertEqual(staged, self.stager.discard(src.id))
        self.assertFalse(os.path.exists(staged))
        self.assertIsNone(self.stager.discard(src.id))

    def test_multiattach_conversion_refused(self):
        src, dest = self._pair('qcow2', multiattach=True)
        err = self.assertRaises(exception.VolumeMigrationFailed,
                                self.stager.prepare, self.inner, self.ctxt,
                                src, dest, 'raw')
        self.assertIn('multiattach', str(err))
        self.assertFalse(os.path.exists(os.path.join(self.root, 'convert')))

    def test_unrecorded_volume_refused_with_a_fix(self):
        volume = test_utils.create_volume(self.ctxt, size=1)
        err = self.assertRaises(exception.VolumeDriverException,
                                volume_format.require_format, volume,
                                'migrate')
        self.assertIn('xhv_format', str(err))

    def test_record_keeps_other_keys(self):
        volume = test_utils.create_volume(
            self.ctxt, size=1, admin_metadata={'readonly': 'True',
                                               'format': 'raw'},
            metadata={'owner': 'me'})
        volume_format.record_format(volume, 'qcow2')
        self.assertEqual({'readonly': 'True', 'format': 'qcow2',
                          'xhv_format': 'qcow2'},
                         db.volume_admin_metadata_get(self.ctxt, volume.id))
        self.assertEqual({'owner': 'me', 'xhv_format': 'qcow2'},
                         db.volume_metadata_get(self.ctxt, volume.id))
