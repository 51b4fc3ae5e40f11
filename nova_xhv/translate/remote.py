"""Sources read over HTTP(S): inspected first, then streamed to qemu-img.

What is checked for a remote source, before qemu-img opens it:

* the server answers a HEAD (or a one-byte Range GET) with its size, and
  that size is at most ``max_virtual_size`` plus 1 % (a container cannot
  legitimately be much bigger than the disk it holds);
* the first 4 MiB, the last 1 MiB and, for VHDX, 1 MiB at the metadata
  region are fetched with Range requests (each answer must be a 206 of
  exactly the requested length) into a private sparse local copy of the
  same size, where unread bytes are zeros;
* that copy goes through exactly the local rules (``inspect.py``): format
  detection and claimed-format match, the inspector's safety checks, the
  extra header checks and the virtual-size cap.  Everything those rules
  read (qcow2 header and extensions, vmdk header, embedded descriptor and
  stream footer, VHD header/footer, VHDX region table and metadata, LUKS
  and MBR headers) lies in the fetched ranges;
* a VMware text descriptor (monolithicFlat) is refused: its extent would
  be another URL; download the pair into a staging folder instead.

The bytes inspected are read again, not copied: a source that changes
after inspection is caught where it matters.  The inspected ranges are
fetched in whole 1 MiB blocks and fingerprinted (SHA-256); every reader
of the source (the NBD bridge qemu-img reads through, the stream decoder)
checks each of those blocks again as it reads it and fails the read on a
difference, and every Range answer must name the inspected length.  Every
field that can make qemu open another file (qcow2 header and extensions,
vmdk header, descriptor and footer, VHD/VHDX headers and metadata) lies in
those blocks; and qemu opens the source with backing files disabled
(block_spec), so bytes that change elsewhere can only corrupt guest data.

qemu-img then reads the source through a local read-ahead NBD bridge
(``nbd_bridge.py``): the URL, credentials and CA stay in XHV's processes,
never in qemu-img's argv, and TLS is verified here, by ``ssl_context``.
"""

import dataclasses
import hashlib
import os
import shutil
import ssl
import tempfile
import typing
import urllib.parse

import requests
from requests import adapters

from nova_xhv.translate import exceptions
from nova_xhv.translate import formats
from nova_xhv.translate import headers
from nova_xhv.translate import vmdk_descriptor

HEAD_BYTES = 4 * 1024 * 1024
TAIL_BYTES = 1024 * 1024
VHDX_METADATA_BYTES = 1024 * 1024
HTTP_TIMEOUT = 60


class _Session(requests.Session):
    """A session whose ``verify`` wins over REQUESTS_CA_BUNDLE & co.

    requests lets the environment's CA bundle override a session-level
    ``verify`` (it merges per-request settings first); pass it per request.
    """

    def request(self, *args, **kwargs):
        kwargs.setdefault('verify', self.verify)
        return super().request(*args, **kwargs)


