"""Connection info for the hypervisor family that attaches a volume.

XHV's computes add their family to the os-brick connector they send
(``nova_xhv.backends.family.CONNECTOR_FAMILY_KEY``).  The family's facts
(``Family.volume_attach``; read from ``nova_xhv.backends.family``, which
imports nothing of Nova) say which ``driver_volume_type`` and which stored
formats its backend attaches as they are.  File volumes (NFS & co) need no
per-family answer: every family that declares the type mounts the same
share and opens the same file (vSphere through a NAS datastore and a
descriptor), so the inner driver's connection info serves them all, and
XHV only adds what it knows (family, format) or refuses, with the reason,
what the family cannot open.  Nothing is converted here:
``initialize_connection`` is an RPC with a 60 s timeout.  A volume in a
format a family cannot open is retyped first (XHV's format-aware
migration), as its own step.

Connectors without the key (stock Nova drivers, os-brick callers) get the
inner driver's answer unchanged.
"""

from oslo_log import log as logging

from cinder import exception

from nova_xhv.backends import family as backend_family

LOG = logging.getLogger(__name__)

FAMILY_KEY = backend_family.CONNECTOR_FAMILY_KEY
# storage_protocol spellings of the volume types families declare.
PROTOCOL_ALIASES = {'fc': 'fibre_channel', 'ceph': 'rbd',
                    'nvme-of': 'nvmeof', 'nvme': 'nvmeof'}
BLOCK_FORMAT = 'raw'


def volume_type_of(protocol):
    key = str(protocol or '').strip().lower()
    return PROTOCOL_ALIASES.get(key, key)


def connector_family(connector):
    """The XHV family named by a connector, or None (a stock connector)."""
    name = (connector or {}).get(FAMILY_KEY)
    if not name:
        return None
    try:
        return backend_family.lookup(name)
    except backend_family.UnknownFamily as error:
        raise exception.InvalidConnectorException(
            missing='a hypervisor family this cinder-volume knows (%s)'
                    % error)


def attach_families(storage_protocol, stored_format=None):
    """Sorted families whose backends attach these volumes as they are."""
    protocols = storage_protocol
    if not isinstance(protocols, (list, tuple)):
        protocols = [protocols]
    found = set()
    for protocol in protocols:
        kind = volume_type_of(protocol)
        fmt = stored_format if kind in backend_family.FILE_VOLUME_TYPES \
            else BLOCK_FORMAT
        found.update(backend_family.families_attaching(kind, fmt))
    return sorted(found)


def for_connector(volume, connector, info, recorded_format):
    """The inner driver's ``info``, checked and annotated for the family."""
    facts = connector_family(connector)
    if facts is None or not info:
        return info
    kind = volume_type_of(info.get('driver_volume_type'))
    data = info.setdefault('data', {})
    if kind in backend_family.FILE_VOLUME_TYPES:
        fmt = data.get('format') or recorded_format or 'raw'
    else:
        fmt = BLOCK_FORMAT
    if not facts.attaches(kind, fmt):
        others = backend_family.families_attaching(kind, fmt)
        reason = ('volume %s is a %s volume stored as %s, which the %s '
                  'family does not attach (%s attaches %s). %s'
                  % (volume.id, kind, fmt, facts.name, facts.name,
                     _declared(facts),
                     'Families that do: %s.' % ', '.join(others) if others
                     else 'No installed family does.'))
        if kind in backend_family.FILE_VOLUME_TYPES and any(
                facts.attaches(kind, f) for f in ('raw', 'qcow2')):
            reason += (' Retype the volume to a backend storing a format '
                       'it attaches; XHV converts it there.')
        LOG.warning('Refusing to connect volume %s to a %s compute: %s',
                    volume.id, facts.name, reason)
        raise exception.VolumeBackendAPIException(data=reason)
    data[FAMILY_KEY] = facts.name
    data.setdefault('format', fmt)
    return info


def _declared(facts):
    return '; '.join('%s in %s' % (kind, '/'.join(fmts))
                     for kind, fmts in sorted(facts.volume_attach.items())
                     ) or 'no volumes'
