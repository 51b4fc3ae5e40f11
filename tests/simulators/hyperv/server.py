"""A WS-Management (WinRM) server for unmodified pywinrm, on a Hyper-V model.

Speaks what a Windows host's WinRM service speaks to pywinrm ([MS-WSMV]):
SOAP 1.2 on ``POST /wsman``, HTTP or HTTPS, with

* authentication: NTLM (``WWW-Authenticate: Negotiate``, pyspnego as the
  acceptor, channel binding checked over HTTPS) on a keep-alive
  connection, and Basic (refused over plain HTTP, as WinRM's
  AllowUnencrypted=false does);
* message encryption over HTTP after NTLM ("multipart/encrypted",
  application/HTTP-SPNEGO-session-encrypted; plain SOAP is refused there);
* the remote shell: transfer/Create, shell/Command, shell/Receive,
  shell/Signal, transfer/Delete, with WS-Man faults (unknown shell,
  unknown action, injected faults) as HTTP 500 SOAP faults.

A command must be ``powershell ... -EncodedCommand <base64 UTF-16LE>``;
the script runs in the model's PowerShell (model.py), its errors come
back as CLIXML on stderr with exit code 1.  Every script is appended to
``scripts.jsonl`` in the simulator's folder.  Run as
``python -m tests.simulators.hyperv.server --folder DIR ...``; it prints
``HYPERV_URL=<url>`` once it listens.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import ssl
import struct
import sys
import threading
import uuid
from xml.etree import ElementTree as ET
from xml.sax import saxutils

import spnego
from spnego import channel_bindings as cb
import spnego.exceptions

from tests.simulators.hyperv import model as hv_model
from tests.simulators.hyperv import powershell as ps

NS = {
    's': 'http://www.w3.org/2003/05/soap-envelope',
    'a': 'http://schemas.xmlsoap.org/ws/2004/08/addressing',
    'w': 'http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd',
    'rsp': 'http://schemas.microsoft.com/wbem/wsman/1/windows/shell',
}
SHELL_URI = 'http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd'
TRANSFER = 'http://schemas.xmlsoap.org/ws/2004/09/transfer/'
SHELL = 'http://schemas.microsoft.com/wbem/wsman/1/windows/shell/'
ACTION_CREATE = TRANSFER + 'Create'
ACTION_DELETE = TRANSFER + 'Delete'
ACTION_COMMAND = SHELL + 'Command'
ACTION_RECEIVE = SHELL + 'Receive'
ACTION_SIGNAL = SHELL + 'Signal'
ENCRYPTED_PROTOCOL = 'application/HTTP-SPNEGO-session-encrypted'
BOUNDARY = b'--Encrypted Boundary'
MAX_BODY = 1024 * 1024
CMD_LINE_MAX = 8191
# WS-Man fault codes (winerror.h) a Windows host sends.
ERROR_SHELL_NOT_FOUND = 2150858843
ERROR_ACTION_NOT_SUPPORTED = 2150858771
ERROR_INTERNAL = 2150858770


class WSManFault(Exception):
    def __init__(self, code, subcode, reason, sender=True):
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.sender = sender


class HttpError(Exception):
    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def _envelope(action, relates_to, body):
    return (
        '<s:Envelope xmlns:s="%(s)s" xmlns:a="%(a)s" xmlns:w="%(w)s" '
        'xmlns:rsp="%(rsp)s" xmlns:x="http://schemas.xmlsoap.org/ws/2004/'
        '09/transfer"><s:Header><a:Action>%(action)s</a:Action>'
        '<a:MessageID>uuid:%(id)s</a:MessageID><a:To>http://schemas.'
        'xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>'
        '<a:RelatesTo>%(rel)s</a:RelatesTo></s:Header><s:Body>%(body)s'
        '</s:Body></s:Envelope>' % dict(
            NS, action=action, id=str(uuid.uuid4()).upper(),
            rel=saxutils.escape(relates_to or ''), body=body)).encode()


def _fault_envelope(fault, relates_to):
    body = (
        '<s:Fault><s:Code><s:Value>s:%s</s:Value><s:Subcode><s:Value>'
        'w:%s</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang='
        '"en-US">%s</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f='
        '"http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="%d" '
        'Machine="xhv-hyperv-simulator"><f:Message>%s</f:Message>'
        '</f:WSManFault></s:Detail></s:Fault>' % (
            'Sender' if fault.sender else 'Receiver', fault.subcode,
            saxutils.escape(fault.reason), fault.code,
            saxutils.escape(fault.reason)))
    return _envelope('http://schemas.dmtf.org/wbem/wsman/1/wsman/fault',
                     relates_to, body)


class Simulator(object):
    """Shells and commands of one WinRM service, over one Hyper-V host."""

    def __init__(self, host, folder):
        self.host = host
        self.folder = folder
        self.shells = {}
        self.lock = threading.Lock()
        self.log_path = os.path.join(folder, 'scripts.jsonl')
        self.faults_path = os.path.join(folder, 'wsman-faults.json')

    def _injected(self, operation):
        try:
            with open(self.faults_path) as f:
                faults = json.load(f)
        except FileNotFoundError:
            return
        for fault in faults:
            if fault['operation'].lower() == operation.lower() and \
                    fault.get('times', 1) > 0:
                fault['times'] = fault.get('times', 1) - 1
                with open(self.faults_path, 'w') as f:
                    json.dump(faults, f)
                raise WSManFault(fault.get('code', ERROR_INTERNAL),
                                 fault.get('subcode', 'InternalError'),
                                 fault.get('message', 'injected fault'),
                                 sender=False)

    def handle(self, xml, user):
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise HttpError(400, 'malformed SOAP: %s' % exc)
        header = root.find('s:Header', NS)
        body = root.find('s:Body', NS)
        if root.tag != '{%s}Envelope' % NS['s'] or header is None \
                or body is None:
            raise HttpError(400, 'not a SOAP 1.2 envelope')
        action = (header.findtext('a:Action', '', NS) or '').strip()
        message_id = (header.findtext('a:MessageID', '', NS) or '').strip()
        resource = (header.findtext('w:ResourceURI', '', NS) or '').strip()
        try:
            if resource != SHELL_URI:
                raise WSManFault(ERROR_ACTION_NOT_SUPPORTED,
                                 'DestinationUnreachable',
                                 'The WS-Management service cannot process '
                                 'the request: resource %s is not modelled'
                                 % resource)
            selector = None
            for sel in header.findall('w:SelectorSet/w:Selector', NS):
                if sel.get('Name') == 'ShellId':
                    selector = (sel.text or '').strip()
            if action == ACTION_CREATE:
                self._injected('Create')
                return _envelope(TRANSFER + 'CreateResponse', message_id,
                                 self._create())
            shell = self._shell(selector)
            if action == ACTION_COMMAND:
                self._injected('Command')
                return _envelope(SHELL + 'CommandResponse', message_id,
                                 self._command(shell, body, user, selector))
            if action == ACTION_RECEIVE:
                self._injected('Receive')
                return _envelope(SHELL + 'ReceiveResponse', message_id,
                                 self._receive(shell, body))
            if action == ACTION_SIGNAL:
                node = body.find('rsp:Signal', NS)
                if node is not None:
                    shell['commands'].pop(node.get('CommandId'), None)
                return _envelope(SHELL + 'SignalResponse', message_id,
                                 '<rsp:SignalResponse/>')
            if action == ACTION_DELETE:
                with self.lock:
                    self.shells.pop(selector, None)
                return _envelope(TRANSFER + 'DeleteResponse', message_id, '')
            raise WSManFault(ERROR_ACTION_NOT_SUPPORTED, 'ActionNotSupported',
                             'The action %s is not supported by the '
                             'service.' % action)
        except WSManFault as fault:
            return fault, _fault_envelope(fault, message_id)

    def _create(self):
        shell_id = str(uuid.uuid4()).upper()
        with self.lock:
            self.shells[shell_id] = {'commands': {}}
        return (
            '<x:ResourceCreated><a:Address>http://127.0.0.1/wsman'
            '</a:Address><a:ReferenceParameters><w:ResourceURI>%s'
            '</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">%s'
            '</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            '</x:ResourceCreated><rsp:Shell><rsp:ShellId>%s</rsp:ShellId>'
            '</rsp:Shell>' % (SHELL_URI, shell_id, shell_id))

    def _shell(self, shell_id):
        with self.lock:
            shell = self.shells.get(shell_id)
        if shell is None:
            raise WSManFault(
                ERROR_SHELL_NOT_FOUND, 'InvalidSelectors',
                'The request for the Windows Remote Shell with ShellId %s '
                'failed because the shell was not found on the server.'
                % shell_id)
        return shell

    def _command(self, shell, body, user, shell_id):
        line = body.find('rsp:CommandLine', NS)
        if line is None:
            raise HttpError(400, 'Command without rsp:CommandLine')
        # cmd.exe splits "program args" whether the client put the
        # arguments in rsp:Command (pywinrm's run_ps) or rsp:Arguments.
        words = ((line.findtext('rsp:Command', '', NS) or '').split()
                 + (line.findtext('rsp:Arguments', '', NS) or '').split())
        command, args = (words[0], words[1:]) if words else ('', [])
        script = self._script(command, args)
        if len(' '.join(words)) > CMD_LINE_MAX:
            # cmd.exe, which WinRS runs the command line through.
            script = None
            command = 'The command line is too long.'
        if script is None:
            stdout, errors_text, code = (
                '', "'%s' is not recognized as an internal or external "
                    'command (the simulator runs powershell only).\r\n'
                % command, 1)
            record = {'command': command, 'args': args}
        else:
            stdout, errors, code = self.host.run(script)
            errors_text = ps.clixml_error(errors) if errors else ''
            record = {'script': script, 'exit': code,
                      'errors': [e.message for e in errors]}
        record.update(user=user, shell=shell_id)
        with self.lock, open(self.log_path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        command_id = str(uuid.uuid4()).upper()
        shell['commands'][command_id] = (stdout.encode('utf-8'),
                                         errors_text.encode('utf-8'), code)
        return ('<rsp:CommandResponse><rsp:CommandId>%s</rsp:CommandId>'
                '</rsp:CommandResponse>' % command_id)

    @staticmethod
    def _script(command, args):
        if command.lower() not in ('powershell', 'powershell.exe'):
            return None
        lowered = [a.lower() for a in args]
        for flag in ('-encodedcommand', '-enc', '-e'):
            if flag in lowered:
                i = lowered.index(flag)
                if i + 1 >= len(args):
                    return None
                try:
                    return base64.b64decode(args[i + 1],
                                            validate=True).decode('utf-16-le')
                except (ValueError, UnicodeDecodeError):
                    return None
        return None

    def _receive(self, shell, body):
        node = body.find('rsp:Receive/rsp:DesiredStream', NS)
        command_id = node.get('CommandId') if node is not None else None
        if command_id not in shell['commands']:
            raise WSManFault(ERROR_SHELL_NOT_FOUND, 'InvalidParameter',
                             'The command %s is not running in this shell.'
                             % command_id)
        stdout, stderr, code = shell['commands'][command_id]
        streams = ''.join(
            '<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>'
            '<rsp:Stream Name="%s" CommandId="%s" End="true"></rsp:Stream>'
            % (name, command_id, base64.b64encode(data).decode(), name,
               command_id)
            for name, data in (('stdout', stdout), ('stderr', stderr)))
        return ('<rsp:ReceiveResponse>%s<rsp:CommandState CommandId="%s" '
                'State="%sCommandState/Done"><rsp:ExitCode>%d</rsp:ExitCode>'
                '</rsp:CommandState></rsp:ReceiveResponse>'
                % (streams, command_id, SHELL, code))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'Microsoft-HTTPAPI/2.0'

    def setup(self):
        super().setup()
        self.ntlm = None
        self.user = None

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self._send(405, b'', close=False)

    def do_POST(self):
        try:
            self._post()
        except HttpError as exc:
            self._send(exc.status, exc.reason.encode(), headers=exc.headers)

    def _send(self, status, body, headers=(), content_type=None,
              close=False):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if content_type:
            self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _challenge(self):
        headers = [('WWW-Authenticate', 'Negotiate')]
        if self.server.config['basic']:
            headers.append(('WWW-Authenticate', 'Basic realm="WSMAN"'))
        return headers

    def _read_body(self):
        if self.path.split('?')[0] != '/wsman':
            raise HttpError(404, 'no such endpoint')
        try:
            length = int(self.headers.get('Content-Length', ''))
        except ValueError:
            raise HttpError(411, 'Content-Length required')
        if length < 0 or length > MAX_BODY:
            raise HttpError(413, 'request too large')
        return self.rfile.read(length)

    def _post(self):
        body = self._read_body()
        config = self.server.config
        auth = self.headers.get('Authorization', '')
        scheme, _, token = auth.partition(' ')
        scheme = scheme.lower()
        if scheme == 'basic':
            if not config['basic']:
                raise HttpError(401, 'Basic authentication is disabled',
                                self._challenge())
            if not config['tls']:
                raise HttpError(401, 'Basic authentication over HTTP is '
                                'refused (AllowUnencrypted=false)',
                                self._challenge())
            try:
                user, _, password = base64.b64decode(
                    token, validate=True).decode().partition(':')
            except ValueError:
                raise HttpError(400, 'malformed Basic credentials')
            if (user, password) != (config['username'], config['password']):
                raise HttpError(401, 'Access is denied.', self._challenge())
            self.user = user
        elif scheme in ('negotiate', 'ntlm'):
            try:
                data = base64.b64decode(token, validate=True)
            except ValueError:
                raise HttpError(400, 'malformed Negotiate token')
            if self.ntlm is None or self.ntlm.complete:
                self.ntlm = spnego.server(
                    protocol='ntlm', channel_bindings=self.server.bindings)
            try:
                reply = self.ntlm.step(data)
            except spnego.exceptions.SpnegoError:
                self.ntlm = None
                raise HttpError(401, 'Access is denied.', self._challenge())
            if not self.ntlm.complete:
                self._send(401, b'', headers=[
                    ('WWW-Authenticate', 'Negotiate %s'
                     % base64.b64encode(reply).decode())])
                return
            self.user = self.ntlm.client_principal
        elif auth:
            raise HttpError(401, 'unsupported authentication scheme',
                            self._challenge())
        elif self.user is None:
            raise HttpError(401, '', self._challenge())
        encrypted = self._encrypted()
        if encrypted:
            body = self._decrypt(body)
        elif not config['tls'] and body:
            raise HttpError(401, 'unencrypted messages are refused over HTTP'
                            ' (AllowUnencrypted=false)', self._challenge())
        if not body:
            # pywinrm's empty POST that sets up the security context.
            self._send(200, b'')
            return
        result = self.server.simulator.handle(body, self.user)
        status = 200
        if isinstance(result, tuple):
            status, result = 500, result[1]
        if encrypted:
            self._send(status, self._encrypt(result), content_type=(
                'multipart/encrypted;protocol="%s";boundary="Encrypted '
                'Boundary"' % ENCRYPTED_PROTOCOL))
        else:
            self._send(status, result,
                       content_type='application/soap+xml;charset=UTF-8')

    def _encrypted(self):
        kind = self.headers.get('Content-Type', '')
        if 'multipart/encrypted' not in kind:
            return False
        if self.ntlm is None or not self.ntlm.complete or \
                ENCRYPTED_PROTOCOL not in kind:
            raise HttpError(400, 'encrypted message without an NTLM '
                            'security context')
        return True

    def _decrypt(self, body):
        parts = [p for p in body.split(BOUNDARY + b'\r\n') if p]
        if len(parts) != 2 or b'Length=' not in parts[0]:
            raise HttpError(400, 'malformed multipart/encrypted message')
        try:
            length = int(parts[0].split(b'Length=')[1].strip())
        except ValueError:
            raise HttpError(400, 'malformed OriginalContent length')
        payload = parts[1]
        if payload.endswith(BOUNDARY + b'--\r\n'):
            payload = payload[:-len(BOUNDARY + b'--\r\n')]
        payload = payload.replace(
            b'\tContent-Type: application/octet-stream\r\n', b'', 1)
        if len(payload) < 4:
            raise HttpError(400, 'truncated encrypted message')
        sig_len = struct.unpack('<i', payload[:4])[0]
        if sig_len != 16:
            raise HttpError(400, 'bad NTLM signature length')
        try:
            message = self.ntlm.unwrap(payload[4:]).data
        except spnego.exceptions.SpnegoError:
            raise HttpError(400, 'message signature does not verify')
        if len(message) != length:
            raise HttpError(400, 'encrypted length does not match')
        return message

    def _encrypt(self, message):
        wrapped = self.ntlm.wrap(message, encrypt=True).data
        protocol = ENCRYPTED_PROTOCOL.encode()
        return (BOUNDARY + b'\r\n\tContent-Type: ' + protocol
                + b'\r\n\tOriginalContent: type=application/soap+xml;'
                b'charset=UTF-8;Length=' + str(len(message)).encode() + b'\r\n'
                + BOUNDARY + b'\r\n\tContent-Type: application/octet-stream'
                b'\r\n' + struct.pack('<i', 16) + wrapped + BOUNDARY
                + b'--\r\n')


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--folder', required=True)
    parser.add_argument('--storage-dir', required=True)
    parser.add_argument('--storage-path', default='C:\\XHV\\Hyper-V')
    parser.add_argument('--switch', action='append', default=[])
    parser.add_argument('--username', default='xhv')
    parser.add_argument('--password-file', required=True)
    parser.add_argument('--tls-cert')
    parser.add_argument('--tls-key')
    parser.add_argument('--basic', action='store_true')
    parser.add_argument('--unc-share', action='append', default=[],
                        help='\\\\server\\share=<local folder>: an SMB '
                             'share the host reaches (volumes)')
    parser.add_argument('--port', type=int, default=0,
                        help='0 (default): a free port')
    args = parser.parse_args(argv)
    with open(args.password_file) as f:
        password = f.read().strip()
    # pyspnego's NTLM acceptor reads its users from this file.
    users = os.path.join(args.folder, 'ntlm-users')
    with open(os.open(users, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
              'w') as f:
        f.write(':%s:%s\n' % (args.username, password))
    os.environ['NTLM_USER_FILE'] = users
    host = hv_model.HyperVHost(args.folder, args.storage_dir,
                               args.storage_path,
                               switches=args.switch or ['xhv-external'],
                               unc_shares=dict(
                                   u.split('=', 1) for u in args.unc_share))
    server = Server(('127.0.0.1', args.port), Handler)
    server.simulator = Simulator(host, args.folder)
    server.bindings = None
    tls = bool(args.tls_cert)
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        with open(args.tls_cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        # What requests-ntlm binds NTLM to over HTTPS (RFC 5929).
        server.bindings = cb.GssChannelBindings(
            application_data=b'tls-server-end-point:'
            + hashlib.sha256(der).digest())
    server.config = {'basic': args.basic, 'tls': tls,
                     'username': args.username, 'password': password}
    port = server.server_address[1]
    print('HYPERV_URL=%s://127.0.0.1:%d/wsman'
          % ('https' if tls else 'http', port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
