"""Format-aware volume migration between backends.

Cinder's generic migration (retype or migrate to another backend) attaches
both volumes on the source host and copies container bytes with ``dd``.
XHV keeps that flow and makes the bytes right: in ``before_volume_copy`` it
converts the source's guest data into the format the destination volume is
stored in, in a staging file, and while the copy runs the source volume's
connection points at that file (a ``local`` connection).  So ``dd`` copies
a correct container, and ``terminate_connection`` removes the staging file.
"""

import contextlib
import os

from oslo_log import log as logging
from oslo_utils import units

from cinder import exception
from cinder import objects

from cinder_xhv import access
from cinder_xhv import images
from cinder_xhv import volume_format

LOG = logging.getLogger(__name__)


def destination_format(context, dest_vol):
    """Format the destination backend created ``dest_vol`` in.

    XHV destinations record it; Cinder's NFS-like drivers record ``format``;
    every other driver gives a block device, which holds raw data.
    """
    fresh = objects.Volume.get_by_id(context.elevated(), dest_vol.id)
    return volume_format.recorded_format(fresh) or 'raw'


class Stager(object):
    """Staging files standing in for source volumes during a copy."""

    def __init__(self):
        self._staged = {}

    def staged_path(self, volume):
        if volume.migration_status not in ('migrating', 'starting'):
            return None
        return self._staged.get(volume.id)

    def prepare(self, inner, context, src_vol, dest_vol, src_format):
        dest_format = destination_format(context, dest_vol)
        if src_format == dest_format == 'raw':
            LOG.debug('Migration of %s: raw to raw, a byte copy is right.',
                      src_vol.id)
            return None
        if src_vol.multiattach and src_format != dest_format:
            raise exception.VolumeMigrationFailed(
                reason='volume %s is multiattach and would need conversion '
                       'from %s to %s; XHV never converts multiattach '
                       'volumes. Migrate it to a backend storing %s.'
                       % (src_vol.id, src_format, dest_format, src_format))
        # Kept past this call: terminate_connection or after_volume_copy
        # removes it.
        staged = images.new_staging_path('xhv-migrate-%s-' % src_vol.id,
                                         suffix='.' + dest_format)
        try:
            os.unlink(staged)
            with access.volume_data(inner, context, src_vol) as (path, _f):
                images.convert(path, src_format, staged, dest_format,
                               src_vol.size * units.Gi)
        except Exception:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
        LOG.info('Migration of %(vol)s: guest data converted %(src)s -> '
                 '%(dst)s into %(path)s for the copy.',
                 {'vol': src_vol.id, 'src': src_format, 'dst': dest_format,
                  'path': staged})
        self._staged[src_vol.id] = staged
        return staged

    def discard(self, volume_id):
        path = self._staged.pop(volume_id, None)
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            LOG.debug('Removed migration staging file %s.', path)
        return path

    def connection_info(self, volume):
        path = self.staged_path(volume)
        if not path:
            return None
        return {'driver_volume_type': 'local',
                'data': {'device_path': path, 'volume_id': volume.id,
                         'xhv_staged': True}}
