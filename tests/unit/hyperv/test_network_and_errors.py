"""Port plugging rules and PowerShell error parsing, without a host."""

from nova.network import model as network_model
import pytest

from nova_xhv.backends.hyperv import network
from nova_xhv.backends.hyperv import remote

CLIXML = (
    b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.'
    b'com/powershell/2004/04"><S S="Error">Start-VM : &apos;vm&apos; failed '
    b'to start._x000D__x000A_</S><S S="Error">    + CategoryInfo          : '
    b'NotSpecified_x000D__x000A_</S></Objs>')


def test_parse_error_names_the_cmdlet_from_clixml():
    assert remote.parse_error(CLIXML, 'New-VM') == (
        'Start-VM', "'vm' failed to start.")


def test_parse_error_falls_back_to_the_script_cmdlet():
    assert remote.parse_error(b'Access is denied.\r\n', 'Get-VM') == (
        'Get-VM', 'Access is denied.')
    assert remote.parse_error(b'#< CLIXML\r\n<Objs', 'Get-VM')[0] == 'Get-VM'
    assert remote.parse_error(b'', 'Get-VM') == ('Get-VM', 'no error text')


def test_as_list():
    assert remote.as_list(None) == []
    assert remote.as_list({'a': 1}) == [{'a': 1}]
    assert remote.as_list([1, 2]) == [1, 2]


def test_mappings():
    assert network.parse_mappings(['physnet1:sw:with:colons', 'p2: b ']) == {
        'physnet1': 'sw:with:colons', 'p2': 'b'}
    for bad in (['nocolon'], [':sw'], ['p:'], ['p:a', 'p:b']):
        with pytest.raises(ValueError):
            network.parse_mappings(bad)


def _vif(**details):
    return network_model.VIF(
        id='p1', address='fa:16:3e:aa:bb:cc', type='hyperv', details=details,
        network=network_model.Network(id='n', bridge=None, subnets=[],
                                      meta={}))


def test_segment_from_binding_details():
    mappings = {'physnet1': 'External'}
    assert network.adapter(_vif(physical_network='physnet1',
                                network_type='vlan', segmentation_id='42'),
                           mappings) == ('xhv-p1', 'External',
                                         'FA163EAABBCC', 42)
    # A flat segment has no VLAN, whatever else is set.
    assert network.adapter(_vif(physical_network='physnet1',
                                network_type='flat', segmentation_id=42),
                           mappings)[3] is None


def test_plug_lines_quote_everything():
    lines = network.plug_lines(
        "vm'1", [_vif(physical_network='physnet1', network_type='vlan',
                      segmentation_id=7)], {'physnet1': "sw'x"}, legacy=True)
    assert lines == [[
        "Add-VMNetworkAdapter -VMName 'vm''1' -Name 'xhv-p1' -SwitchName "
        "'sw''x' -StaticMacAddress 'FA163EAABBCC' -IsLegacy $true",
        "Set-VMNetworkAdapterVlan -VMName 'vm''1' -VMNetworkAdapterName "
        "'xhv-p1' -Access -VlanId 7"]]
