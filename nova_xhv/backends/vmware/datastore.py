"""Datastore files over vSphere's HTTP file API (``/folder``), with the SOAP
session cookie and the same TLS verification as the API."""

import os
import threading
import urllib.parse

from oslo_log import log as logging
from pyVmomi import vim

from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import transfer
from nova_xhv import disk as xhv_disk

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

    def locate(self, url):
        """(datastore name, path) of a URL made by ``url()``."""
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        if (parsed.netloc != self.session.endpoint
                or not parsed.path.startswith('/folder/')
                or len(query.get('dsName', ())) != 1):
            raise ValueError('not a datastore file URL of %s: %s'
                             % (self.session.endpoint, url))
        return (query['dsName'][0],
                urllib.parse.unquote(parsed.path[len('/folder/'):]))

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

    def write(self, data, ds_name, path):
        """Write ``data`` (bytes) as the datastore file ``path``."""
        resp = self._request(
            'PUT', ds_name, path, body=data,
            headers={'Content-Type': 'application/octet-stream',
                     'Content-Length': str(len(data))})
        if resp.status not in (200, 201):
            self._fail(resp, 'PUT', ds_name, path)
        resp.close()

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

    def size(self, ds_name, path):
        """The file's size in bytes (HEAD), or None if it does not exist."""
        resp = self._request('HEAD', ds_name, path)
        with resp:
            if resp.status == 404:
                return None
            length = resp.header('Content-Length')
            if resp.status != 200 or not (length or '').isdigit():
                self._fail(resp, 'HEAD', ds_name, path)
        return int(length)

    def reader(self, ds_name, path, size, direct=False):
        return DatastoreReader(self, ds_name, path, size, direct=direct)


class DatastoreReader(xhv_disk.DiskReader):
    """A datastore file read in place with Range requests.

    vCenter and ESXi answer Range GETs on ``/folder`` (virt-v2v's https
    input relies on it), so an exported disk is streamed from where it is
    stored instead of being copied to the compute first.  Keeps a few
    keep-alive connections: qemu reads a disk as many Range requests.
    """

    MAX_IDLE = 4

    def __init__(self, files, ds_name, path, size, direct=False):
        self._files = files
        self.ds_name = ds_name
        self.path = path
        self.size = size
        self._direct = direct
        self._url = files.url(ds_name, path)
        self._request_path = transfer.request_path(self._url)
        self._idle = []
        self._lock = threading.Lock()
        self._closed = False

    def _connection(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return transfer.connect(self._files.session, self._url,
                                self._files.timeout)[0]

    def _give_back(self, conn):
        with self._lock:
            if not self._closed and len(self._idle) < self.MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def iter_range(self, start, end, chunk=transfer.CHUNK):
        conn = self._connection()
        reusable = False
        try:
            conn.request('GET', self._request_path, headers={
                'Cookie': self._files.session.cookie,
                'Range': 'bytes=%d-%d' % (start, end)})
            resp = conn.getresponse()
            expected = 'bytes %d-%d/%d' % (start, end, self.size)
            if resp.status != 206 or \
                    resp.getheader('Content-Range') != expected:
                resp.read(4096)
                raise OSError('GET [%s] %s bytes %d-%d: HTTP %d %s (%s)' % (
                    self.ds_name, self.path, start, end, resp.status,
                    resp.reason, resp.getheader('Content-Range')))
            left = end - start + 1
            while left:
                data = resp.read(min(chunk, left))
                if not data:
                    raise OSError('[%s] %s: connection closed with %d bytes '
                                  'of the range left' % (self.ds_name,
                                                         self.path, left))
                left -= len(data)
                yield data
            reusable = not resp.will_close
        finally:
            if reusable:
                self._give_back(conn)
            else:
                conn.close()

    def direct_read(self):
        """A one-time vSphere ticket for one GET of this file, or None.

        vSphere's generic service tickets (SessionManager.
        AcquireGenericServiceTicket) are good for one request with the
        method and URL they were acquired for, sent as the
        ``vmware_cgi_ticket`` cookie: a peer can read this one file once,
        and nothing else, without our session.
        """
        if not self._direct:
            return None
        session = self._files.session
        spec = vim.SessionManager.HttpServiceRequestSpec(
            method=vim.SessionManager.HttpServiceRequestSpec.Method.httpGet,
            url=self._url)
        ticket = session.run(
            'acquire a ticket to read [%s] %s' % (self.ds_name, self.path),
            session.content.sessionManager.AcquireGenericServiceTicket,
            spec=spec)
        ca_pem = None
        if session.ca_file and not session.insecure:
            with open(session.ca_file) as f:
                ca_pem = f.read()
        return xhv_disk.DirectRead(
            url=self._url,
            headers={'Cookie': 'vmware_cgi_ticket=%s' % ticket.id},
            ca_pem=ca_pem, insecure=session.insecure)

    def close(self):
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __repr__(self):
        return 'DatastoreReader([%s] %s)' % (self.ds_name, self.path)
