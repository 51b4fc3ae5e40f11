"""The input document every enforcement point hands the policy.

Pure: plain values in, one JSON-able dict out (nova_xhv.policy.nova_input
adapts Nova's objects to these calls)::

    {"action": "boot|move|resize|evacuate|live_migrate|unshelve|audit",
     "point": "api|scheduler|driver|exchange|audit",
     "request_id": "req-...",
     "caller": {"roles": [...], "project_id": ..., "user_id": ...},
     "server": {"uuid", "project_id", "tags": [...], "metadata": {...},
                "flavor": {"name", "extra_specs": {...}},
                "image": {"properties": {...}, "pinned_family": ...}},
     "source": HOST or null, "destination": HOST or null}

    HOST: {"host", "family", "aggregates": [{"name", "metadata"}],
           "availability_zone", "capabilities": [...],
           "accepts": [...] or null, "new_boot_families": [...],
           "policy_digest"}

Property values are strings (the policy compares strings).
"""

import json

from nova_xhv.backends import family as backend_family

ACTIONS = ('boot', 'move', 'resize', 'evacuate', 'live_migrate', 'unshelve',
           'audit')
POINTS = ('api', 'scheduler', 'driver', 'exchange', 'audit', 'explain')

# Compute node stats an XHV compute publishes for the policy.
STAT_CAPABILITIES = 'xhv_capabilities'
STAT_DIGEST = 'xhv_policy_digest'
STAT_NEW_BOOT = 'xhv_new_boot'
# Every stat host_from_stats reads (stats_key must see all of them).
STAT_KEYS = ('xhv_family', 'xhv_accepts', STAT_CAPABILITIES, STAT_NEW_BOOT,
             STAT_DIGEST)


def plain(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return ''
    if isinstance(value, (list, tuple)):
        return ','.join(plain(v) for v in value)
    return str(value)


def plain_mapping(mapping):
    return {str(k): plain(v) for k, v in (mapping or {}).items()}


def split_list(text):
    """A comma list from compute node stats."""
    return [part.strip() for part in (text or '').split(',') if part.strip()]


def caller(roles=(), project_id=None, user_id=None):
    return {'roles': sorted({str(r).lower() for r in roles or ()}),
            'project_id': project_id, 'user_id': user_id}


def pinned_family(image_properties):
    hv_type = (image_properties or {}).get('hypervisor_type')
    return backend_family.family_of_hv_type(hv_type) if hv_type else None


def server(uuid=None, project_id=None, tags=(), metadata=None,
           flavor_name=None, extra_specs=None, image_properties=None):
    props = plain_mapping(image_properties)
    return {'uuid': uuid, 'project_id': project_id,
            'tags': sorted(str(t) for t in tags or ()),
            'metadata': plain_mapping(metadata),
            'flavor': {'name': flavor_name,
                       'extra_specs': plain_mapping(extra_specs)},
            'image': {'properties': props,
                      'pinned_family': pinned_family(props)}}


def host(name=None, family=None, aggregates=(), availability_zone=None,
         capabilities=(), accepts=None, new_boot_families=(),
         policy_digest=None):
    return {'host': name, 'family': family,
            'aggregates': sorted(
                ({'name': a['name'],
                  'metadata': plain_mapping(a.get('metadata'))}
                 for a in aggregates or ()), key=lambda a: a['name']),
            'availability_zone': availability_zone,
            'capabilities': sorted(set(capabilities or ())),
            'accepts': None if accepts is None else sorted(set(accepts)),
            'new_boot_families': sorted({f.lower() for f in
                                         new_boot_families or ()}),
            'policy_digest': policy_digest}


def host_from_stats(name, stats, hypervisor_type=None, aggregates=(),
                    availability_zone=None):
    """A HOST from what an XHV compute publishes in its node stats."""
    stats = stats or {}
    family = (stats.get('xhv_family')
              or backend_family.family_of_hv_type(hypervisor_type))
    accepts = (split_list(stats['xhv_accepts'])
               if 'xhv_accepts' in stats else [])
    return host(name=name, family=family, aggregates=aggregates,
                availability_zone=availability_zone,
                capabilities=split_list(stats.get(STAT_CAPABILITIES)),
                accepts=accepts,
                new_boot_families=split_list(stats.get(STAT_NEW_BOOT)),
                policy_digest=stats.get(STAT_DIGEST))


def stats_key(stats):
    """What host_from_stats reads of ``stats``, hashable."""
    stats = stats or {}
    return tuple((key, stats[key]) for key in STAT_KEYS if key in stats)


def document(action, caller_doc, server_doc, source=None, destination=None,
             point=None, request_id=None):
    if action not in ACTIONS:
        raise ValueError('unknown policy action %r' % action)
    return {'action': action, 'point': point, 'request_id': request_id,
            'caller': caller_doc, 'server': server_doc,
            'source': source, 'destination': destination}


def host_class(host_doc):
    """What makes two hosts the same to the policy: all but the name.

    The scheduler decides once per class (see nova_xhv.scheduler); rules
    that name single hosts belong in the driver's backstop.
    """
    if host_doc is None:
        return 'none'
    return json.dumps(dict(host_doc, host=None), sort_keys=True)
