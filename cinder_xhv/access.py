"""Reaching a volume's data on the cinder-volume host.

File-based inner drivers (NFS and the other RemoteFS drivers) keep each
volume as a file on a mounted share: XHV reads and writes that file.  Any
other driver is attached through os-brick the way Cinder's own generic
image copy does, and its volumes are block devices holding raw data.
"""

import contextlib
import os

from oslo_log import log as logging

from cinder import exception
from cinder.volume import volume_utils

LOG = logging.getLogger(__name__)


def file_path(inner, volume):
    """Path of the file holding the volume, or None for block backends."""
    if not hasattr(inner, 'get_active_image_from_info'):
        return None
    if volume.provider_location and hasattr(inner, '_ensure_share_mounted'):
        inner._ensure_share_mounted(volume.provider_location)
    base = inner.local_path(volume)
    active = os.path.join(os.path.dirname(base),
                          inner.get_active_image_from_info(volume))
    if active != base:
        # The volume's current data is a qcow2 overlay chain: copying the
        # base file would lose every write since the first snapshot.
        raise exception.VolumeDriverException(
            message='volume %s has snapshots, so its data is a chain of '
                    'overlay files; XHV does not convert snapshot chains. '
                    'Create a volume from it (or delete its snapshots) and '
                    'use that one.' % volume.id)
    return base


@contextlib.contextmanager
def volume_data(inner, context, volume):
    """Yield ``(path, is_file)`` for the volume's data, attaching if needed."""
    path = file_path(inner, volume)
    if path is not None:
        yield path, True
        return
    configuration = inner.configuration
    properties = volume_utils.brick_get_connector_properties(
        configuration.use_multipath_for_image_xfer,
        configuration.enforce_multipath_for_image_xfer)
    attach_info, volume = inner._attach_volume(context, volume, properties)
    try:
        yield attach_info['device']['path'], False
    finally:
        inner._detach_volume(context, attach_info, volume, properties,
                             force=True)
