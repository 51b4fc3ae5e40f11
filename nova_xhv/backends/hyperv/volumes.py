"""Cinder file volumes on Hyper-V, in place, without conversion.

Hyper-V opens virtual disks only: a ``.vhd``/``.vhdx`` file, local or on
an SMB 3 share (``Add-VMHardDiskDrive -Path \\\\filer\\share\\x.vhd``; the
way Cinder's old Windows SMB driver and os-win attached volumes).  It
never opens an NFS export nor a raw file.  XHV's volumes are raw files on
an NFS export (what KVM, vSphere and Xen open as they are), so:

* the export must also be reachable by the Hyper-V host over SMB, as a
  dual-protocol filer shows one folder to Linux (NFS) and Windows (SMB):
  ``[xhv_hyperv] volume_shares`` maps ``<nfs host>:<export path>`` to
  ``\\\\<smb host>\\<share>`` (an export below a mapped one is the same
  sub-folder of the share);
* a *fixed* VHD is its raw data followed by a 512-byte footer.  At
  attach XHV appends that footer to the volume file (the data are not
  touched, nothing is copied) and gives the file a second name ending in
  ``.vhd`` (an SMB hard link, ``<volume file>.xhv.vhd``), which Hyper-V
  attaches to the VM's SCSI controller; the guest writes straight into
  the volume's data.  At detach the drive goes, the footer is cut off
  again (the file is the raw volume it was, byte for byte) and the
  second name removed.

The footer is a function of the volume file's name and data size only,
so a footer is recognised as XHV's (and removed) only when the last 512
bytes are exactly that footer; a volume's own data never are by accident.
A compute that dies while a volume is attached leaves the footer: the next
attach or detach of that volume on Hyper-V finds it and goes on.
"""

import hashlib
import struct

from nova import exception
from oslo_log import log as logging

try:
    import smbclient
    from smbprotocol import exceptions as smb_exc
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError('the XHV hyperv backend needs smbprotocol: pip '
                      'install "openstack-xhv[hyperv]" (%s)' % exc,
                      name='smbclient') from exc

from nova_xhv.backends.hyperv import storage
from nova_xhv.backends import nfs_volume

LOG = logging.getLogger(__name__)

SECTOR = 512
FOOTER_SIZE = 512
LINK_SUFFIX = '.xhv.vhd'
# VHD specification (Microsoft, 2006), hard disk footer.
_COOKIE = b'conectix'
_FEATURES = 2
_VERSION = 0x00010000
_NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
_DISK_TYPE_FIXED = 2
# qemu reads the size of a VHD made by "qem2" from the footer, as
# Hyper-V and Xen always do (qemu's vpc driver, "creator app" table);
# a footer from any other unknown creator qemu sizes by CHS geometry.
_CREATOR_APP = b'qem2'
_CREATOR_VERSION = 0x00050003
_CREATOR_OS = b'Wi2k'


class HyperVVolumeError(exception.Invalid):
    msg_fmt = 'The XHV hyperv backend cannot attach this volume: %(reason)s'


