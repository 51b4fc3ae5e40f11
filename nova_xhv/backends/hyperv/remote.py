"""PowerShell on the Hyper-V host over WinRM (pywinrm), one shell reused.

``Remote.run(script, what)`` runs a script made by
nova_xhv.backends.hyperv.script and returns the JSON documents it printed
(one ``ConvertTo-Json -Compress`` line each).  Failures become
``HyperVCommandError`` naming the cmdlet and PowerShell's message (CLIXML
on stderr, a non-zero exit, a WS-Man fault); a host that cannot be
reached, refuses the credentials or fails TLS verification becomes
``HyperVConnectionError`` with what to check.
"""

import base64
import json
import re
import threading
from xml.etree import ElementTree as ET

from nova import exception
from oslo_log import log as logging
import requests
from requests import adapters

try:
    import winrm
    from winrm import exceptions as winrm_exc
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = ('the XHV hyperv backend needs pywinrm and smbprotocol: pip '
           'install "openstack-xhv[hyperv]" (%s)' % exc)
    raise ImportError(msg, name='winrm') from exc

from nova_xhv.translate import remote as tls  # noqa: E402

LOG = logging.getLogger(__name__)
SHELL_NOT_FOUND = 2150858843
# cmd.exe takes 8191 characters, "powershell.exe -NoProfile ..." included.
MAX_ENCODED = 8000
CLIXML_ESCAPE = re.compile(r'_x([0-9A-Fa-f]{4})_')
ERROR_LINE = re.compile(r'^([A-Za-z]+-[A-Za-z]+) : (.*)$', re.S)


class HyperVCommandError(exception.NovaException):
    msg_fmt = 'Hyper-V host %(host)s: %(cmdlet)s failed: %(reason)s'


class HyperVConnectionError(exception.NovaException):
    msg_fmt = 'Hyper-V host %(host)s: %(reason)s'


def _clixml_errors(stderr):
    """The error text of PowerShell's CLIXML stderr (or plain stderr)."""
    text = stderr.decode('utf-8', errors='replace')
    if not text.startswith('#< CLIXML'):
        return text.strip()
    body = text.split('\n', 1)[1] if '\n' in text else ''
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body.strip()
    lines = [node.text or '' for node in root.iter()
             if node.tag.endswith('}S') and node.get('S') == 'Error']
    joined = CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)),
                               ''.join(lines))
    return joined.strip()


def parse_error(stderr, what):
    """(cmdlet, message) of a failed script; ``what`` if none is named."""
    text = _clixml_errors(stderr) or 'no error text'
    first = text.split('\n    + ', 1)[0].strip()
    match = ERROR_LINE.match(first)
    if match:
        return match.group(1), match.group(2).strip()
    return what, first


class _TLSAdapter(adapters.HTTPAdapter):
    """urllib3 pools with our SSL context.

    See tls.ssl_context: under eventlet urllib3's own contexts recurse
    until RecursionError.
    """

    def __init__(self, context):
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs['ssl_context'] = self._context
        super().init_poolmanager(*args, **kwargs)


