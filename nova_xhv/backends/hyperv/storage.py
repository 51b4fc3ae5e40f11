"""The host's VM storage, reached over SMB (smbprotocol).

The share ``\\\\<host>\\<smb_share>`` exposes ``vm_path``; XHV names files
by their path relative to it (``<uuid>/disk-0.vhdx``), which is the same
file as ``<vm_path>\\<uuid>\\disk-0.vhdx`` for the cmdlets.  Relative
paths are XHV's own (uuids and fixed names); anything else is refused.
"""

import logging as std_logging
import re
import shutil
import threading

from nova import exception
from oslo_log import log as logging

try:
    import smbclient
    from smbclient import shutil as smb_shutil
    from smbprotocol import exceptions as smb_exc
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = ('the XHV hyperv backend needs smbprotocol: pip install '
           '"openstack-xhv[hyperv]" (%s)' % exc)
    raise ImportError(msg, name='smbclient') from exc

from nova_xhv import disk as xhv_disk

LOG = logging.getLogger(__name__)
# smbprotocol logs every SMB message at INFO: nova-compute's log is not the
# place (an operator's own level for these loggers wins).
for _name in ('smbprotocol', 'smbclient'):
    if std_logging.getLogger(_name).level == std_logging.NOTSET:
        std_logging.getLogger(_name).setLevel(std_logging.WARNING)
COPY_CHUNK = 4 * 1024 * 1024
PART = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')


class HyperVStorageError(exception.NovaException):
    msg_fmt = 'Hyper-V storage %(share)s: %(reason)s'


def _parts(relative):
    parts = relative.split('/')
    if not parts or any(not PART.match(p) or p in ('.', '..')
                        for p in parts):
        raise ValueError('not a path XHV makes on the share: %r' % relative)
    return parts


class Share(object):

    def __init__(self, host, port, share, username, password, vm_path,
                 encrypt=True, timeout=60):
        self.host = host
        self.share = share
        self.vm_path = vm_path.rstrip('\\')
        self._kwargs = dict(username=username, password=password, port=port,
                            encrypt=encrypt, connection_timeout=timeout)
        self.label = '\\\\%s\\%s' % (host, share)

    def close(self):
        """Drop the pooled SMB session (smbclient's pool is per process)."""
        try:
            smbclient.delete_session(self.host, port=self._kwargs['port'])
        except (OSError, ValueError, smb_exc.SMBException) as exc:
            LOG.debug('Closing the SMB session to %s: %s', self.label, exc)

    def unc(self, relative=''):
        parts = _parts(relative) if relative else []
        return '\\'.join([self.label] + parts)

    def windows_path(self, relative):
        return '\\'.join([self.vm_path] + _parts(relative))

    def relative(self, windows_path):
        """The share-relative path of a file under vm_path, or None."""
        prefix = self.vm_path.lower() + '\\'
        if not windows_path.lower().startswith(prefix):
            return None
        relative = windows_path[len(prefix):].replace('\\', '/')
        try:
            _parts(relative)
        except ValueError:
            return None
        return relative

    def url(self, relative):
        return 'smb://%s:%d/%s/%s' % (self.host, self._kwargs['port'],
                                      self.share, '/'.join(_parts(relative)))

    def _error(self, what, exc):
        return HyperVStorageError(share=self.label,
                                  reason='%s: %s' % (what, exc))

    def check(self):
        try:
            smbclient.listdir(self.unc(), **self._kwargs)
        except (OSError, ValueError, smb_exc.SMBException) as exc:
            raise self._error('cannot list the share', exc)

    def exists(self, relative):
        try:
            smbclient.stat(self.unc(relative), **self._kwargs)
            return True
        except FileNotFoundError:
            return False
        except (OSError, smb_exc.SMBException) as exc:
            if getattr(exc, 'errno', None) == 2:
                return False
            raise self._error('cannot look at %s' % relative, exc)

    def mkdir(self, relative):
        try:
            smbclient.mkdir(self.unc(relative), **self._kwargs)
        except (OSError, smb_exc.SMBException) as exc:
            raise self._error('cannot create %s' % relative, exc)

    def upload(self, local, relative):
        with open(local, 'rb') as source:
            try:
                with smbclient.open_file(self.unc(relative), mode='xb',
                                         **self._kwargs) as target:
                    shutil.copyfileobj(source, target, COPY_CHUNK)
            except (OSError, smb_exc.SMBException) as exc:
                raise self._error('cannot write %s' % relative, exc)

    def download(self, relative, local):
        try:
            with smbclient.open_file(self.unc(relative), mode='rb',
                                     share_access='r',
                                     **self._kwargs) as source, \
                    open(local, 'xb') as target:
                shutil.copyfileobj(source, target, COPY_CHUNK)
        except (OSError, smb_exc.SMBException) as exc:
            raise self._error('cannot read %s' % relative, exc)

    def rename(self, relative, new_relative):
        try:
            smbclient.rename(self.unc(relative), self.unc(new_relative),
                             **self._kwargs)
        except (OSError, smb_exc.SMBException) as exc:
            raise self._error('cannot rename %s to %s'
                              % (relative, new_relative), exc)

    def remove_tree(self, relative):
        """Remove a folder and everything in it; fine if it is gone."""
        if not self.exists(relative):
            return
        try:
            smb_shutil.rmtree(self.unc(relative), **self._kwargs)
        except (OSError, smb_exc.SMBException) as exc:
            raise self._error('cannot remove %s' % relative, exc)

    def reader(self, relative):
        return SMBReader(self, relative)


class SMBReader(xhv_disk.DiskReader):
    """An exported disk read in place on the share (Range reads).

    The exchange serves concurrent Range requests from one reader: each
    read seeks and reads under a lock.
    """

    def __init__(self, share, relative):
        self.share = share
        self.relative = relative
        self._lock = threading.Lock()
        try:
            self._file = smbclient.open_file(
                share.unc(relative), mode='rb', share_access='r',
                buffering=0, **share._kwargs)
            self.size = smbclient.stat(share.unc(relative),
                                       **share._kwargs).st_size
        except (OSError, smb_exc.SMBException) as exc:
            raise share._error('cannot open %s' % relative, exc)

    def iter_range(self, start, end, chunk=1024 * 1024):
        offset = start
        while offset <= end:
            try:
                with self._lock:
                    self._file.seek(offset)
                    data = self._file.read(min(chunk, end - offset + 1))
            except smb_exc.SMBException as exc:
                raise OSError('%s: %s' % (self.relative, exc))
            if not data:
                raise OSError('%s ended at %d, before byte %d'
                              % (self.relative, offset, end))
            yield data
            offset += len(data)

    def close(self):
        self._file.close()

    def __repr__(self):
        return 'SMBReader(%r)' % self.share.unc(self.relative)
