"""Volumes that follow their server in a move between families.

A volume never travels with the disks: Nova's own attachment flow moves
it.  Around ``migrate_disk_and_power_off`` Nova swaps each attachment for
a reserved one (``_terminate_volume_connections``); ``finish_migration``
gets the attachments updated with the destination's connector, whose
connection info the destination backend attaches in
``spawn_from_disks``; a revert updates them back with the source's
connector.  XHV's part, on the source:

1. before anything changes (the server still runs), refuse a volume the
   destination family cannot attach as it is stored (its facts,
   ``Family.volume_attach``), a block volume (LVM/iSCSI: only file
   volumes on a share every family mounts follow a server across
   families), and a multiattach volume (its other servers stay behind);
   then ask the destination compute itself whether it can attach each
   one (``POST /volumes`` on its exchange endpoint, answered by its
   backend's ``check_volume_attachable``: a Hyper-V compute without the
   SMB share of the volume's export, a Xen compute without a mount of
   it, refuse here, not after the server was powered off);
2. after power-off, detach every volume from the original (its guest is
   off, nothing writes);
3. on any failure before the move commits, attach them again, as they
   were, before the original powers on; on revert, likewise.

Nothing is converted: a volume whose format the destination cannot open
is refused at step 1 (retype it first; XHV's volume driver converts on
retype).
"""

from oslo_log import log as logging

from nova.virt import driver

from nova_xhv.backends import family

LOG = logging.getLogger(__name__)


class VolumeCannotFollow(Exception):
    """A volume of the server cannot move to the destination family."""


def mapped(block_device_info):
    """The server's volume mappings that carry connection info."""
    return [bdm for bdm in
            driver.block_device_info_get_mapping(block_device_info)
            if bdm.get('connection_info')]


def _volume_id(bdm):
    info = bdm['connection_info']
    return (info.get('volume_id') or info.get('serial') or
            (info.get('data') or {}).get('volume_id') or
            bdm.get('mount_device'))


def check_can_follow(block_device_info, dest_family):
    """Raise VolumeCannotFollow (with every reason) before any change."""
    try:
        facts = family.lookup(dest_family)
    except family.UnknownFamily as error:
        raise VolumeCannotFollow(str(error))
    problems = []
    for bdm in mapped(block_device_info):
        info = bdm['connection_info']
        kind = str(info.get('driver_volume_type') or '').lower()
        data = info.get('data') or {}
        fmt = data.get('format') or 'raw'
        volume = _volume_id(bdm)
        if info.get('multiattach') or data.get('multiattach'):
            problems.append('volume %s is multiattach: its other servers '
                            'would stay behind; detach it first' % volume)
        elif kind not in family.FILE_VOLUME_TYPES:
            problems.append(
                'volume %s is a %s (block) volume: only file volumes (%s) '
                'on a share every family mounts follow a server to '
                'another hypervisor family; detach it first'
                % (volume, kind or 'unknown', ', '.join(
                    family.FILE_VOLUME_TYPES)))
        elif not facts.attaches(kind, fmt):
            problems.append(
                'volume %s is a %s volume stored as %s, which the %s family '
                'does not attach; retype it to a volume type storing %s '
                'first (XHV converts on retype)'
                % (volume, kind, fmt, facts.name,
                   ' or '.join(facts.volume_attach.get(kind, ())) or
                   'a format it attaches'))
    if problems:
        raise VolumeCannotFollow('; '.join(problems))


def _checked_info(info):
    """What the destination needs to judge a volume: no credentials."""
    data = info.get('data') or {}
    return {'driver_volume_type': info.get('driver_volume_type'),
            'data': {k: data[k] for k in _CHECKED_KEYS if k in data}}


# The keys of a file volume's connection info that name where it is and
# how it is stored (os-brick nfs/smbfs...; XHV's 'format').
_CHECKED_KEYS = ('export', 'name', 'format', 'volume_id')


def check_destination_attaches(client, dest, block_device_info):
    """Raise VolumeCannotFollow unless the destination attaches them all.

    Asked after ``check_can_follow`` and before anything changes.
    """
    bdms = mapped(block_device_info)
    if not bdms:
        return
    volumes = [{'id': _volume_id(bdm),
                'connection_info': _checked_info(bdm['connection_info'])}
               for bdm in bdms]
    try:
        refused = client.check_volumes(dest.url, volumes)
    except Exception as error:
        raise VolumeCannotFollow(
            'the destination %s could not say whether it can attach the '
            'server\'s volumes: %s' % (dest.host, error))
    if refused is None:
        LOG.warning('The destination %s cannot check volumes before a '
                    'move (an older XHV): its attach after power-off is '
                    'the check', dest.host)
        return
    if refused:
        raise VolumeCannotFollow('; '.join(
            'the destination %s cannot attach volume %s: %s'
            % (dest.host, r.get('id'), r.get('reason')) for r in refused))


def detach_all(backend, context, instance, block_device_info):
    """Detach every volume from the (powered-off) original.

    :returns: the mappings detached, for ``attach_again``.  On failure the
        ones already detached are attached again before raising.
    """
    done = []
    try:
        for bdm in mapped(block_device_info):
            backend.detach_volume(context, bdm['connection_info'], instance,
                                  bdm.get('mount_device'))
            done.append(bdm)
    except Exception:
        attach_again(backend, context, instance, done)
        raise
    if done:
        LOG.info('Detached %d volume(s) from the original of instance %s '
                 'for its move', len(done), instance.uuid, instance=instance)
    return done


def attach_again(backend, context, instance, bdms):
    """Give the original its volumes back as they were. Never raises."""
    for bdm in bdms:
        try:
            backend.attach_volume(context, bdm['connection_info'], instance,
                                  bdm.get('mount_device'),
                                  disk_bus=bdm.get('disk_bus'),
                                  device_type=bdm.get('device_type'))
        except Exception:
            LOG.exception('Could not attach volume %s to the original of '
                          'instance %s again', _volume_id(bdm),
                          instance.uuid, instance=instance)
