"""Remote images: the cloud family's disks on their way in and out.

A home image is uploaded once per content (tagged by its hash); a disk
staged for a move is a private image tagged for its instance; a remote
server's disk leaves as a snapshot image, read by ranges
(``RemoteImageReader``) or uploaded to the home Glance.  Every image
XHV makes carries a tag naming why, so only those are ever deleted.
"""

import hashlib
import os
import shutil
import struct
import tempfile
import time

from nova.compute import task_states
from nova import exception
from nova.image import glance
from oslo_concurrency import lockutils
from oslo_log import log as logging

from nova_xhv.backends.cloud import errors
from nova_xhv.backends.cloud import remote
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv.disk import DiskReader
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)

#: Remote image tags: a cached copy of a home image (by content hash), a
#: disk staged for a move, a snapshot exported for a move.
CACHED_TAG = 'xhv-image-%s'
STAGED_TAG = 'xhv-staged-%s'
EXPORT_TAG = 'xhv-export-%s'
# Seconds between two looks at a remote image that is changing.
POLL_INTERVAL = 0.25
# Bytes of a translated stream read at once for an upload.
CHUNK = 1024 * 1024


class RemoteImages(remote.Part):
    """The remote project's images, as XHV makes and removes them."""

    def work_dir(self, prefix):
        """A private local folder under ``staging_dir`` (caller removes)."""
        return tempfile.mkdtemp(prefix=prefix, dir=self.conf.staging_dir)

    def upload(self, name, path, tags, properties, call):
        """A private remote image of the file ``path`` (format checked)."""
        with self.call(call):
            image = self.conn.image.create_image(
                name, filename=path, disk_format=self.conf.image_format,
                container_format='bare', visibility='private', tags=tags,
                allow_duplicates=True, wait=True,
                timeout=self.conf.build_timeout, **properties)
        return image

    def upload_stream(self, name, stream, tags, properties, call):
        """A private remote image written from a TranslationStream.

        The image record is made first, then its data is PUT as the
        stream writer produces it (chunked; no local copy).  The stream
        ends only once the writer checked it whole, so a failed or cut
        translation fails the PUT; the image is deleted then.

        :returns: (the active image, the stream's ConvertResult)
        """
        with self.call(call):
            image = self.conn.image.create_image(
                name, disk_format=self.conf.image_format,
                container_format='bare', visibility='private', tags=tags,
                allow_duplicates=True, **properties)
        try:
            def put(reader):
                def chunks():
                    while True:
                        data = reader.read(CHUNK)
                        if not data:
                            return
                        yield data
                with self.call(call):
                    resp = self.conn.image.put(
                        '/images/%s/file' % image.id, data=chunks(),
                        headers={'Content-Type': 'application/octet-stream'},
                        raise_exc=True)
                resp.close()
            result, _ = stream.run(put)
            image = self.wait(image, call)
        except BaseException:
            self.delete(image.id)
            raise
        return image, result

    def delete(self, image_id):
        with self.call('DELETE /v2/images/%s' % image_id):
            self.conn.image.delete_image(image_id, ignore_missing=True)

    def tagged(self, tag):
        with self.call('GET /v2/images?tag=%s' % tag):
            return list(self.conn.image.images(tag=tag))

    def get(self, image_id):
        with self.call('GET /v2/images/%s' % image_id):
            return self.conn.image.get_image(image_id)

    def ours(self, image_id, tag):
        """Whether the remote image exists and carries ``tag``."""
        try:
            image = self.get(image_id)
        except errors.RemoteCloudError as exc:
            if errors.is_not_found(exc.__cause__):
                return False
            raise
        return tag in (image.tags or [])

    def delete_if_ours(self, image_id, tag):
        """Delete the image if it still carries ``tag`` (idempotent)."""
        if image_id and self.ours(image_id, tag):
            self.delete(image_id)

    def file_url(self, image_id):
        """The image's Glance ``file`` URL (what a descriptor names)."""
        with self.call('image endpoint'):
            endpoint = self.conn.image.get_endpoint().rstrip('/')
        if endpoint.endswith('/v2'):
            return '%s/images/%s/file' % (endpoint, image_id)
        return '%s/v2/images/%s/file' % (endpoint, image_id)

    def reader(self, image):
        return RemoteImageReader(self, image)

    def cached_copy(self, context, image_meta, instance):
        """The remote image for a home image: cached by its content hash.

        The first spawn of an image downloads it from the home Glance,
        translates it to ``image_format`` (after the engine's safety
        inspection) and uploads it; later spawns find it by its tag.
        """
        home = glance.API().get(context, image_meta.id)
        digest = (home.get('os_hash_value') or home.get('checksum')
                  or image_meta.id)
        tag = CACHED_TAG % hashlib.sha256(
            digest.encode()).hexdigest()[:48]
        with lockutils.lock('xhv-cloud-image-%s' % tag):
            for image in self.tagged(tag):
                if image.status == 'active':
                    return image.id
            workdir = self.work_dir('spawn-%s-' % instance.uuid)
            try:
                source = os.path.join(workdir, 'image')
                glance.API().download(context, image_meta.id,
                                      dest_path=source)
                target = os.path.join(workdir, 'image.' +
                                      self.conf.image_format)
                try:
                    translate.convert(
                        source, target, to_format=self.conf.image_format,
                        from_format=image_meta.disk_format,
                        subformat=self.backend.native_subformat,
                        options=translate_conf.convert_options_from_conf(
                            CONF.xhv, staging_dir=workdir))
                except translate.TranslationError as error:
                    raise exception.ImageUnacceptable(
                        image_id=image_meta.id, reason=str(error))
                os.unlink(source)
                image = self.upload(
                    'xhv-cache-%s' % image_meta.id, target, [tag],
                    {'xhv_home_image': image_meta.id},
                    'uploading image %s' % image_meta.id)
                return image.id
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def snapshot(self, server, instance, why):
        """A remote snapshot image of ``server``, active, tagged as ours."""
        call = 'POST /servers/%s/action createImage (%s)' % (server.id, why)
        with self.call(call):
            image = self.conn.compute.create_server_image(
                server, 'xhv-%s-%s' % (why, instance.uuid),
                metadata={remote.HOME_UUID: instance.uuid})
        try:
            with self.call(call):
                self.conn.image.add_tag(image, EXPORT_TAG % instance.uuid)
            image = self.wait(image, call)
        except Exception:
            self.delete(image.id)
            raise
        return image

    def wait(self, image, call):
        """The image once active; a remote error if it cannot become so."""
        deadline = time.monotonic() + self.conf.build_timeout
        while True:
            image = self.get(image.id)
            if image.status == 'active':
                return image
            if image.status in ('killed', 'deleted', 'deactivated'):
                raise errors.RemoteCloudError(
                    cloud=self.cloud, call=call,
                    reason='image %s went %s' % (image.id, image.status))
            if time.monotonic() > deadline:
                raise errors.RemoteCloudTimeout(
                    cloud=self.cloud, call=call,
                    reason='image %s still %s after %ss' % (
                        image.id, image.status, self.conf.build_timeout))
            time.sleep(POLL_INTERVAL)

    def snapshot_home(self, context, server, instance, image_id,
                      update_task_state):
        """Nova's snapshot: the remote server's disk into a home image.

        The disk goes into home image ``image_id``, checked by the
        translation engine on the way; the remote snapshot is deleted
        whatever happens.
        """
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        image = self.snapshot(server, instance, 'snapshot')
        workdir = self.work_dir('snapshot-%s-' % instance.uuid)
        try:
            path = os.path.join(workdir, 'image')
            reader = self.reader(image)
            with open(path, 'wb') as f:
                for chunk in reader.iter_range(0, reader.size - 1):
                    f.write(chunk)
            translate.inspect_image(path, claimed_format=image.disk_format)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(path, 'rb') as data:
                glance.API().update(context, image_id, {
                    'disk_format': image.disk_format,
                    'container_format': 'bare'}, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self.delete(image.id)


class RemoteImageReader(DiskReader):
    """Range reads of a remote image's data (its Glance ``file``)."""

    def __init__(self, images, image):
        self.images = images
        self.image = image
        self.size = int(image.size or 0)
        self.path = '/images/%s/file' % image.id

    def iter_range(self, start, end, chunk=1024 * 1024):
        call = 'GET /v2/images/%s/file (bytes %d-%d)' % (
            self.image.id, start, end)
        with self.images.call(call):
            resp = self.images.conn.image.get(
                self.path, headers={'Range': 'bytes=%d-%d' % (start, end)},
                stream=True, raise_exc=True)
        try:
            if resp.status_code not in (200, 206):
                raise OSError('%s answered %d' % (call, resp.status_code))
            if resp.status_code == 200 and start:
                raise OSError('%s ignored the Range header' % call)
            left = end - start + 1
            for data in resp.iter_content(chunk):
                data = data[:left]
                left -= len(data)
                yield data
                if not left:
                    break
            if left:
                raise OSError('%s ended %d bytes short' % (call, left))
        finally:
            resp.close()

    def virtual_size(self):
        """The disk's size for the guest: Glance's, else the header's."""
        if getattr(self.image, 'virtual_size', None):
            return int(self.image.virtual_size)
        if self.image.disk_format == 'qcow2':
            header = b''.join(self.iter_range(0, 31))
            if header[:4] == b'QFI\xfb':
                return struct.unpack('>Q', header[24:32])[0]
        return self.size
