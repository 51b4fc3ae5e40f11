"""The early bind check of a move (nova_xhv/migration/ports.py).

Neutron is a stand-in client here; tests/functional/migration/test_ports.py
runs the check through Nova's harness and tests/functional/neutron the
extended binding API of a real neutron-server.
"""

from unittest import mock

from neutronclient.common import exceptions as neutron_client_exc
from nova import objects
import pytest

from nova_xhv.migration import ports

objects.register_all()

DVS = {'xhv_family': 'vmware', 'network_type': 'vlan',
       'physical_network': 'public', 'segmentation_id': 120,
       'dvs_name': 'DVS0', 'dvs_port_group_name': 'xhv-public-120'}


class Client(object):

    def __init__(self, ports_, bind):
        self.ports = ports_
        self.bind = bind
        self.created = []
        self.deleted = []

    def list_ports(self, device_id):
        return {'ports': self.ports}

    def create_port_binding(self, port_id, body):
        result = self.bind(port_id, body['binding']['host'])
        self.created.append(port_id)
        return {'binding': result}

    def delete_port_binding(self, port_id, host):
        self.deleted.append((port_id, host))


def _port(n):
    return {'id': 'p%d' % n, 'mac_address': 'fa:16:3e:00:00:0%d' % n,
            'binding:vnic_type': 'normal', 'binding:profile': {}}


def _check(client, family_name='vmware'):
    api = mock.Mock()
    api.has_port_binding_extension.return_value = True
    instance = objects.Instance(uuid='11111111-2222-3333-4444-555555555555')
    with mock.patch('nova.network.neutron.get_client', return_value=client):
        ports.check_destination_binds(mock.sentinel.ctx, instance, 'vc-1',
                                      family_name, network_api=api)


def test_every_port_binds_and_the_trial_bindings_go():
    client = Client([_port(1), _port(2)],
                    lambda p, h: {'vif_type': 'dvs', 'vif_details': DVS})
    _check(client)
    assert client.deleted == [('p1', 'vc-1'), ('p2', 'vc-1')]


def test_a_port_neutron_cannot_bind_refuses_and_undoes_the_others():
    def bind(port_id, host):
        if port_id == 'p2':
            raise neutron_client_exc.NeutronClientException(
                status_code=500, message='PortBindingError')
        return {'vif_type': 'dvs', 'vif_details': DVS}

    client = Client([_port(1), _port(2)], bind)
    with pytest.raises(ports.DestinationCannotBind,
                       match='Neutron cannot bind port p2 on host vc-1'):
        _check(client)
    assert client.deleted == [('p1', 'vc-1')]


def test_a_binding_the_destination_family_cannot_plug_refuses():
    client = Client([_port(1)], lambda p, h: {'vif_type': 'ovs',
                                              'vif_details': {}})
    with pytest.raises(ports.DestinationCannotBind,
                       match="vif_type 'ovs' is not one this family plugs"):
        _check(client)
    assert client.deleted == [('p1', 'vc-1')]


def test_no_ports_no_question():
    client = Client([], None)
    _check(client)
    assert client.created == []
