"""Nova's objects as the policy's input document (nova_xhv.policy.inputs).

The only module of nova_xhv.policy that imports Nova.  Every read that can
fail (a host without aggregates, a server without tags) degrades to an
empty value rather than failing the decision: the policy then decides on
what is known, and fail-closed covers a policy that cannot run at all.
"""

from nova import context as nova_context
from nova import objects
from nova.objects import image_meta as nova_image_meta
from nova import utils as nova_utils
from oslo_config import cfg
from oslo_log import log as logging

from nova_xhv.policy import inputs

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# ImageMetaProps field -> the Glance property name operators write.
_GLANCE_NAMES = {new: old for old, new in
                 nova_image_meta.ImageMetaProps._legacy_property_map.items()}


def caller_of(context):
    return inputs.caller(getattr(context, 'roles', None) or (),
                         getattr(context, 'project_id', None),
                         getattr(context, 'user_id', None))


def request_id_of(context):
    return getattr(context, 'request_id', None)


def image_properties_of_instance(instance):
    try:
        return nova_utils.get_image_from_system_metadata(
            instance.system_metadata)['properties']
    except Exception as error:
        LOG.debug('no image properties for %s: %s', instance.uuid, error)
        return {}


def image_properties_of_meta(image_meta):
    """Glance property names of an ImageMeta's properties."""
    if image_meta is None or 'properties' not in image_meta:
        return {}
    props = image_meta.properties
    found = {}
    for field in props.fields:
        if props.obj_attr_is_set(field):
            found[_GLANCE_NAMES.get(field, field)] = getattr(props, field)
    return found


def _tags(instance):
    try:
        return [t.tag for t in instance.tags or ()]
    except Exception:
        return []


def _metadata(instance):
    try:
        return dict(instance.metadata or {})
    except Exception:
        return {}


def server_of_instance(instance):
    flavor = instance.flavor if 'flavor' in instance or \
        instance.obj_attr_is_set('flavor') else None
    return inputs.server(
        uuid=instance.uuid, project_id=instance.project_id,
        tags=_tags(instance), metadata=_metadata(instance),
        flavor_name=flavor.name if flavor else None,
        extra_specs=dict(flavor.extra_specs or {}) if flavor else {},
        image_properties=image_properties_of_instance(instance))


def server_of_spec(spec_obj, instance=None):
    """The server of a scheduling request; ``instance`` adds tags, metadata."""
    flavor = spec_obj.flavor if 'flavor' in spec_obj else None
    props = image_properties_of_meta(spec_obj.image if 'image' in spec_obj
                                     else None)
    if instance is not None:
        props = dict(image_properties_of_instance(instance), **props)
    return inputs.server(
        uuid=spec_obj.instance_uuid if 'instance_uuid' in spec_obj else None,
        project_id=spec_obj.project_id if 'project_id' in spec_obj else None,
        tags=_tags(instance) if instance is not None else (),
        metadata=_metadata(instance) if instance is not None else {},
        flavor_name=flavor.name if flavor else None,
        extra_specs=dict(flavor.extra_specs or {}) if flavor else {},
        image_properties=props)


def aggregates_view(aggregates):
    """([{name, metadata}], availability zone) of Aggregate objects."""
    views = []
    zone = None
    for aggregate in aggregates or ():
        metadata = dict(aggregate.metadata or {})
        views.append({'name': aggregate.name, 'metadata': metadata})
        zone = zone or metadata.get('availability_zone')
    return views, zone or CONF.default_availability_zone


def aggregates_of_host(context, host):
    try:
        return aggregates_view(objects.AggregateList.get_by_host(context,
                                                                 host))
    except Exception as error:
        LOG.warning('XHV policy: cannot read the aggregates of host %s: %s',
                    host, error)
        return [], CONF.default_availability_zone


def host_of_state(host_state, name=None):
    """A HOST from the scheduler's HostState (``name`` None: the class)."""
    aggregates, zone = aggregates_view(host_state.aggregates)
    return inputs.host_from_stats(
        name, host_state.stats or {}, host_state.hypervisor_type,
        aggregates, zone)


CLASS_CACHE_SIZE = 4096


def host_class_of_state(host_state, cache):
    """(class key, HOST without name) of a HostState, remembered in ``cache``.

    Keyed by everything host_of_state reads (hypervisor type, the stats in
    inputs.STAT_KEYS, each aggregate's name and metadata, the default
    zone), which is cheaper to build than the view and its key.
    """
    try:
        raw = (host_state.hypervisor_type,
               inputs.stats_key(host_state.stats),
               tuple((a.name, tuple(sorted((a.metadata or {}).items())))
                     for a in host_state.aggregates or ()),
               CONF.default_availability_zone)
        found = cache.get(raw)
    except TypeError:  # something unhashable: no shortcut
        raw, found = None, None
    if found is None:
        view = host_of_state(host_state)
        found = (inputs.host_class(view), view)
        if raw is not None:
            if len(cache) >= CLASS_CACHE_SIZE:
                cache.clear()
            cache[raw] = found
    return found


def host_of_node(context, host, nodename=None):
    """A HOST from a compute's node record, in the current cell."""
    nodes = (objects.ComputeNodeList.get_all_by_host(context, host)
             if nodename is None else
             [objects.ComputeNode.get_by_host_and_nodename(context, host,
                                                           nodename)])
    node = nodes[0] if nodes else None
    aggregates, zone = aggregates_of_host(context, host)
    return inputs.host_from_stats(
        host, (node.stats or {}) if node else {},
        node.hypervisor_type if node else None, aggregates, zone)


def host_in_its_cell(context, host):
    """host_of_node for a host of any cell (the scheduler's view)."""
    mapping = objects.HostMapping.get_by_host(context, host)
    with nova_context.target_cell(context, mapping.cell_mapping) as cctxt:
        return host_of_node(cctxt, host)


def instance_in_its_cell(context, instance_uuid):
    mapping = objects.InstanceMapping.get_by_instance_uuid(context,
                                                           instance_uuid)
    with nova_context.target_cell(context, mapping.cell_mapping) as cctxt:
        return objects.Instance.get_by_uuid(
            cctxt, instance_uuid,
            expected_attrs=['metadata', 'system_metadata', 'tags',
                            'flavor'])