def ssl_context(ca_file=None, insecure=False):
    """A client SSL context that also works under eventlet.

    ``ssl.create_default_context`` is looked up when called, so once
    eventlet has monkey-patched ``ssl`` this is its green version.
    urllib3's own contexts come from the ``SSLContext`` class it bound at
    import: when urllib3 was imported before the patching (Nova's
    functional harness, a library importing requests early), setting
    ``minimum_version`` on one recurses until RecursionError
    (eventlet/eventlet#371), and its sockets would block every green
    thread.  Handing urllib3 our own context is requests' documented
    hook, needs no eventlet import and runs the same code on threads;
    verification stays as ``ca_file``/``insecure`` say.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _TLSAdapter(adapters.HTTPAdapter):
    """Hands urllib3 a context from ``ssl_context`` for every https pool."""

    def __init__(self, context):
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs['ssl_context'] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        proxy_kwargs.setdefault('ssl_context', self._context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


@dataclasses.dataclass
class DirectRead:
    """A one-time credential to read a whole disk where it is stored.

    A source whose storage speaks HTTPS (a vSphere datastore) can let a
    reader fetch the disk itself instead of through the source's own
    endpoint.  ``headers`` carry the credential, valid for ONE GET of
    ``url``; ``ca_pem`` is the CA that verifies ``url``'s server (None:
    the system trust store).  Never logged.
    """

    url: str
    headers: typing.Dict[str, str] = dataclasses.field(repr=False)
    ca_pem: typing.Optional[str] = dataclasses.field(default=None,
                                                     repr=False)
    insecure: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RemoteSource:
    """A disk readable over HTTP(S) with Range requests.

    ``direct`` (a DirectRead) offers the same bytes once more, in one GET
    from where they are stored: the stream decoder, which reads a source
    exactly once front to back, uses it and falls back to ``url`` if it
    cannot start; inspection and qemu-img always read ``url``.
    """

    url: str
    format: typing.Optional[str] = None
    username: typing.Optional[str] = None
    password: typing.Optional[str] = dataclasses.field(default=None,
                                                       repr=False)
    ca_file: typing.Optional[str] = None
    insecure: bool = False
    headers: typing.Dict[str, str] = dataclasses.field(default_factory=dict,
                                                       repr=False)
    direct: typing.Optional[DirectRead] = dataclasses.field(default=None,
                                                            repr=False)

    def __post_init__(self):
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ('http', 'https'):
            raise exceptions.UnsupportedFormat(
                'remote source %r must be an http:// or https:// URL' %
                self.url)
        if parts.username or parts.password:
            raise exceptions.TranslationError(
                'put credentials in RemoteSource username/password, never '
                'in the URL')

    @property
    def scheme(self):
        return urllib.parse.urlsplit(self.url).scheme

    def session(self):
        session = _Session()
        if self.username is not None:
            session.auth = (self.username, self.password or '')
        session.verify = False if self.insecure else (self.ca_file or True)
        session.mount('https://', _TLSAdapter(
            ssl_context(self.ca_file, self.insecure)))
        session.headers.update(self.headers)
        return session


def unreachable(url, exc):
    if isinstance(exc, requests.exceptions.SSLError):
        return exceptions.TLSVerificationFailed(
            'TLS verification of %s failed (%s); pass the CA that signed '
            'it as ca_file' % (url, exc))
    return exceptions.TranslationError('cannot read %s: %s' % (url, exc))


def open_range(session, url, start, end, size):
    """A streaming response holding exactly bytes ``start``..``end``.

    The answer must be a 206 whose Content-Range names that range of a
    ``size``-byte file: a server that ignores Range, or serves another
    file, is refused before a byte is used.
    """
    try:
        response = session.get(url, stream=True, timeout=HTTP_TIMEOUT,
                               headers={'Range': 'bytes=%d-%d' % (start,
                                                                  end)})
    except requests.RequestException as exc:
        raise unreachable(url, exc)
    expected = 'bytes %d-%d/%d' % (start, end, size)
    if response.status_code != 206 or \
            response.headers.get('Content-Range') != expected:
        response.close()
        raise exceptions.TranslationError(
            '%s answered bytes %d-%d with HTTP %d (%s); expected 206 %s' % (
                url, start, end, response.status_code,
                response.headers.get('Content-Range'), expected))
    return response


def _fetch(session, url, start, length):
    try:
        response = session.get(url, headers={
            'Range': 'bytes=%d-%d' % (start, start + length - 1)},
            timeout=HTTP_TIMEOUT, stream=True)
        with response:
            if response.status_code != 206:
                raise exceptions.TranslationError(
                    '%s answered a Range request with HTTP %d; the server '
                    'must support byte ranges' % (
                        url, response.status_code))
            data = response.raw.read(length + 1, decode_content=False)
    except requests.RequestException as exc:
        raise unreachable(url, exc)
    if len(data) != length:
        raise exceptions.TranslationError(
            '%s returned %d bytes for a %d-byte range' % (
                url, len(data), length))
    return data


def remote_size(session, url):
    """The size of the remote file, from HEAD or a one-byte Range GET."""
    try:
        response = session.head(url, timeout=HTTP_TIMEOUT,
                                allow_redirects=True)
    except requests.RequestException as exc:
        raise unreachable(url, exc)
    if response.status_code in (401, 403):
        raise exceptions.TranslationError(
            '%s refused our credentials (HTTP %d)' % (
                url, response.status_code))
    if response.status_code == 200 and \
            response.headers.get('Content-Length', '').isdigit():
        return int(response.headers['Content-Length'])
    try:
        response = session.get(url, headers={'Range': 'bytes=0-0'},
                               timeout=HTTP_TIMEOUT, stream=True)
    except requests.RequestException as exc:
        raise unreachable(url, exc)
    with response:
        total = response.headers.get('Content-Range', '').rpartition('/')[2]
        if response.status_code != 206 or not total.isdigit():
            raise exceptions.TranslationError(
                '%s does not report its size (HTTP %d); it must answer HEAD '
                'or Range requests' % (url, response.status_code))
    return int(total)


# The unit in which inspected bytes are fingerprinted; the NBD bridge
# serves the source in blocks of the same size (nbd_bridge.BLOCK).
INSPECTED_BLOCK = 1024 * 1024


def _aligned(start, length, size):
    """Whole INSPECTED_BLOCKs covering ``start``..``start + length``."""
    first = start // INSPECTED_BLOCK * INSPECTED_BLOCK
    end = min(size, -(-(start + length) // INSPECTED_BLOCK) *
              INSPECTED_BLOCK)
    return first, end - first


def _write_header_copy(session, source, f, size):
    """Fetch the inspected ranges; return (head, {block: sha256 hex}).

    Ranges are widened to whole blocks so the bridge can check every block
    it serves against what was inspected.
    """
    digests = {}

    def copy_range(start, length):
        start, length = _aligned(start, length, size)
        if length <= 0:
            return
        data = _fetch(session, source.url, start, length)
        f.seek(start)
        f.write(data)
        for offset in range(0, length, INSPECTED_BLOCK):
            digests[(start + offset) // INSPECTED_BLOCK] = hashlib.sha256(
                data[offset:offset + INSPECTED_BLOCK]).hexdigest()

    f.truncate(size)
    copy_range(0, HEAD_BYTES)
    if size > HEAD_BYTES:
        tail_start = max(HEAD_BYTES, size - TAIL_BYTES)
        copy_range(tail_start, size - tail_start)
    f.seek(0)
    head = f.read(vmdk_descriptor.MAX_DESCRIPTOR_BYTES)
    if head.startswith(b'vhdxfile'):
        offset = headers.vhdx_metadata_offset(f)
        if offset is not None and HEAD_BYTES <= offset < size:
            copy_range(offset, VHDX_METADATA_BYTES)
    f.flush()
    return head, digests


def inspect_remote(source, claimed_format=None, max_virtual_size=None,
                   scratch_dir=None, raise_on_unsafe=True):
    """Apply the local safety rules to a remote source (see module doc)."""
    # Imported here: the stream decoder's child reads remote sources but
    # never inspects, and inspect's imports (oslo.log, oslo.utils) would
    # double its start time.
    from nova_xhv.translate import inspect

    claimed = claimed_format or source.format
    cap = inspect.DEFAULT_MAX_VIRTUAL_SIZE if max_virtual_size is None \
        else max_virtual_size
    session = source.session()
    with session:
        size = remote_size(session, source.url)
        if size == 0 or size > cap + cap // 100:
            raise exceptions.UnsafeImage(source.url, [
                'remote file is %d bytes, outside 1 byte .. the limit of %d '
                '(max_virtual_size)' % (size, cap)])
        folder = tempfile.mkdtemp(prefix='xhv-remote-', dir=scratch_dir)
        try:
            copy = os.path.join(folder, 'header-copy')
            fd = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'r+b') as f:
                head, digests = _write_header_copy(session, source, f, size)
            if claimed in (None, formats.VMDK) and \
                    vmdk_descriptor.looks_like_descriptor(head):
                raise exceptions.UnsupportedFormat(
                    '%s is a VMware text descriptor (monolithicFlat): '
                    'download the descriptor and its flat extent into a '
                    'staging folder and convert them locally' % source.url)
            info, findings = inspect.inspect_findings(
                copy, claimed, staging_dir=None, max_virtual_size=cap)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    info.path = source.url
    info.data_path = None
    info.remote = source
    info.actual_size = size
    # What the readers check again: every block inspected must come back
    # identical (nbd_bridge, stream_child), or the read fails.
    info.inspected_blocks = digests
    if raise_on_unsafe:
        findings.raise_for(source.url)
    return info
