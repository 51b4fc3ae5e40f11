"""script.quote/literal/command, read back by the simulator's tokenizer
(which parses single-quoted strings as PowerShell 5.1 does)."""

import pytest

from nova_xhv.backends.hyperv import script as ps
from tests.simulators.hyperv import powershell

HOSTILE = [
    '', "'", "''", "it's", "'; Remove-VM -Name * -Force; '", '$(Stop-VM)',
    '`$(x)`', '"$(x)"', 'a\nb', 'a\r\nStop-VM', '\u2018\u2019\u201a\u201b',
    "\u2019; Remove-VM -Name *; \u2018", '@\'\nx\n\'@', '${env:PATH}',
    '& { Stop-VM }', '| Out-Null', '# comment', 'C:\\VMs\\a;b',
    '\u00e9\u4e2d\U0001F600', ' leading and trailing ', "'" * 7,
]


@pytest.mark.parametrize('value', HOSTILE)
def test_quote_is_one_string_token_with_the_same_value(value):
    tokens = powershell.tokenize(ps.quote(value))
    assert [(t.kind, t.value) for t in tokens] == [('string', value)]


@pytest.mark.parametrize('value', HOSTILE)
def test_a_command_carries_values_as_data(value):
    line = ps.command('Set-VM', Name=value, Notes=value, ProcessorCount=2,
                      Force=ps.SWITCH)
    tokens = powershell.tokenize(line)
    assert [(t.kind, t.value) for t in tokens] == [
        ('word', 'Set-VM'), ('parameter', 'Name'), ('string', value),
        ('parameter', 'Notes'), ('string', value),
        ('parameter', 'ProcessorCount'), ('number', 2),
        ('parameter', 'Force')]


def test_literals():
    assert ps.literal(True) == '$true'
    assert ps.literal(False) == '$false'
    assert ps.literal(-3) == '-3'
    assert ps.literal(['a', "b'c"]) == "'a','b''c'"
    for bad in (None, 1.5, {}, b'x', []):
        with pytest.raises((TypeError, ValueError)):
            ps.literal(bad)
    with pytest.raises(ValueError):
        ps.quote('nul\0byte')


@pytest.mark.parametrize('name', ['Get-VM; Stop-VM', 'Get VM', '-Name',
                                  "Get-VM'", 'Get-VM|x', ''])
def test_cmdlet_and_parameter_names_are_checked(name):
    with pytest.raises(ValueError):
        ps.command(name)
    with pytest.raises(ValueError):
        ps.command('Get-VM', **{name: 'x'})
