"""Backend.nics: the network contract's checks (nova_xhv/backends/base.py)."""

import pytest

from nova_xhv.backends import base
from nova_xhv.backends import family


class Backend(object):
    nics = base.Backend.nics

    def __init__(self, name):
        self.facts = family.lookup(name)
        self.family = self.facts.name


def vif(vif_type='dvs', mac='FA:16:3E:00:00:01', **details):
    d = {'dvs_name': 'DVS0', 'dvs_port_group_name': 'xhv-public-100',
         'network_type': 'vlan', 'segmentation_id': 100,
         'physical_network': 'public', 'xhv_family': 'vmware'}
    d.update(details)
    return {'id': 'p1', 'type': vif_type, 'address': mac, 'details': d}


def test_plugs_what_the_binding_says_in_order():
    nics = Backend('vmware').nics([vif(), vif(mac='fa:16:3e:00:00:02',
                                              network_type='flat',
                                              segmentation_id=None)])
    assert nics[0] == base.Nic('p1', 'fa:16:3e:00:00:01', 'dvs', 'DVS0',
                               'xhv-public-100', 'vlan', 'public', 100)
    assert nics[1].mac == 'fa:16:3e:00:00:02'
    assert nics[1].segmentation_id is None
    assert Backend('vmware').nics(None) == []


def test_a_family_bound_by_ovn_needs_no_xhv_details():
    nic, = Backend('kvm').nics([{'id': 'p', 'type': 'ovs',
                                 'address': 'fa:16:3e:00:00:09'}])
    assert (nic.vif_type, nic.switch) == ('ovs', None)


@pytest.mark.parametrize('bad,reason', [
    (vif('binding_failed'), 'Neutron did not bind it to this host'),
    (vif('unbound'), 'Neutron did not bind it'),
    (vif(None), 'vif_type missing'),
    (vif('ovs'), "vif_type 'ovs' is not one this family plugs (dvs)"),
    (vif(mac='fa:16:3e:00:00'), 'is not a MAC address'),
    (vif(mac=None), 'is not a MAC address'),
    (vif(dvs_name='../DVS'), 'dvs_name'),
    (vif(dvs_port_group_name='x' * 81), 'dvs_port_group_name'),
    (vif(dvs_port_group_name=None), 'dvs_port_group_name'),
    (vif(network_type='geneve'), "segment type 'geneve'"),
    (vif(segmentation_id=4095), 'VLAN id 4095'),
    (vif(segmentation_id='7'), "VLAN id '7'"),
    (vif(segmentation_id=True), 'VLAN id True'),
])
def test_refuses_what_it_cannot_plug_with_the_reason(bad, reason):
    with pytest.raises(base.VifRefused) as error:
        Backend('vmware').nics([vif(), bad])
    assert 'vmware backend cannot plug Neutron port p1' in str(error.value)
    assert reason in str(error.value)


def test_every_installed_family_declares_its_network():
    for name, facts in family.families().items():
        assert facts.network is not None, name
        facts.network.check(name)


@pytest.mark.parametrize('network,message', [
    (dict(vif_types=()), 'no vif_types'),
    (dict(segment_types=('gre',)), 'segment_types'),
    (dict(bound_by=('linuxbridge',)), 'bound_by'),
    (dict(switch_detail=None), 'without switch_detail'),
])
def test_unusable_network_facts_are_refused(network, message):
    fields = dict(vif_types=('x',), segment_types=('flat',),
                  bound_by=('xhv',), switch_detail='s',
                  port_group_detail='p')
    fields.update(network)
    with pytest.raises(ValueError, match=message):
        family.Network(**fields).check('half')
