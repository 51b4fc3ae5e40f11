"""Before a move powers anything off: can the destination bind every port?

Nova's cold migration rebinds the server's ports only in
``_finish_resize`` (``migrate_instance_finish``), after the source has
powered off and the disks have moved.  A destination that cannot take a
port (no mapping for its physical network, a family whose vif_types do not
include what Neutron binds there) would then fail the move at the very
end.  So the source asks Neutron first, with the extended port-binding
API Nova uses for live migration: an INACTIVE binding of every port on the
destination host, checked against the destination family's network facts
(nova_xhv.backends.base.check_vifs), then deleted.  The active binding on
the source is never touched.
"""

from neutronclient.common import exceptions as neutron_client_exc
from nova import exception
from nova.network import neutron
from oslo_log import log as logging

from nova_xhv.backends import base
from nova_xhv.backends import family

LOG = logging.getLogger(__name__)


class DestinationCannotBind(exception.NovaException):
    msg_fmt = ('The move of instance %(instance)s to %(host)s (%(family)s) '
               'is refused before anything was powered off: %(reason)s')


def check_destination_binds(context, instance, host, family_name,
                            network_api=None):
    """Raise DestinationCannotBind unless ``host`` can take every port.

    Every port: those Neutron has for the instance (device_id), exactly
    what Nova's migrate_instance_finish rebinds -- not network_info, which
    Nova builds from its info cache.
    """
    client = neutron.get_client(context, admin=True)
    found = client.list_ports(device_id=instance.uuid).get('ports', [])
    if not found:
        return
    api = network_api or neutron.API()
    if not api.has_port_binding_extension(context):
        LOG.warning('Neutron has no binding-extended extension: cannot '
                    'check in advance that %s binds the ports of instance '
                    '%s', host, instance.uuid, instance=instance)
        return

    def refuse(reason):
        raise DestinationCannotBind(instance=instance.uuid, host=host,
                                    family=family_name, reason=reason)

    try:
        facts = family.lookup(family_name)
    except family.UnknownFamily as error:
        refuse(str(error))
    # Not bind_ports_to_host: it takes the ports from the info cache.
    bindings = {}
    try:
        for port in found:
            body = {'binding': {
                'host': host,
                'vnic_type': port.get('binding:vnic_type') or 'normal',
                'profile': port.get('binding:profile') or {}}}
            try:
                bindings[port['id']] = client.create_port_binding(
                    port['id'], body)['binding']
            except neutron_client_exc.NeutronClientException as error:
                refuse('Neutron cannot bind port %s on host %s (%s); see '
                       'neutron-server\'s log' % (port['id'], host, error))
        macs = {port['id']: port['mac_address'] for port in found}
        base.check_vifs(facts, [
            {'id': port_id, 'type': binding.get('vif_type'),
             'address': macs.get(port_id),
             'details': binding.get('vif_details') or {}}
            for port_id, binding in sorted(bindings.items())])
    except base.VifRefused as error:
        refuse(str(error))
    finally:
        for port_id in bindings:
            try:
                client.delete_port_binding(port_id, host)
            except neutron_client_exc.NeutronClientException as error:
                LOG.warning('Could not delete the trial binding of port %s '
                            'on %s: %s', port_id, host, error,
                            instance=instance)
    LOG.info('Neutron binds the %d port(s) of instance %s on %s (%s)',
             len(bindings), instance.uuid, host, family_name,
             instance=instance)