class Remote(object):
    """One WinRM endpoint and the shell XHV keeps open on it."""

    def __init__(self, host, port, use_https, transport, username, password,
                 ca_file=None, insecure=False, operation_timeout=60):
        scheme = 'https' if use_https else 'http'
        port = port or (5986 if use_https else 5985)
        self.host = host
        self.endpoint = '%s://%s:%d/wsman' % (scheme, host, port)
        self._args = dict(
            transport='basic' if transport == 'basic' else transport,
            username=username, password=password,
            server_cert_validation='ignore' if insecure else 'validate',
            ca_trust_path=ca_file or None,
            operation_timeout_sec=operation_timeout,
            read_timeout_sec=operation_timeout + 10,
            # Only what this option set says: no proxy from the
            # environment between nova-compute and its host.
            proxy=None)
        self._protocol = None
        self._shell = None
        self._lock = threading.Lock()

    def _connect(self):
        if self._protocol is None:
            protocol = winrm.Protocol(self.endpoint, **self._args)
            if self.endpoint.startswith('https:'):
                # pywinrm verifies as told (ca_trust_path / ignore); the
                # context carries the same choice.
                session = protocol.transport.build_session()
                session.mount('https://', _TLSAdapter(tls.ssl_context(
                    self._args['ca_trust_path'],
                    self._args['server_cert_validation'] == 'ignore')))
            self._protocol = protocol
        if self._shell is None:
            self._shell = self._protocol.open_shell(codepage=65001,
                                                    noprofile=True)
        return self._protocol, self._shell

    def close(self):
        with self._lock:
            if self._protocol is not None and self._shell is not None:
                try:
                    self._protocol.close_shell(self._shell)
                except Exception as exc:  # noqa: BLE001 - best effort
                    LOG.debug('Closing the WinRM shell on %s: %s',
                              self.host, exc)
            self._protocol = None
            self._shell = None

    def _connection_error(self, exc):
        if isinstance(exc, winrm_exc.InvalidCredentialsError):
            reason = ('WinRM at %s rejected the credentials of user %s'
                      % (self.endpoint, self._args['username']))
        elif isinstance(exc, requests.exceptions.SSLError):
            reason = ('TLS verification of %s failed (%s); set [xhv_hyperv] '
                      'ca_file to the CA that signed the host\'s WinRM '
                      'certificate' % (self.endpoint, exc))
        elif isinstance(exc, (requests.exceptions.ConnectionError,
                              requests.exceptions.Timeout)):
            reason = 'WinRM at %s is unreachable: %s' % (self.endpoint, exc)
        else:
            reason = 'WinRM at %s failed: %s' % (self.endpoint, exc)
        return HyperVConnectionError(host=self.host, reason=reason)

    def _execute(self, script):
        protocol, shell = self._connect()
        encoded = base64.b64encode(script.encode('utf-16-le')).decode()
        command = protocol.run_command(shell, 'powershell.exe', [
            '-NoProfile', '-NonInteractive', '-EncodedCommand', encoded])
        try:
            return protocol.get_command_output(shell, command)
        finally:
            protocol.cleanup_command(shell, command)

    def run(self, script, what):
        """The JSON documents ``script`` printed; ``what``: its cmdlet."""
        if len(script) * 8 // 3 + 4 > MAX_ENCODED:
            raise HyperVCommandError(
                host=self.host, cmdlet=what,
                reason='a %d-character script does not fit on a Windows '
                       'command line' % len(script))
        with self._lock:
            try:
                try:
                    out, err, code = self._execute(script)
                except winrm_exc.WSManFaultError as exc:
                    if exc.wsman_fault_code != SHELL_NOT_FOUND:
                        raise
                    # The host dropped our shell (restart, idle timeout):
                    # the command never ran; open a new shell, once.
                    self._shell = None
                    out, err, code = self._execute(script)
            except winrm_exc.WSManFaultError as exc:
                self._shell = None
                raise HyperVCommandError(
                    host=self.host, cmdlet=what,
                    reason='WS-Management fault %s: %s'
                    % (exc.wsman_fault_code, exc.reason))
            except (winrm_exc.WinRMError, winrm_exc.WinRMTransportError,
                    requests.exceptions.RequestException) as exc:
                self._protocol = self._shell = None
                raise self._connection_error(exc)
        if code != 0 or err.startswith(b'#< CLIXML') and b'S="Error"' in err:
            cmdlet, message = parse_error(err, what)
            raise HyperVCommandError(host=self.host, cmdlet=cmdlet,
                                     reason=message)
        docs = []
        for line in out.decode('utf-8', errors='strict').splitlines():
            line = line.strip()
            if line:
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    raise HyperVCommandError(
                        host=self.host, cmdlet=what,
                        reason='output is not JSON: %r' % line[:200])
        return docs


def as_list(doc):
    """ConvertTo-Json writes one object bare and none at all: a list."""
    if doc is None:
        return []
    return doc if isinstance(doc, list) else [doc]
