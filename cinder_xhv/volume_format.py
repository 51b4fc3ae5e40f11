"""What format a volume is stored in.

The format lives in the volume's admin metadata (``xhv_format``), which only
Cinder itself writes, and is mirrored into the user-visible metadata for
operators and tools.  Decisions (conversion, refusal) trust only the admin
copy, or Cinder's own ``format`` admin key written by NFS-like drivers.
"""

from oslo_log import log as logging

from cinder import context
from cinder.db import api as db
from cinder import exception

LOG = logging.getLogger(__name__)

FORMAT_KEY = 'xhv_format'
# Written by Cinder's RemoteFS drivers (NFS & co) for raw/qcow2 volumes.
CINDER_FORMAT_KEY = 'format'


def derive_stored_format(inner, configuration):
    """The format the inner driver creates its volumes in."""
    configured = configuration.safe_get('xhv_volume_format')
    if configured:
        return configured
    if getattr(inner, 'driver_volume_type', None) == 'vmdk' or (
            type(inner).__name__.startswith('VMwareVcVmdk')):
        return 'vmdk'
    prefix = getattr(inner, 'driver_prefix', None)
    if prefix and getattr(inner.configuration, prefix + '_qcow2_volumes',
                          False):
        return 'qcow2'
    return 'raw'


def _admin_context(volume):
    ctxt = getattr(volume, '_context', None)
    return ctxt.elevated() if ctxt else context.get_admin_context()


def recorded_format(volume):
    """The trusted recorded format of a volume, or None.

    Read from the database: a volume object loaded in a user's context
    carries no (or an empty placeholder of) admin metadata.
    """
    admin = db.volume_admin_metadata_get(_admin_context(volume), volume.id)
    return admin.get(FORMAT_KEY) or admin.get(CINDER_FORMAT_KEY)


def record_format(volume, fmt):
    """Record ``fmt`` as the volume's format in admin and user metadata.

    Keeps Cinder's own ``format`` key in step when the inner driver uses it
    (NFS reads it back to tell Nova how to open the file).  Written key by
    key (never replacing the whole set), and mirrored into the object
    without marking it changed, so no later save of a partially loaded
    object can drop other keys.
    """
    ctxt = _admin_context(volume)
    admin = db.volume_admin_metadata_get(ctxt, volume.id)
    admin_update = {FORMAT_KEY: fmt}
    if CINDER_FORMAT_KEY in admin and fmt in ('raw', 'qcow2'):
        admin_update[CINDER_FORMAT_KEY] = fmt
    db.volume_admin_metadata_update(ctxt, volume.id, admin_update, False)
    db.volume_metadata_update(ctxt, volume.id, {FORMAT_KEY: fmt}, False)
    pending = volume.obj_what_changed()
    clean = []
    for field, update in (('admin_metadata', admin_update),
                          ('metadata', {FORMAT_KEY: fmt})):
        if volume.obj_attr_is_set(field) and getattr(volume, field) is not \
                None:
            # Pending changes keep their tracking so a later save still
            # writes them (now including our key).
            getattr(volume, field).update(update)
            if field not in pending:
                clean.append(field)
    if clean:
        volume._reset_metadata_tracking(fields=tuple(clean))
    LOG.debug('Volume %(id)s recorded as %(fmt)s.',
              {'id': volume.id, 'fmt': fmt})


def adopt_records(volume, new_volume, new_format):
    """Give ``volume`` the format records of its migration target.

    Called from update_migrated_volume.  Written straight to the database
    under the original id: the manager swaps admin metadata between the two
    records only when its context is admin, and any admin metadata in a
    model update would be swapped back onto the doomed target.
    """
    ctxt = _admin_context(volume)
    admin = db.volume_admin_metadata_get(ctxt, volume.id)
    new_admin = db.volume_admin_metadata_get(ctxt, new_volume.id)
    update = {FORMAT_KEY: new_format}
    if CINDER_FORMAT_KEY in new_admin:
        update[CINDER_FORMAT_KEY] = new_admin[CINDER_FORMAT_KEY]
    elif CINDER_FORMAT_KEY in admin:
        db.volume_admin_metadata_delete(ctxt, volume.id, CINDER_FORMAT_KEY)
    db.volume_admin_metadata_update(ctxt, volume.id, update, False)
    db.volume_metadata_update(ctxt, volume.id, {FORMAT_KEY: new_format},
                              False)


def require_format(volume, what):
    """The recorded format, or a refusal that says how to fix it."""
    fmt = recorded_format(volume)
    if not fmt:
        raise exception.VolumeDriverException(
            message='XHV cannot establish the disk format of volume %s, so '
                    'it refuses to %s it (a byte copy could carry the wrong '
                    'format). Set its admin metadata %s to the format its '
                    'data is stored in (raw, qcow2, vmdk, vhdx, vhd).'
                    % (volume.id, what, FORMAT_KEY))
    return fmt
