"""The connection info of an XHV raw volume file on an NFS export.

vSphere, Hyper-V and Xen attach XHV's raw NFS volume files in place, each
through its own path to the export; all three read the same os-brick
``nfs`` connection info.  What differs per family is the exception it
raises and which file names its host can take.
"""

from nova import exception


def raw_file_volume(connection_info, family, error, name_ok):
    """(nfs host, export path, file name) of a raw XHV NFS volume.

    :param family: the family's name for the operator's message.
    :param error: the family's exception class (takes ``reason``).
    :param name_ok: whether a volume file name is usable on this family.
    """
    kind = connection_info.get('driver_volume_type')
    data = connection_info.get('data') or {}
    if kind != 'nfs':
        raise exception.VolumeDriverNotFound(driver_type=kind)
    fmt = data.get('format') or 'raw'
    if fmt != 'raw':
        raise error(
            reason='the volume is stored as %s; %s attaches raw (XHV) '
                   'volume files in place only. Retype it to a raw volume '
                   'type first: XHV converts it there.' % (fmt, family))
    host, sep, path = (data.get('export') or '').partition(':')
    name = data.get('name') or ''
    if not (sep and host and path.startswith('/') and name):
        raise error(reason='NFS connection info without a host:/path '
                           'export and a file name')
    if not name_ok(name):
        raise error(reason='unusable volume file name %r' % name)
    return host, path.rstrip('/') or '/', name
