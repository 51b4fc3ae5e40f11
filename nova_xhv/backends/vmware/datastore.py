"""Datastore files over vSphere's HTTP file API (``/folder``), with the SOAP
session cookie and the same TLS verification as the API."""

import os
import urllib.parse

from oslo_log import log as logging

from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import transfer

LOG = logging.getLogger(__name__)


def split_path(ds_path):
    """'[ds] dir/file.vmdk' -> ('ds', 'dir/file.vmdk')."""
    if not ds_path.startswith('['):
        msg = 'not a datastore path: %r' % ds_path
        raise ValueError(msg)
    name, _, rest = ds_path[1:].partition(']')
    return name, rest.strip()


class DatastoreFiles:

    def __init__(self, session, datacenter_name, timeout):
        self.session = session
        self.datacenter_name = datacenter_name
        self.timeout = timeout

    def url(self, ds_name, path):
        query = urllib.parse.urlencode({'dcPath': self.datacenter_name,
                                        'dsName': ds_name})
        return 'https://%s/folder/%s?%s' % (
            self.session.endpoint, urllib.parse.quote(path), query)

    def _request(self, method, ds_name, path, body=None, headers=None):
        try:
            return transfer.request(self.session, method,
                                    self.url(ds_name, path), body=body,
                                    headers=headers, timeout=self.timeout)
        except OSError as exc:
            raise errors.VSphereError(
                what='%s [%s] %s' % (method, ds_name, path),
                fault=type(exc).__name__, detail=str(exc))

    def _fail(self, resp, method, ds_name, path):
        detail = resp.read()[:200].decode(errors='replace') or resp.reason
        resp.close()
        raise errors.VSphereError(
            what='%s [%s] %s' % (method, ds_name, path),
            fault='HTTP %d' % resp.status, detail=detail)

    def upload(self, local_path, ds_name, path):
        size = os.path.getsize(local_path)
        with open(local_path, 'rb') as f:
            resp = self._request(
                'PUT', ds_name, path, body=f,
                headers={'Content-Type': 'application/octet-stream',
                         'Content-Length': str(size)})
        if resp.status not in (200, 201):
            self._fail(resp, 'PUT', ds_name, path)
        resp.close()
        LOG.debug('Uploaded %s (%d bytes) to [%s] %s', local_path, size,
                  ds_name, path)

    def read(self, ds_name, path, length=None):
        """The file's bytes (the first ``length`` if given).

        None when the file does not exist.
        """
        headers = {'Range': 'bytes=0-%d' % (length - 1)} if length else {}
        resp = self._request('GET', ds_name, path, headers=headers)
        if resp.status == 404:
            resp.close()
            return None
        if resp.status not in (200, 206):
            self._fail(resp, 'GET', ds_name, path)
        with resp:
            data = resp.read()
        return data[:length] if length else data

    def download(self, ds_name, path, local_path):
        resp = self._request('GET', ds_name, path)
        if resp.status != 200:
            self._fail(resp, 'GET', ds_name, path)
        with resp, open(local_path, 'wb') as f:
            for chunk in resp.iter_content():
                f.write(chunk)
        return os.path.getsize(local_path)
