"""Flavors and capacity: how the home scheduler sees the remote project.

Pure functions of what the remote API answered: which remote flavor a
home flavor becomes, and the Placement inventory of the project.
"""

from nova_xhv.backends.cloud import errors


def choose(flavors, home, flavor_map, cloud):
    """The remote flavor for the home flavor ``home``.

    ``flavor_map`` (home name -> remote name or id), else the remote
    flavor of the same name, else the smallest that fits; none fits:
    ``RemoteNoCapacity`` (Nova reschedules).
    """
    named = home.obj_attr_is_set('name')
    wanted = flavor_map.get(home.name) if named else None
    if wanted:
        for flavor in flavors:
            if wanted in (flavor.id, flavor.name):
                return flavor
        raise errors.RemoteConfigError(
            cloud=cloud, reason='[xhv_cloud] flavor_map maps %s to %r, '
                                'which it does not have' % (home.name,
                                                            wanted))
    if named:
        for flavor in flavors:
            if flavor.name == home.name:
                return flavor
    fitting = [f for f in flavors if f.vcpus >= home.vcpus
               and f.ram >= home.memory_mb and f.disk >= home.root_gb]
    if not fitting:
        raise errors.RemoteNoCapacity(
            cloud=cloud, call='choosing a flavor',
            reason='no remote flavor has %d vCPUs, %d MiB and %d GiB'
                   % (home.vcpus, home.memory_mb, home.root_gb))
    return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk, f.name))


def capacity(absolute, flavors, our_servers, unlimited):
    """{resource class: (total, reserved, max_unit)} of the project.

    ``absolute``: the remote ``GET /limits`` answer; ``our_servers``: the
    remote servers XHV made.  total = the quota (or ``unlimited``);
    reserved = the usage of servers XHV did not make; max_unit = the
    largest remote flavor's size.
    """
    ours = {'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}
    for server in our_servers:
        flavor = server.flavor or {}
        ours['VCPU'] += int(flavor.get('vcpus') or 0)
        ours['MEMORY_MB'] += int(flavor.get('ram') or 0)
        ours['DISK_GB'] += int(flavor.get('disk') or 0)
    unlimited = {k: int(v) for k, v in unlimited.items()}
    largest = {
        'VCPU': max((f.vcpus for f in flavors), default=1),
        'MEMORY_MB': max((f.ram for f in flavors), default=1),
        'DISK_GB': max((f.disk for f in flavors), default=1)}
    instances = absolute.instances
    quota = {
        'VCPU': (absolute.total_cores, absolute.total_cores_used),
        'MEMORY_MB': (absolute.total_ram, absolute.total_ram_used),
        # Compute quotas do not count root disks: the instance quota
        # times the largest root disk bounds them.
        'DISK_GB': (None if instances is None or instances < 0
                    else instances * largest['DISK_GB'], None)}
    result = {}
    for rc, (total, used) in quota.items():
        if total is None or total < 0:
            total = unlimited.get(rc, 0)
        used = ours[rc] if used is None else used
        reserved = min(max(0, used - ours[rc]), total)
        result[rc] = (total, reserved,
                      max(1, min(largest[rc], total) if total else 1))
    return result
