"""Image <-> volume transfer in the format each side really needs.

Glance -> volume: the image is staged, inspected by the translation engine
(hostile or mislabelled images are refused before a single byte reaches the
volume), then converted into the format the backend stores.

Volume -> Glance: the volume is converted to the requested disk_format with
the sub-format hypervisors import (vmdk streamOptimized, vhd as qemu's
``vpc``) and the image properties vSphere needs.
"""

import contextlib
import os
import tempfile

from oslo_config import cfg
from oslo_log import log as logging
from oslo_utils import units

from cinder.db import api as db
from cinder import exception
from cinder.image import image_utils
from cinder.volume import volume_utils

from cinder_xhv import access
from cinder_xhv import opts as xhv_opts
from nova_xhv import translate
from nova_xhv.translate import options as translate_options

LOG = logging.getLogger(__name__)


CONF = cfg.CONF
xhv_opts.register_translate_opts(CONF)


def handled_formats():
    return tuple(translate.formats.FORMATS)


def handles(image_meta):
    """True when XHV (not the inner driver) should move this image."""
    if image_meta.get('container_format') == 'compressed':
        return False
    disk_format = (image_meta.get('disk_format') or '').lower()
    return disk_format in handled_formats()


def new_staging_path(prefix, suffix=''):
    """A fresh name in Cinder's image_conversion_dir (the file exists)."""
    staging_dir = volume_utils.image_conversion_dir()
    os.makedirs(staging_dir, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix,
                                dir=staging_dir)
    os.close(fd)
    return path


@contextlib.contextmanager
def staging_file(prefix, suffix=''):
    path = new_staging_path(prefix, suffix)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def fetched_image(context, image_service, image_id, max_virtual_size,
                  volume=None):
    """Download, verify and inspect an image; yield the engine's ImageInfo.

    Raises before the caller writes anything: ImageTooBig when the staging
    folder lacks room, Cinder's signature exceptions when a signed image
    fails verification (``verify_glance_signatures``), ImageUnacceptable
    naming every failed rule for anything the engine refuses.
    """
    meta = image_service.show(context, image_id)
    claimed = meta.get('disk_format')
    staging_dir = volume_utils.image_conversion_dir()
    os.makedirs(staging_dir, exist_ok=True)
    image_utils.check_available_space(staging_dir, meta.get('size') or 0,
                                      image_id)
    with staging_file('xhv-image-%s-' % image_id) as path:
        with open(path, 'wb') as image_file:
            image_service.download(context, image_id, image_file)
        if CONF.verify_glance_signatures != 'disabled':
            verified = image_utils.verify_glance_image_signature(
                context, image_service, image_id, path)
            if volume is not None:
                db.volume_glance_metadata_bulk_create(
                    context, volume.id, {'signature_verified': verified})
        try:
            # No trusted staging folder: a downloaded vmdk descriptor must
            # not reach extent files that happen to sit next to it.
            info = translate.inspect_image(
                path, claimed_format=claimed, staging_dir=None,
                max_virtual_size=max_virtual_size)
        except translate.TranslationError as err:
            LOG.warning('Image %(id)s refused: %(err)s',
                        {'id': image_id, 'err': err})
            raise exception.ImageUnacceptable(image_id=image_id,
                                              reason=str(err))
        if max_virtual_size and info.virtual_size > max_virtual_size:
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason='its virtual size %d bytes exceeds the volume size '
                       '%d bytes; create a bigger volume'
                       % (info.virtual_size, max_virtual_size))
        yield info


def conversion_options(max_size):
    """The [xhv] translation options, capped at ``max_size`` bytes."""
    options = translate_options.convert_options_from_conf(CONF.xhv)
    options.max_virtual_size = min(options.max_virtual_size, max_size)
    return options


def convert(src, src_format, dst, dst_format, max_size, subformat=None):
    """translate.convert with Cinder's exception on failure."""
    options = conversion_options(max_size)
    try:
        return translate.convert(src, dst, to_format=dst_format,
                                 from_format=src_format,
                                 subformat=subformat, options=options)
    except translate.TranslationError as err:
        LOG.error('Converting %(src)s (%(sf)s) to %(df)s failed: %(err)s',
                  {'src': src, 'sf': src_format, 'df': dst_format,
                   'err': err})
        raise exception.ImageCopyFailure(reason=str(err))


