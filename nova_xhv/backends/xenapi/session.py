"""One logged-in XenAPI session with the pool master, and its failures.

``XenAPI.Session`` (the SDK, unmodified) logs in again by itself when xapi
answers SESSION_INVALID (a master restart, an expired session) and
repeats the call; ``XapiSession`` adds TLS verification (on by default,
with ``ca_file``), socket timeouts, one call at a time per connection, the
raw VDI transfers (``/import_raw_vdi``, ``/export_raw_vdi``) on the same
session, and turns failures into Nova exceptions that keep xapi's error
code (``XapiError.kwargs['xapi_code']``).  The session reference is a
credential: it goes in transfer URLs only, never in a log or a message.
"""

import http.client
import re
import socket
import ssl
import threading
import urllib.parse
import xmlrpc.client

from nova import exception
from nova.i18n import _
from oslo_log import log as logging
import requests
from requests import adapters

try:
    import XenAPI
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = ('the XHV xenapi backend needs the XenAPI SDK: pip install '
           '"openstack-xhv[xenapi]" (%s)' % exc)
    raise ImportError(msg, name='XenAPI') from exc

LOG = logging.getLogger(__name__)
ORIGINATOR = 'openstack-xhv'
CHUNK = 1 << 20


class XapiError(exception.NovaException):
    msg_fmt = _('xapi call %(what)s failed with %(xapi_code)s: %(detail)s')


class XapiConnectionError(XapiError):
    msg_fmt = _('Cannot use the XenServer pool master %(endpoint)s: '
                '%(detail)s')


class XapiConfigError(XapiError):
    msg_fmt = _('[xhv_xenapi] configuration problem: %(detail)s')


class XapiTransferError(XapiError):
    msg_fmt = _('Disk transfer %(what)s of VDI %(vdi)s failed: %(detail)s')


def error_code(exc):
    """The xapi error code an XHV exception was made from, else None."""
    return exc.kwargs.get('xapi_code') if isinstance(exc, XapiError) else None


def translate(failure, what, instance=None):
    """A Nova exception for ``XenAPI.Failure`` raised by call ``what``."""
    details = [str(d) for d in (failure.details or ['UNKNOWN'])]
    code = details[0]
    uuid = getattr(instance, 'uuid', None)
    if uuid and code == 'HANDLE_INVALID' and details[1:2] == ['VM']:
        return exception.InstanceNotFound(instance_id=uuid)
    if uuid and code == 'VM_BAD_POWER_STATE':
        state = details[3] if len(details) > 3 else '?'
        return exception.InstanceInvalidState(
            instance_uuid=uuid, attr='power_state', state=state,
            method='%s (xapi VM_BAD_POWER_STATE)' % what)
    # Refs are opaque noise in a message; codes and values are not.
    detail = ', '.join(d for d in details[1:]
                       if not d.startswith('OpaqueRef:')) or '-'
    return XapiError(what=what, xapi_code=code, detail=detail[:500])


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout, context):
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class _TLSAdapter(adapters.HTTPAdapter):
    """Hands urllib3 our own SSL context.

    Made when called, so a green one under eventlet; urllib3's own
    recurses there (eventlet#371).
    """

    def __init__(self, context):
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs['ssl_context'] = self._context
        super().init_poolmanager(*args, **kwargs)


