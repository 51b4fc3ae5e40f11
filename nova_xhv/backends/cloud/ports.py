"""Remote ports: the home server's ports on the remote cloud's networks.

Each home port maps to a remote network (``[xhv_cloud] network_map``,
the binding's ``cloud_network``, or the same name) and becomes a remote
port with the home port's MAC and fixed IPs where the remote project may
set them: an address is asked for only in a remote subnet of that network
containing it.  What the remote Neutron refuses falls back, one attribute
at a time, to the remote Neutron's own choice, logged as a warning naming
the home port, what was wanted and why (doc/source/cloud.rst, Networks).
Remote ports are named by position and home port and described by the
instance, so they are found, listed in order and deleted without any
local state.
"""

import ipaddress

from oslo_log import log as logging

from nova_xhv.backends import base
from nova_xhv.backends.cloud import errors
from nova_xhv.backends.cloud import remote

LOG = logging.getLogger(__name__)

# Remote ports: named by position and home port, described by instance.
PORT_NAME = 'xhv-%02d-%s'
PORT_OWNER = 'xhv-instance:%s'


class RemotePorts(remote.Part):
    """The remote ports XHV makes for one home server's ports."""

    def networks(self, network_info):
        """[(Nic, remote network id, home fixed IPs)], checked first.

        Each home port goes on the remote network ``[xhv_cloud]
        network_map`` names for its network (by id or name), else the one
        its binding names (``cloud_network``, the segment's network as
        XHV's ML2 driver names it), else the remote network of the same
        name.
        """
        vifs = list(network_info or [])
        nics = self.backend.nics(vifs)
        wanted = []
        for vif, nic in zip(vifs, nics):
            network = vif.get('network') or {}
            target = None
            for key in (network.get('id'), network.get('label')):
                if key and key in self.conf.network_map:
                    target = self.conf.network_map[key]
                    break
            target = target or nic.port_group or network.get('label')
            remote_net = None
            if target:
                with self.call('GET /v2.0/networks?name=%s' % target):
                    remote_net = self.conn.network.find_network(
                        target, ignore_missing=True)
            if remote_net is None:
                raise base.VifRefused(
                    family=self.backend.family, port_id=nic.port_id,
                    reason='cloud %s has no network %r; map it in '
                           '[xhv_cloud] network_map' % (self.cloud, target))
            wanted.append((nic, remote_net.id, home_addresses(vif)))
        return wanted

    def make(self, instance, networks):
        """Remote ports with the home ports' MACs and fixed IPs, in order.

        Their description names the instance; none is left on failure.
        Returns the ``networks`` argument of a remote server create.
        """
        made = []
        try:
            for n, (nic, network_id, addresses) in enumerate(networks):
                attrs = {'network_id': network_id,
                         # The instance's project (a Neutron without
                         # Keystone would not know it).
                         'project_id': self.conn.current_project_id,
                         'name': PORT_NAME % (n, nic.port_id),
                         'description': PORT_OWNER % instance.uuid}
                fixed_ips = self._fixed_ips(nic, network_id, addresses)
                made.append(self._create(nic, attrs, fixed_ips))
        except Exception:
            self.delete(instance)
            raise
        return [{'port': port.id} for port in made] or 'none'

    def _fixed_ips(self, nic, network_id, addresses):
        """Neutron ``fixed_ips`` for the home addresses the network holds.

        Each address goes in the remote subnet of ``network_id`` that
        contains it; one that no subnet contains is left to the remote
        Neutron (logged).
        """
        if not addresses:
            return []
        with self.call('GET /v2.0/subnets?network_id=%s' % network_id):
            subnets = [(ipaddress.ip_network(s.cidr, strict=False), s.id)
                       for s in self.conn.network.subnets(
                           network_id=network_id) if s.cidr]
        wanted = []
        for address in addresses:
            subnet_id = next((sid for cidr, sid in subnets
                              if address in cidr), None)
            if subnet_id is None:
                LOG.warning('Cloud %s: home port %s has %s, outside every '
                            'subnet of remote network %s; the remote port '
                            'gets an address of the remote Neutron\'s '
                            'choice', self.cloud, nic.port_id, address,
                            network_id)
                continue
            wanted.append({'subnet_id': subnet_id,
                           'ip_address': str(address)})
        return wanted

    def _create(self, nic, attrs, fixed_ips):
        """One remote port: home MAC and ``fixed_ips`` where allowed.

        A remote refusal of the addresses (policy, address in use, not
        valid there) or of the MAC (policy) drops that attribute, logged,
        and asks again; anything else is raised.
        """
        call = 'POST /v2.0/ports (home port %s)' % nic.port_id
        mac, ips = nic.mac, fixed_ips
        while True:
            kwargs = dict(attrs)
            if mac:
                kwargs['mac_address'] = mac
            if ips:
                kwargs['fixed_ips'] = ips
            try:
                with self.call(call):
                    return self.conn.network.create_port(**kwargs)
            except errors.RemoteCloudError as exc:
                drop = _refused(errors.status_of(exc.__cause__), str(exc),
                                bool(mac), bool(ips))
                if drop is None:
                    raise
                if drop == 'fixed_ips':
                    LOG.warning('Cloud %s refused fixed IPs %s for home '
                                'port %s (%s); the remote port gets '
                                'addresses of the remote Neutron\'s choice',
                                self.cloud, _addresses(ips), nic.port_id,
                                exc)
                    ips = None
                else:
                    LOG.warning('Cloud %s refused MAC %s for home port %s '
                                '(%s); the remote port gets its own',
                                self.cloud, mac, nic.port_id, exc)
                    mac = None

    def of(self, instance):
        """The remote ports made for ``instance``, in the home order."""
        with self.call('GET /v2.0/ports?description=%s'
                       % (PORT_OWNER % instance.uuid)):
            ports = list(self.conn.network.ports(
                description=PORT_OWNER % instance.uuid))
        return sorted(ports, key=lambda p: p.name or '')

    def addresses(self, instance):
        """[(home port id, remote MAC, [remote fixed IPs])] in order."""
        return [(home, port.mac_address,
                 [ip['ip_address'] for ip in port.fixed_ips or []])
                for home, port in self._by_home(instance)]

    def _by_home(self, instance):
        return [((port.name or '').split('-', 2)[-1] or None, port)
                for port in self.of(instance)]

    def plugged(self, instance):
        """[(home port id, remote MAC)] in order."""
        return [(home, port.mac_address)
                for home, port in self._by_home(instance)]

    def delete(self, instance):
        if not self._has_network():
            return
        for port in self.of(instance):
            with self.call('DELETE /v2.0/ports/%s' % port.id):
                self.conn.network.delete_port(port, ignore_missing=True)

    def _has_network(self):
        try:
            return self.conn.has_service('network')
        except Exception:  # noqa: B902 - no catalog entry: no Neutron
            return False


