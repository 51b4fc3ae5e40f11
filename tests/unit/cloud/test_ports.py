"""Which home addresses a remote port asks for, and what a refusal drops."""

import ipaddress

from nova.network import model
import pytest

from nova_xhv.backends.cloud import ports


def _vif(*addresses):
    subnets = [model.Subnet(cidr='10.0.0.0/24', ips=[
        model.FixedIP(address=a) for a in addresses])]
    return model.VIF(id='p1', address='fa:16:3e:00:00:01',
                     network=model.Network(id='n1', subnets=subnets))


def test_home_addresses_are_read_from_nova_network_info_in_order():
    assert ports.home_addresses(_vif('10.0.0.7', 'fd00::7')) == [
        ipaddress.ip_address('10.0.0.7'), ipaddress.ip_address('fd00::7')]
    assert ports.home_addresses({'id': 'p1'}) == []


def test_what_is_not_an_address_is_not_asked_for():
    vif = {'id': 'p1', 'network': {'subnets': [{'ips': [
        {'address': '10.0.0.300'}, {'address': '10.0.0.8'},
        {'address': None}]}]}}
    assert ports.home_addresses(vif) == [ipaddress.ip_address('10.0.0.8')]


@pytest.mark.parametrize('status,message,mac,ips,dropped', [
    # Neutron's policy names the attribute it refuses.
    (403, '(rule:create_port and rule:create_port:fixed_ips:ip_address) '
          'is disallowed by policy', True, True, 'fixed_ips'),
    (403, '(rule:create_port:mac_address) is disallowed by policy',
     True, True, 'mac_address'),
    (403, 'rule:create_port:mac_address is disallowed by policy',
     True, False, 'mac_address'),
    (403, 'Forbidden', True, True, 'fixed_ips'),
    (403, 'Forbidden', True, False, 'mac_address'),
    (403, 'Forbidden', False, False, None),
    (409, 'IP address 10.0.0.9 already allocated in subnet s1', True, True,
     'fixed_ips'),
    (400, 'IP address 192.0.2.1 is not a valid IP for the specified '
          'subnet.', True, True, 'fixed_ips'),
    # A MAC in use, or a failure about neither: raised.
    (409, 'The mac address fa:16:3e:00:00:01 is in use.', True, True, None),
    (409, 'IP address 10.0.0.9 already allocated in subnet s1', True, False,
     None),
    (500, 'Request Failed: internal server error', True, True, None),
    (404, 'Network n1 could not be found.', True, True, None),
])
def test_a_refusal_drops_only_the_attribute_it_names(status, message, mac,
                                                     ips, dropped):
    assert ports._refused(status, message, mac, ips) == dropped