class XapiSession(object):
    """The pool master's API for one nova-compute (see module doc)."""

    def __init__(self, url, username, password, ca_file=None, insecure=False,
                 api_timeout=120, transfer_timeout=3600):
        self.url = (url or '').rstrip('/')
        self._username = username
        self._password = password
        self._ca_file = ca_file
        self._insecure = insecure
        self._api_timeout = api_timeout
        self._transfer_timeout = transfer_timeout
        self._session = None
        self._lock = threading.RLock()

    # -- connection --------------------------------------------------------

    def _endpoint(self):
        parts = urllib.parse.urlsplit(self.url)
        return '%s://%s' % (parts.scheme, parts.netloc)

    def _tls_context(self):
        if self._insecure:
            return ssl._create_unverified_context()
        return ssl.create_default_context(cafile=self._ca_file or None)

    def connect(self):
        """Log in; XapiConnectionError with the reason when it fails."""
        if not self.url:
            raise XapiConfigError(detail='url is not set')
        if urllib.parse.urlsplit(self.url).scheme == 'https':
            transport = _TimeoutSafeTransport(self._api_timeout,
                                              self._tls_context())
        else:
            transport = _TimeoutTransport(self._api_timeout)
        session = XenAPI.Session(self.url, transport=transport)
        try:
            session.xenapi.login_with_password(
                self._username or '', self._password or '', '2.0',
                ORIGINATOR)
        except XenAPI.Failure as failure:
            code = str((failure.details or ['?'])[0])
            detail = code
            if code == 'SESSION_AUTHENTICATION_FAILED':
                detail = ('the pool master refused user %r '
                          '(SESSION_AUTHENTICATION_FAILED): check '
                          '[xhv_xenapi] username and password'
                          % self._username)
            raise XapiConnectionError(endpoint=self._endpoint(),
                                      detail=detail, xapi_code=code)
        except ssl.SSLError as exc:
            raise XapiConnectionError(
                endpoint=self._endpoint(), xapi_code='TLS',
                detail='TLS verification failed (%s): set [xhv_xenapi] '
                       'ca_file to the CA that signed the pool master\'s '
                       'certificate' % getattr(exc, 'verify_message', exc)
                       or exc)
        except (OSError, http.client.HTTPException,
                xmlrpc.client.Error) as exc:
            raise XapiConnectionError(endpoint=self._endpoint(),
                                      detail=str(exc)[:300],
                                      xapi_code=type(exc).__name__)
        with self._lock:
            self._session = session

    def logout(self):
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        try:
            session.xenapi.session.logout()
        except Exception as exc:  # the master may be gone already
            LOG.debug('xapi logout failed: %s', exc)

    @property
    def connected(self):
        return self._session is not None

    # -- calls -------------------------------------------------------------

    def call(self, method, *args, instance=None):
        """``session.xenapi.<method>(*args)``, failures as Nova errors."""
        with self._lock:
            if self._session is None:
                self.connect()
            target = self._session.xenapi
            for name in method.split('.'):
                target = getattr(target, name)
            try:
                return target(*args)
            except XenAPI.Failure as failure:
                raise translate(failure, method, instance)
            except (OSError, http.client.HTTPException,
                    xmlrpc.client.Error, socket.timeout) as exc:
                # A broken connection: the next call starts a new one.
                self._session = None
                raise XapiConnectionError(endpoint=self._endpoint(),
                                          detail='%s: %s' % (
                                              method, str(exc)[:300]),
                                          xapi_code=type(exc).__name__)

    # -- raw VDI transfers -------------------------------------------------

    def _handle(self):
        with self._lock:
            if self._session is None:
                self.connect()
            return self._session.handle

    def _transfer_url(self, handler, vdi_ref, fmt):
        # One cheap call first: the SDK logs in again if the session
        # expired, so the transfer carries a live one.
        self.call('pool.get_all')
        query = urllib.parse.urlencode({'session_id': self._handle(),
                                        'vdi': vdi_ref, 'format': fmt})
        return '%s/%s?%s' % (self.url, handler, query)

    def _http(self):
        http = requests.Session()
        http.verify = False if self._insecure else (self._ca_file or True)
        http.mount('https://', _TLSAdapter(self._tls_context()))
        return http

    def import_vdi(self, vdi_ref, vdi_uuid, path, fmt):
        """Upload local file ``path`` (``fmt`` vhd or raw) into a VDI."""
        for attempt in (1, 2):
            url = self._transfer_url('import_raw_vdi', vdi_ref, fmt)
            try:
                with open(path, 'rb') as data, self._http() as http:
                    response = http.put(url, data=data, verify=http.verify,
                                        timeout=self._transfer_timeout)
            except requests.RequestException as exc:
                raise XapiTransferError(what='import', vdi=vdi_uuid,
                                        xapi_code=type(exc).__name__,
                                        detail=_redact(str(exc)))
            if response.status_code != 401 or attempt == 2:
                break
            self._relogin()
        if response.status_code != 200:
            raise XapiTransferError(
                what='import', vdi=vdi_uuid,
                xapi_code='HTTP %d' % response.status_code,
                detail='HTTP %d: %s' % (response.status_code,
                                        response.text.strip()[:300]))

    def export_vdi(self, vdi_ref, vdi_uuid, path, fmt):
        """Download a VDI (``fmt`` vhd or raw) into local file ``path``."""
        try:
            self._export(vdi_ref, vdi_uuid, path, fmt)
        except _SessionExpired:
            self._relogin()
            self._export(vdi_ref, vdi_uuid, path, fmt)

    def _relogin(self):
        """A transfer was refused with 401: the session expired."""
        with self._lock:
            self._session = None
        self.connect()

    def _export(self, vdi_ref, vdi_uuid, path, fmt):
        url = self._transfer_url('export_raw_vdi', vdi_ref, fmt)
        try:
            with self._http() as http, http.get(
                    url, stream=True, verify=http.verify,
                    timeout=self._transfer_timeout) as response:
                if response.status_code == 401:
                    raise _SessionExpired()
                if response.status_code != 200:
                    raise XapiTransferError(
                        what='export', vdi=vdi_uuid,
                        xapi_code='HTTP %d' % response.status_code,
                        detail='HTTP %d: %s' % (
                            response.status_code,
                            response.text.strip()[:300]))
                expected = response.headers.get('Content-Length')
                written = 0
                with open(path, 'wb') as out:
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                if expected is not None and written != int(expected):
                    raise XapiTransferError(
                        what='export', vdi=vdi_uuid, xapi_code='SHORT_READ',
                        detail='got %d of %s bytes' % (written, expected))
        except requests.RequestException as exc:
            raise XapiTransferError(what='export', vdi=vdi_uuid,
                                    xapi_code=type(exc).__name__,
                                    detail=_redact(str(exc)))


class _SessionExpired(Exception):
    pass


def _redact(text):
    """Drop session refs from a message (requests quotes the URL)."""
    return re.sub(r'session_id=[^&\s\'"]+', 'session_id=***', text)[:300]
