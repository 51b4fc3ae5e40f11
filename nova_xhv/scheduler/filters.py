"""XHVMoveFilter: tell moves of existing servers from new boots.

XHV computes advertise in ``supported_instances`` the hypervisor types
they take through translation, so ImagePropertiesFilter lets an image
pinned with ``hypervisor_type=vmware`` move to a KVM compute.  That alone
would also let a NEW boot of that image land on KVM.  This filter keeps
the pin for new boots, and applies each compute's ``[xhv]
accepted_source_families`` to moves.

A request is a move when it excludes hosts (``ignore_hosts``: Nova puts
the server's current host there for a cold migration, resize, evacuation
or live migration).  The source family is read from the source's compute
node stats (published by XHVDriver), in the cell the move targets.

Enable it with::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = nova_xhv.scheduler.filters.XHVMoveFilter
    enabled_filters = ...,XHVMoveFilter
"""

import collections
import threading

from nova import context as nova_context
from nova import objects
from nova.scheduler import filters
from oslo_log import log as logging

from nova_xhv.migration import source_side

LOG = logging.getLogger(__name__)

_CACHE_SIZE = 256


class XHVMoveFilter(filters.BaseHostFilter):
    """Pinned images boot on their own family; moves honour [xhv]."""

    RUN_ON_REBUILD = False

    def __init__(self):
        super().__init__()
        self._families = collections.OrderedDict()
        self._lock = threading.Lock()

    def host_passes(self, host_state, spec_obj):
        stats = host_state.stats or {}
        family = stats.get(source_side.STAT_FAMILY)
        if not family:
            return True  # not an XHV compute: the stock filters decide
        if _is_move(spec_obj):
            source = self._source_family(spec_obj)
            if not source_side.crosses_families(source, family):
                return True
            accepts = [f for f in (stats.get(source_side.STAT_ACCEPTS) or ''
                                   ).split(',') if f]
            if source not in accepts:
                LOG.debug('%s (%s) does not take servers from %s ([xhv] '
                          'accepted_source_families or no exchange_secret)',
                          host_state.host, family, source)
                return False
            return True
        hv_type = _image_hv_type(spec_obj)
        pinned = source_side.family_of_hv_type(hv_type)
        if not source_side.crosses_families(pinned, family):
            return True
        allowed = [f.strip().lower() for f in (
            stats.get('xhv_new_boot') or '').split(',') if f.strip()]
        if pinned in allowed or (hv_type or '').lower() in allowed:
            return True
        LOG.debug('%s (%s): a new boot of an image pinned to %s lands only '
                  'on %s computes ([xhv] new_boot_families)', host_state.host,
                  family, hv_type, pinned)
        return False

    def _source_family(self, spec_obj):
        source_host = spec_obj.ignore_hosts[0]
        key = (spec_obj.instance_uuid if 'instance_uuid' in spec_obj
               else None, source_host)
        with self._lock:
            if key in self._families:
                return self._families[key]
        family = _lookup_family(spec_obj, source_host)
        with self._lock:
            self._families[key] = family
            while len(self._families) > _CACHE_SIZE:
                self._families.popitem(last=False)
        return family


def _is_move(spec_obj):
    return bool('ignore_hosts' in spec_obj and spec_obj.ignore_hosts)


def _image_hv_type(spec_obj):
    if 'image' not in spec_obj or spec_obj.image is None:
        return None
    props = spec_obj.image.properties
    return props.get('img_hv_type') if 'img_hv_type' in props else None


def _lookup_family(spec_obj, host):
    context = getattr(spec_obj, '_context', None)
    destination = (spec_obj.requested_destination
                   if 'requested_destination' in spec_obj else None)
    cell = (destination.cell if destination is not None
            and 'cell' in destination else None)
    if context is None:
        return None
    try:
        if cell is not None:
            with nova_context.target_cell(context, cell) as cell_context:
                nodes = objects.ComputeNodeList.get_all_by_host(
                    cell_context, host)
        else:
            mapping = objects.HostMapping.get_by_host(context, host)
            with nova_context.target_cell(
                    context, mapping.cell_mapping) as cell_context:
                nodes = objects.ComputeNodeList.get_all_by_host(
                    cell_context, host)
    except Exception as error:
        LOG.warning('XHVMoveFilter cannot read the source host %s: %s',
                    host, error)
        return None
    for node in nodes:
        family = ((node.stats or {}).get(source_side.STAT_FAMILY)
                  or source_side.family_of_hv_type(node.hypervisor_type))
        if family:
            return family
    return None
