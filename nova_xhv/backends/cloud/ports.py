"""Remote ports: the home server's ports on the remote cloud's networks.

Each home port maps to a remote network (``[xhv_cloud] network_map``,
the binding's ``cloud_network``, or the same name) and becomes a remote
port with the home port's MAC where the remote project may set it.
Remote ports are named by position and home port and described by the
instance, so they are found, listed in order and deleted without any
local state.
"""

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
        """[(Nic, remote network id)] for the home ports, checked first.

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
            wanted.append((nic, remote_net.id))
        return wanted

    def make(self, instance, networks):
        """Remote ports with the home ports' MACs, in order.

        Their description names the instance; none is left on failure.
        Returns the ``networks`` argument of a remote server create.
        """
        made = []
        try:
            for n, (nic, network_id) in enumerate(networks):
                attrs = {'network_id': network_id,
                         # The instance's project (a Neutron without
                         # Keystone would not know it).
                         'project_id': self.conn.current_project_id,
                         'name': PORT_NAME % (n, nic.port_id),
                         'description': PORT_OWNER % instance.uuid}
                call = 'POST /v2.0/ports (home port %s)' % nic.port_id
                try:
                    with self.call(call):
                        port = self.conn.network.create_port(
                            mac_address=nic.mac, **attrs)
                except errors.RemoteCloudError as exc:
                    if errors.status_of(exc.__cause__) != 403:
                        raise
                    # The remote project may not set MACs: a new one.
                    LOG.warning('Cloud %s refused MAC %s for home port %s; '
                                'the remote port gets its own', self.cloud,
                                nic.mac, nic.port_id)
                    with self.call(call):
                        port = self.conn.network.create_port(**attrs)
                made.append(port)
        except Exception:
            self.delete(instance)
            raise
        return [{'port': port.id} for port in made] or 'none'

    def of(self, instance):
        """The remote ports made for ``instance``, in the home order."""
        with self.call('GET /v2.0/ports?description=%s'
                       % (PORT_OWNER % instance.uuid)):
            ports = list(self.conn.network.ports(
                description=PORT_OWNER % instance.uuid))
        return sorted(ports, key=lambda p: p.name or '')

    def plugged(self, instance):
        """[(home port id, remote MAC)] in order."""
        found = []
        for port in self.of(instance):
            home = (port.name or '').split('-', 2)[-1] or None
            found.append((home, port.mac_address))
        return found

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
