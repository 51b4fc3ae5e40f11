"""Upload to and create from Glance images in every format, via XHV."""

import hashlib
import os
import pathlib
import subprocess

import fixtures
import glanceclient.exc

from cinder.api.v3 import messages as messages_api
from cinder.db import api as db

from tests.functional.cinder import base
from tests.functional.translate import helpers as translate_helpers
from tests.functional.translate import test_hostile
from tests.functional.translate import test_hostile_gate

FORMATS = ('raw', 'qcow2', 'vmdk', 'vhd', 'vhdx')
QEMU_NAME = {'raw': 'raw', 'qcow2': 'qcow2', 'vmdk': 'vmdk', 'vhd': 'vpc',
             'vhdx': 'vhdx'}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class ImageTest(base.XHVCinderTestCase):

    def _volume_with_guest_data(self, backend):
        vol = self.create_available(backend)
        path = self.volume_file(vol)
        raw, _image, _extents = base.make_guest_image(self.root, 'raw')
        fmt = self.admin_metadata(vol)['xhv_format']
        if fmt == 'raw':
            with open(raw, 'rb') as src, open(path, 'r+b') as dst:
                dst.write(src.read())
        else:
            # Stands in for a guest writing through the hypervisor.
            converted = path + '.guest'
            subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', fmt,
                            raw, converted], check=True)
            subprocess.run(['qemu-img', 'resize', '-f', fmt, converted,
                            '1G'], check=True, capture_output=True)
            os.replace(converted, path)
        return vol, path, fmt, raw

    def _request_upload(self, vol, disk_format):
        response = self.volume_api.copy_volume_to_image(
            self.ctxt, self.get_volume(vol.id, self.ctxt),
            {'name': 'up-%s' % disk_format, 'disk_format': disk_format,
             'container_format': 'bare', 'visibility': 'private',
             'protected': False}, False)
        return response['image_id']

    def _upload(self, vol, disk_format):
        image_id = self._request_upload(vol, disk_format)
        self.wait_volume(vol.id)
        base.wait_for(lambda: self.glance.image(image_id)['status'] ==
                      'active', 'image %s to become active' % image_id)
        return image_id

    def test_upload_in_each_format(self):
        vol, path, fmt, raw = self._volume_with_guest_data('nfsraw')
        for disk_format in FORMATS:
            image_id = self._upload(vol, disk_format)
            stored = self.glance.image_path(image_id)
            info = base.qemu_img_info(stored)
            self.assertEqual(QEMU_NAME[disk_format], info['format'],
                             'upload as %s' % disk_format)
            self.assertEqual(base.GiB, info['virtual-size'])
            self.assertTrue(base.same_guest_data(path, fmt, stored,
                                                 QEMU_NAME[disk_format]),
                            'guest data of the %s upload' % disk_format)
            image = self.glance.image(image_id)
            if disk_format == 'vmdk':
                self.assertEqual('streamOptimized',
                                 info['format-specific']['data'][
                                     'create-type'])
                self.assertEqual('streamOptimized', image['vmware_disktype'])
                self.assertEqual('lsiLogic', image['vmware_adaptertype'])
            else:
                self.assertNotIn('vmware_disktype', image)
        self.assertEqual('raw', self.admin_metadata(vol)['xhv_format'])

    def test_upload_from_qcow2_backend(self):
        vol, path, fmt, raw = self._volume_with_guest_data('nfsqcow2')
        self.assertEqual('qcow2', fmt)
        for disk_format in ('raw', 'vhd'):
            image_id = self._upload(vol, disk_format)
            stored = self.glance.image_path(image_id)
            self.assertEqual(QEMU_NAME[disk_format],
                             base.qemu_img_info(stored)['format'])
            self.assertTrue(base.same_guest_data(raw, 'raw', stored,
                                                 QEMU_NAME[disk_format]))

    def test_create_from_each_format(self):
        for backend, volume_fmt in (('nfsqcow2', 'qcow2'),
                                    ('nfsraw', 'raw')):
            formats = FORMATS if backend == 'nfsqcow2' else ('vhd', 'vmdk')
            for disk_format in formats:
                raw, image, _extents = base.make_guest_image(self.root,
                                                             disk_format)
                image_id = self.glance.add_image(image, disk_format)
                vol = self.create_volume(backend, image_id=image_id)
                vol = self.wait_volume(vol.id)
                path = self.volume_file(vol)
                info = base.qemu_img_info(path)
                self.assertEqual(volume_fmt, info['format'],
                                 '%s image on %s' % (disk_format, backend))
                self.assertEqual(base.GiB, info['virtual-size'])
                self.assertTrue(base.same_guest_data(raw, 'raw', path,
                                                     volume_fmt),
                                'guest data from the %s image' % disk_format)
                self.assertEqual(volume_fmt,
                                 self.admin_metadata(vol)['xhv_format'])
                self.assertEqual(volume_fmt,
                                 self.admin_metadata(vol)['format'])
                glance_meta = db.volume_glance_metadata_get(self.admin,
                                                            vol.id)
                self.assertIn(image_id, [m['value'] for m in glance_meta])

    def _hostile_images(self):
        qcow2_backed = os.path.join(self.root, 'backed.qcow2')
        subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-F', 'raw',
                        '-b', '/etc/hostname', qcow2_backed, '16M'],
                       check=True, capture_output=True)
        _raw, qcow2, _ext = base.make_guest_image(self.root, 'qcow2')
        flat_descriptor = os.path.join(self.root, 'evil.vmdk')
        with open(flat_descriptor, 'w') as f:
            f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
                    'parentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
                    'RW 2048 FLAT "/etc/shadow" 0\n\n'
                    'ddb.virtualHWVersion = "4"\n')
        too_big = os.path.join(self.root, 'too-big.qcow2')
        subprocess.run(['qemu-img', 'create', '-f', 'qcow2', too_big, '4G'],
                       check=True, capture_output=True)
        self.unsigned = qcow2
        # Hints hidden where the old gate did not look, pointing at a host
        # vmdk holding a canary (issue 16).
        hostile = pathlib.Path(self.root) / 'hostile'
        hostile.mkdir(exist_ok=True)
        case = test_hostile.Case(hostile)
        hidden = [('vmdk hint hidden (%s, %s)' % (placement, subformat),
                   test_hostile_gate.hinted_vmdk(case, placement, subformat),
                   'vmdk', 'names a parent disk')
                  for placement, subformat in (
                      ('comment', 'streamOptimized'),
                      ('past_descriptor_size', 'monolithicSparse'),
                      ('inside_another_value', 'streamOptimized'))]
        footer = test_hostile_gate._stream_with_footer(
            case, footer_capacity=64 * base.GiB)
        # (label, image, claimed format, words of the refusal)
        return hidden + [
            ('stream footer capacity above the header\'s', footer,
             'vmdk', 'footer disagrees with the header'),
            ('qcow2 with a backing file', qcow2_backed, 'qcow2',
             'backing file'),
            ('qcow2 labelled raw', qcow2, 'raw',
             'not the claimed raw'),
            ('vmdk descriptor naming /etc/shadow', flat_descriptor,
             'vmdk', '/etc/shadow'),
            ('virtual size above the volume size', too_big, 'qcow2',
             'virtual size')]

    def _add_half_signed(self):
        # Signature metadata without its certificate: Cinder's verifier
        # must refuse it before XHV inspects anything.
        _raw, qcow2, _ext = base.make_guest_image(self.root, 'qcow2')
        return self.glance.add_image(
            qcow2, 'qcow2', properties={'img_signature': 'c2lnbmF0dXJl'})

    def _share_files(self, backend):
        share = base.BACKENDS[backend]['share']
        export = self.shares.exports[share]
        return sorted(os.listdir(export))

    def _assert_no_canary(self, backend, label):
        export = self.shares.exports[base.BACKENDS[backend]['share']]
        staging = os.path.join(self.root, 'convert')
        for path in translate_helpers.files_under(export) + \
                translate_helpers.files_under(staging):
            self.assertFalse(translate_helpers.contains_canary(path),
                             '%s: %s' % (label, path))

    def test_hostile_images_refused(self):
        before = self._share_files('nfsqcow2')
        for label, image, claimed, reason in self._hostile_images():
            image_id = self.glance.add_image(image, claimed)
            vol = self.create_volume('nfsqcow2', image_id=image_id)
            self.wait_volume(vol.id, status='error')
            self.wait_logged('Image %s refused' % image_id)
            self.assertIn(reason, self.logs.output, label)
            # Refused before the volume existed: nothing on the share.
            self.assertEqual(before, self._share_files('nfsqcow2'), label)
            self._assert_no_canary('nfsqcow2', label)
        vol = self.create_volume('nfsqcow2', image_id=self._add_half_signed())
        self.wait_volume(vol.id, status='error')
        self.wait_logged('Signature metadata is incomplete')
        self.assertEqual(before, self._share_files('nfsqcow2'))

    def test_conversion_disabled_is_honoured(self):
        self.flags(image_conversion_disable=True)
        _raw, vmdk, _ext = base.make_guest_image(self.root, 'vmdk')
        refused = self.create_volume(
            'nfsqcow2', image_id=self.glance.add_image(vmdk, 'vmdk'))
        self.wait_volume(refused.id, status='error')
        self.wait_logged('Image conversion is disabled')
        raw, qcow2, _ext = base.make_guest_image(self.root, 'qcow2')
        same = self.create_volume(
            'nfsqcow2', image_id=self.glance.add_image(qcow2, 'qcow2'))
        same = self.wait_volume(same.id)
        self.assertTrue(base.same_guest_data(raw, 'raw',
                                             self.volume_file(same), 'qcow2'))

    def test_reimage_with_hostile_image_keeps_data(self):
        vol, path, fmt, raw = self._volume_with_guest_data('nfsraw')
        digest = sha256(path)
        for label, image, claimed, reason in self._hostile_images():
            image_id = self.glance.add_image(image, claimed)
            volume = self.get_volume(vol.id, self.ctxt)
            self.volume_api.reimage(self.ctxt, volume, image_id)
            self.wait_volume(vol.id, status='error')
            self.wait_logged('Image %s refused' % image_id)
            self.assertEqual(digest, sha256(path), label)
            self._assert_no_canary('nfsraw', label)
            db.volume_update(self.admin, vol.id, {'status': 'available'})
        # A good image is written through the same path.
        good_raw, good, _ext = base.make_guest_image(self.root, 'vhdx',
                                                     seed=5)
        image_id = self.glance.add_image(good, 'vhdx')
        self.volume_api.reimage(self.ctxt, self.get_volume(vol.id, self.ctxt),
                                image_id)
        self.wait_volume(vol.id)
        self.assertTrue(base.same_guest_data(good_raw, 'raw', path, 'raw'))
        self.assertEqual(base.GiB, os.path.getsize(path))

    # -- failed uploads reach the user ------------------------------------

    def _user_messages(self, volume_id, count):
        """The user messages of a volume, as cinder-api renders them."""
        def recorded():
            found = db.message_get_all(
                self.ctxt, filters={'resource_uuid': volume_id})
            return found if len(found) >= count else None
        found = base.wait_for(recorded, '%d messages for volume %s'
                              % (count, volume_id))
        controller = messages_api.MessagesController(None)
        rendered = []
        for message in found:
            message = dict(message)
            controller._build_user_message(message)
            rendered.append(message['user_message'])
        return sorted(rendered)

    def test_upload_failed_by_glance_reaches_the_user(self):
        vol, path, fmt, raw = self._volume_with_guest_data('nfsraw')
        digest = sha256(path)
        received = []

        def refuse(image_id, data, **kwargs):
            # As Glance under uWSGI does with a chunk over its
            # chunked-input-limit: the first read fails, HTTP 500.
            received.append(len(data.read(1024 * 1024)))
            raise glanceclient.exc.HTTPInternalServerError(
                'unable to receive chunked part')
        # glanceclient's images controller, which Cinder's wrapper calls.
        self.useFixture(fixtures.MockPatchObject(
            self.glance.client.images, 'upload', side_effect=refuse))
        image_id = self._request_upload(vol, 'qcow2')
        self.assertEqual(
            ['copy volume to image:Failed to upload volume to image at '
             'backend.'], self._user_messages(vol.id, 1))
        self.wait_volume(vol.id)
        self.assertEqual([1024 * 1024], received)
        # The operator's log says where it failed and what to check.
        self.wait_logged('Glance did not take the qcow2 data of image %s'
                         % image_id)
        self.assertIn('chunked-input-limit', self.logs.output)
        self.assertEqual(digest, sha256(path))

    def test_refused_conversion_reaches_the_user(self):
        self.flags(image_conversion_disable=True)
        vol, path, fmt, raw = self._volume_with_guest_data('nfsraw')
        image_id = self._request_upload(vol, 'vhdx')
        messages = self._user_messages(vol.id, 2)
        self.assertEqual(
            ['copy volume to image:Failed to upload volume to image at '
             'backend.',
             'copy volume to image:The image disk format must be the same '
             'as the volume format for the volume type you are '
             'requesting.'], messages)
        self.wait_volume(vol.id)
        self.wait_logged('Image conversion is disabled')
        # Refused before a byte was converted or sent.
        self.assertIsNone(self.glance.image(image_id)['size'])
