"""The simulator never pretends: what it does not model fails loudly, and
malformed requests get a 4xx.  (It is a test bed; these keep it honest.)"""

import pytest
import requests
import winrm


pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def session(hyperv_sim):
    info = hyperv_sim.info
    return winrm.Session(
        'https://%s:%d/wsman' % (info.host, info.port),
        auth=(info.username, info.password), transport='ntlm',
        server_cert_validation='validate', ca_trust_path=info.ca_file)


@pytest.mark.parametrize('script, message', [
    ('Get-VMFrobnicator', "The term 'Get-VMFrobnicator' is not recognized"),
    ("Get-VM -Name 'x' -Frobnicate 1",
     "cannot be found that matches parameter name 'Frobnicate'"),
    ('Get-VM -Name "x"', 'double-quoted (expandable) string'),
    ("Get-VM -Name $(Get-VMHost)", 'subexpression'),
    ("Get-VM 'x'", 'positional argument'),
    ("Get-VMHost", 'does not format'),
    ("Get-VMHost | ConvertTo-Json", 'Select-Object -Property first'),
    ("Get-VM -Name `\n'x'", 'backtick'),
    ("New-VM -Name 'x' -MemoryStartupBytes 256MB", 'without -NoVHD'),
    ("Get-VM | Where-Object { $_.Name }", "unexpected '{'"),
    ("Get-VM | Sort-Object", "The term 'Sort-Object' is not recognized"),
])
def test_what_is_not_modelled_fails_loudly(session, script, message):
    result = session.run_ps("$ErrorActionPreference = 'Stop'\n" + script)
    assert result.status_code == 1
    assert message in result.std_err.decode(), result.std_err


def test_command_lines_are_as_long_as_cmd_takes(session):
    result = session.run_ps("Get-VM -Name '%s'" % ('x' * 3500))
    assert result.status_code == 1
    assert b'The command line is too long.' in result.std_err


def test_errors_are_clixml_with_the_cmdlet(hyperv_sim):
    info = hyperv_sim.info
    protocol = winrm.Protocol(
        'https://%s:%d/wsman' % (info.host, info.port), transport='ntlm',
        username=info.username, password=info.password,
        ca_trust_path=info.ca_file)
    shell = protocol.open_shell()
    try:
        import base64
        script = base64.b64encode("Stop-VM -Name 'nope'".encode(
            'utf-16-le')).decode()
        command = protocol.run_command(shell, 'powershell.exe',
                                       ['-EncodedCommand', script])
        out, err, code = protocol.get_command_output(shell, command)
        protocol.cleanup_command(shell, command)
    finally:
        protocol.close_shell(shell)
    assert code == 1 and out == b''
    assert err.startswith(b'#< CLIXML\r\n<Objs ')
    assert b'<S S="Error">Stop-VM : Hyper-V was unable to find a virtual ' \
           b'machine with name &quot;nope&quot;.' in err or \
           b'<S S="Error">Stop-VM : Hyper-V was unable to find a virtual ' \
           b'machine with name "nope".' in err


@pytest.mark.parametrize('method, headers, body, status', [
    ('GET', {}, b'', 405),
    ('POST', {'Authorization': 'Negotiate !!!'}, b'x', 400),
    ('POST', {'Authorization': 'Basic eGh2Onh4'}, b'x', 401),
    ('POST', {'Authorization': 'Bearer abc'}, b'x', 401),
    ('POST', {}, b'<not-soap/>', 401),
])
def test_malformed_requests_get_4xx(hyperv_sim, method, headers, body,
                                    status):
    info = hyperv_sim.info
    response = requests.request(
        method, 'https://%s:%d/wsman' % (info.host, info.port),
        headers=headers, data=body, verify=info.ca_file, timeout=10)
    assert response.status_code == status


def test_unknown_shell_is_a_wsman_fault(hyperv_sim):
    info = hyperv_sim.info
    protocol = winrm.Protocol(
        'https://%s:%d/wsman' % (info.host, info.port), transport='ntlm',
        username=info.username, password=info.password,
        ca_trust_path=info.ca_file)
    with pytest.raises(winrm.exceptions.WSManFaultError) as caught:
        protocol.run_command('00000000-0000-0000-0000-000000000000', 'dir')
    assert caught.value.wsman_fault_code == 2150858843
