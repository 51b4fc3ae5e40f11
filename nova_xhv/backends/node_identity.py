"""Nova's ``$state_path/compute_id`` for backends that name their own node.

Nova (since 2023.2) refuses every later start of a compute without that
file, right after init_host; Nova's default ``get_nodenames_by_uuid``
writes it, but a backend whose node identity is the thing it drives (a
Xen pool's uuid, a remote cloud's project) answers that call itself and
must write the file on its first start.  Nova only checks that the file
exists: a compute pointed at another pool or cloud keeps it and gets a
new node (the old one is deleted as an orphan).
"""

import os

from nova.virt import node as nova_node
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


def persist(node_uuid, what):
    """Write ``node_uuid`` as this compute's identity if none is written.

    ``what`` names the driven thing in the warning given when the written
    identity is another one's.
    """
    try:
        found = nova_node.read_local_node_uuid()
    except cfg.NoSuchOptError:
        return  # no Nova service parsed this configuration: no state
    if found is None:
        os.makedirs(CONF.state_path, exist_ok=True)
        nova_node.write_local_node_uuid(node_uuid)
    elif found != node_uuid:
        LOG.warning('Node identity %s (compute_id) is not the %s this '
                    'compute drives now: Nova makes a new node for it',
                    found, what)