def _geometry(size):
    """CHS geometry of the VHD specification's appendix for ``size``."""
    sectors = min(size // SECTOR, 65535 * 16 * 255)
    if sectors >= 65535 * 16 * 63:
        per_track, heads = 255, 16
        cylinder_times_heads = sectors // per_track
    else:
        per_track = 17
        cylinder_times_heads = sectors // per_track
        heads = max((cylinder_times_heads + 1023) // 1024, 4)
        if cylinder_times_heads >= heads * 1024 or heads > 16:
            per_track, heads = 31, 16
            cylinder_times_heads = sectors // per_track
        if cylinder_times_heads >= heads * 1024:
            per_track, heads = 63, 16
            cylinder_times_heads = sectors // per_track
    return cylinder_times_heads // heads, heads, per_track


def footer(name, size):
    """The fixed-VHD footer XHV writes after ``size`` bytes of ``name``."""
    cylinders, heads, per_track = _geometry(size)
    unique = hashlib.sha256(('xhv-volume:%s' % name).encode()).digest()[:16]
    fields = struct.pack(
        '>8sIIQI4sI4sQQHBBII16sB', _COOKIE, _FEATURES, _VERSION,
        _NO_DATA_OFFSET, 0, _CREATOR_APP, _CREATOR_VERSION, _CREATOR_OS,
        size, size, cylinders, heads, per_track, _DISK_TYPE_FIXED, 0,
        unique, 0)
    checksum = ~sum(fields) & 0xFFFFFFFF
    data = bytearray(fields.ljust(FOOTER_SIZE, b'\0'))
    struct.pack_into('>I', data, 64, checksum)
    return bytes(data)


def parse_mappings(pairs):
    """{(nfs host, export path): (smb host, share, [folders])}."""
    found = {}
    for pair in pairs or ():
        export, sep, unc = pair.partition('=')
        host, colon, path = export.strip().partition(':')
        unc = unc.strip()
        if not (sep and colon and host and path.startswith('/')
                and unc.startswith('\\\\')):
            raise ValueError('[xhv_hyperv] volume_shares: %r is not '
                             '<nfs host>:/<export path>=\\\\<smb host>\\'
                             '<share>' % pair)
        parts = unc[2:].rstrip('\\').split('\\')
        if len(parts) < 2 or not all(parts):
            raise ValueError('[xhv_hyperv] volume_shares: %r names no '
                             'share' % unc)
        for folder in parts[1:]:
            storage._parts(folder)
        key = (host, path.rstrip('/') or '/')
        found[key] = (parts[0], parts[1], parts[2:])
    return found


def file_volume(connection_info):
    """(nfs host, export path, file name) of a raw NFS volume's info."""
    return nfs_volume.raw_file_volume(connection_info, 'Hyper-V',
                                      HyperVVolumeError, _usable_name)


def _usable_name(name):
    try:
        storage._parts(name)
    except ValueError:
        return False
    return True


class VolumeShares(object):
    """The SMB side of the NFS exports Hyper-V attaches volumes from."""

    def __init__(self, mappings, port, username, password, encrypt=True,
                 timeout=60):
        self.mappings = mappings
        self._kwargs = dict(username=username, password=password, port=port,
                            encrypt=encrypt, connection_timeout=timeout)

    def unc_of(self, connection_info):
        """(UNC of the volume file, UNC of its .vhd name)."""
        host, path, name = file_volume(connection_info)
        for (mhost, mpath), (server, share, folders) in \
                self.mappings.items():
            if mhost != host:
                continue
            if path == mpath:
                below = []
            elif path.startswith(mpath.rstrip('/') + '/'):
                below = path[len(mpath.rstrip('/')) + 1:].split('/')
                try:
                    storage._parts('/'.join(below))
                except ValueError:
                    continue
            else:
                continue
            base = '\\'.join(['\\\\' + server, share] + folders + below)
            return base + '\\' + name, base + '\\' + name + LINK_SUFFIX
        raise HyperVVolumeError(
            reason='no SMB share of the NFS export %s:%s is known to this '
                   'compute: add %s:%s=\\\\<smb host>\\<share> to '
                   '[xhv_hyperv] volume_shares (Hyper-V opens volumes over '
                   'SMB only)' % (host, path, host, path))

    def check(self, connection_info):
        """Raise unless ``prepare`` could find the volume file; no change."""
        unc, _ = self.unc_of(connection_info)
        if self._size(unc) is None:
            raise HyperVVolumeError(
                reason='the volume file %s does not exist (is [xhv_hyperv] '
                       'volume_shares right for its export?)' % unc)

    def is_volume_path(self, windows_path):
        return (windows_path.startswith('\\\\') and
                windows_path.lower().endswith(LINK_SUFFIX))

    def _error(self, what, exc):
        return HyperVVolumeError(reason='%s: %s' % (what, exc))

    def _size(self, unc):
        try:
            return smbclient.stat(unc, **self._kwargs).st_size
        except FileNotFoundError:
            return None
        except (OSError, smb_exc.SMBException) as exc:
            if getattr(exc, 'errno', None) == 2:
                return None
            raise self._error('cannot look at %s' % unc, exc)

    def _tail(self, unc, size):
        with smbclient.open_file(unc, mode='rb', share_access='rwd',
                                 **self._kwargs) as f:
            f.seek(size - FOOTER_SIZE)
            return f.read(FOOTER_SIZE)

    def _has_footer(self, unc, name, size):
        return (size >= FOOTER_SIZE + SECTOR and
                self._tail(unc, size) == footer(name, size - FOOTER_SIZE))

    def prepare(self, connection_info):
        """Footer and .vhd name on the volume file; the .vhd's UNC."""
        unc, link = self.unc_of(connection_info)
        name = unc.rsplit('\\', 1)[1]
        try:
            size = self._size(unc)
            if size is None:
                raise HyperVVolumeError(reason='the volume file %s does not '
                                               'exist' % unc)
            if not self._has_footer(unc, name, size):
                if size <= 0 or size % SECTOR:
                    raise HyperVVolumeError(
                        reason='volume file %s is %d bytes, not a whole '
                               'number of 512-byte sectors' % (unc, size))
                with smbclient.open_file(unc, mode='r+b', share_access='rw',
                                         **self._kwargs) as f:
                    f.seek(size)
                    f.write(footer(name, size))
                LOG.info('Volume file %s: fixed VHD footer appended after '
                         '%d bytes of data', unc, size)
            if self._size(link) is None:
                smbclient.link(unc, link, **self._kwargs)
        except HyperVVolumeError:
            raise
        except (OSError, ValueError, smb_exc.SMBException) as exc:
            raise self._error('cannot prepare %s for Hyper-V' % unc, exc)
        return link

    def restore(self, connection_info=None, link=None):
        """Cut XHV's footer off and drop the .vhd name (idempotent)."""
        if link is None:
            unc, link = self.unc_of(connection_info)
        else:
            unc = link[:-len(LINK_SUFFIX)]
        name = unc.rsplit('\\', 1)[1]
        try:
            size = self._size(unc)
            if size is not None and self._has_footer(unc, name, size):
                smbclient.truncate(unc, size - FOOTER_SIZE, **self._kwargs)
                LOG.info('Volume file %s: fixed VHD footer removed (%d '
                         'bytes of data)', unc, size - FOOTER_SIZE)
            if self._size(link) is not None:
                smbclient.remove(link, **self._kwargs)
        except (OSError, ValueError, smb_exc.SMBException) as exc:
            raise self._error('cannot restore %s' % unc, exc)