def home_addresses(vif):
    """The fixed IPs of a home port (Nova's network_info VIF), in order.

    What is not an IP address is left out (the remote Neutron chooses).
    """
    found = []
    for subnet in (vif.get('network') or {}).get('subnets') or []:
        for ip in subnet.get('ips') or []:
            try:
                found.append(ipaddress.ip_address(ip.get('address')))
            except ValueError:
                LOG.warning('Home port %s: %r is not an IP address; not '
                            'asked for remotely', vif.get('id'),
                            ip.get('address'))
    return found


def _refused(status, message, mac, ips):
    """Which attribute a remote port refusal is about, if one can go.

    403: the policy names the attribute it refuses (fixed_ips or
    mac_address); unnamed, the addresses go first, then the MAC.  400/409
    about an IP address (in use, not in that subnet): the addresses.  A
    MAC in use or any other failure: None (raised).
    """
    text = message.lower()
    if status == 403:
        if ips and 'fixed_ips' in text:
            return 'fixed_ips'
        if mac and 'mac_address' in text:
            return 'mac_address'
        return 'fixed_ips' if ips else ('mac_address' if mac else None)
    if status in (400, 409) and ips and (
            'ip address' in text or 'fixed_ip' in text
            or 'ip_address' in text):
        return 'fixed_ips'
    return None


def _addresses(fixed_ips):
    return ', '.join(ip['ip_address'] for ip in fixed_ips)