def write_into_volume(inner, context, volume, info, volume_format):
    """Convert inspected image ``info`` into the volume's stored format.

    The image becomes a raw staging file grown to the volume size, then the
    volume's format is written next to the volume file and renamed over it
    (file backends) or byte-copied onto the attached device, which holds
    raw data (block backends).
    """
    size = volume.size * units.Gi
    with staging_file('xhv-raw-%s-' % volume.id) as raw:
        os.unlink(raw)
        convert(info.path, info.format, raw, 'raw', size)
        if os.path.getsize(raw) < size:
            os.truncate(raw, size)
        with access.volume_data(inner, context, volume) as (path, is_file):
            if not is_file:
                if volume_format != 'raw':
                    raise exception.VolumeDriverException(
                        message='block volume %s is recorded as %s; XHV '
                                'writes raw data onto block devices'
                                % (volume.id, volume_format))
                volume_utils.copy_volume(
                    raw, path, size // units.Mi,
                    inner.configuration.volume_dd_blocksize, sparse=False)
                return
            _replace_file(raw, path, volume_format, size)


def _replace_file(raw, path, volume_format, size):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.xhv-', dir=directory)
    os.close(fd)
    try:
        os.unlink(tmp)
        convert(raw, 'raw', tmp, volume_format, size)
        stat = os.stat(path)
        os.chmod(tmp, stat.st_mode & 0o7777)
        os.chown(tmp, stat.st_uid, stat.st_gid)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def upload_properties(volume, disk_format, default_adapter):
    """Image properties the target hypervisor needs for ``disk_format``."""
    if disk_format != 'vmdk':
        return {}
    glance = dict(volume.glance_metadata or {})
    return {'vmware_disktype': 'streamOptimized',
            'vmware_adaptertype': (glance.get('vmware_adaptertype') or
                                   default_adapter)}


def upload_volume(inner, context, volume, volume_format, image_service,
                  image_meta, default_adapter):
    """Convert the volume to ``image_meta['disk_format']`` and upload it."""
    disk_format = translate.formats.canonical_name(image_meta['disk_format'])
    image_utils.check_image_conversion_disable(
        disk_format, volume_format, image_meta['id'], upload=True)
    subformat = (translate.formats.STREAM_OPTIMIZED
                 if disk_format == 'vmdk' else None)
    image_id = image_meta['id']
    with staging_file('xhv-upload-%s-' % image_id,
                      suffix='.' + disk_format) as staged:
        os.unlink(staged)
        with access.volume_data(inner, context, volume) as (path, _file):
            result = convert(path, volume_format, staged, disk_format,
                             volume.size * units.Gi, subformat)
        LOG.info('Volume %(vol)s converted from %(src)s to %(dst)s %(sub)s '
                 'for image %(img)s: %(size)d bytes in %(secs).1fs.',
                 {'vol': volume.id, 'src': volume_format, 'dst': disk_format,
                  'sub': result.dst_subformat or '', 'img': image_id,
                  'size': result.bytes_written, 'secs': result.elapsed})
        properties = upload_properties(volume, disk_format, default_adapter)
        if properties:
            # Custom properties stay mutable after upload, disk_format does
            # not: set only properties, and never purge the ones Cinder's
            # API copied from the volume.
            image_service.update(context, image_id,
                                 {'properties': properties},
                                 purge_props=False)
        store_id = volume.volume_type.extra_specs.get(
            'image_service:store_id') if volume.volume_type else None
        base_image_ref = (volume.glance_metadata or {}).get('image_id')
        with image_utils.chown_if_needed(staged):
            with open(staged, 'rb') as image_file:
                try:
                    image_service.update(context, image_id, {}, image_file,
                                         purge_props=False,
                                         store_id=store_id,
                                         base_image_ref=base_image_ref)
                except Exception as err:
                    LOG.error('Glance did not take the %(fmt)s data of '
                              'image %(img)s (volume %(vol)s, %(size)d '
                              'bytes): %(err)s.%(hint)s',
                              {'fmt': disk_format, 'img': image_id,
                               'vol': volume.id, 'size': result.bytes_written,
                               'err': err, 'hint': glance_failure_hint(err)})
                    raise


def glance_http_status(err):
    """The HTTP status of a glanceclient error, None for anything else."""
    status = getattr(err, 'code', None)
    return status if isinstance(status, int) else None


def glance_failure_hint(err):
    """What an operator should check after Glance failed an upload."""
    status = glance_http_status(err)
    if status is None or status < 500:
        return ''
    return (' Glance failed while receiving the data: glanceclient sends it '
            'as HTTP chunks of %d bytes, and a Glance served by uWSGI (with '
            'no proxy in front that re-chunks the body) refuses any chunk '
            'over its chunked-input-limit (default 1 MiB) with "unable to '
            'receive chunked part"; set chunked-input-limit = 16777216 in '
            'glance-api\'s uWSGI options (see XHV\'s cinder documentation).'
            % upload_chunk_size())


def upload_chunk_size():
    """Bytes per HTTP chunk glanceclient streams an image body in."""
    from glanceclient.common import http as glance_http
    return glance_http.CHUNKSIZE
