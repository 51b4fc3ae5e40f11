"""What the compute node is made of, read with one PropertyCollector query
each (paged), never one call per object.

* ``discover``: datacenter, compute resource (cluster or standalone host),
  its root resource pool and the VM folder, from the root folder.
* ``resources``: the compute resource, its hosts and its datastores.
* ``vms``: every VM under the compute resource's resource pools.
"""

import re

from oslo_log import log as logging
from pyVmomi import vim
from pyVmomi import vmodl

from nova_xhv.backends.vmware import errors

LOG = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
PAGE_SIZE = 1000
MiB = 1024 * 1024
GiB = 1024 * MiB


def _traverse(name, type_, path, *select):
    return PC.TraversalSpec(
        name=name, type=type_, path=path, skip=False,
        selectSet=[PC.SelectionSpec(name=s) for s in select])


def retrieve(session, what, root, traversal, properties, skip_root=False):
    """One RetrievePropertiesEx (continued page by page).

    :param properties: {managed object class: [property paths]}
    :returns: list of (managed object, {path: value})
    """
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=root, skip=skip_root,
                                 selectSet=traversal)],
        propSet=[PC.PropertySpec(type=type_, pathSet=paths, all=False)
                 for type_, paths in properties.items()])
    collector = session.content.propertyCollector
    result = session.run(what, _checked, collector.RetrievePropertiesEx,
                         [spec], PC.RetrieveOptions(maxObjects=PAGE_SIZE))
    found = []
    while result is not None:
        for content in result.objects:
            found.append((content.obj,
                          {p.name: p.val for p in content.propSet or []}))
        if not result.token:
            break
        result = session.run(what, _checked,
                             collector.ContinueRetrievePropertiesEx,
                             result.token)
    return found


def _checked(method, *args):
    """Call a retrieve method; raise a property's NotAuthenticated fault.

    Some servers (vcsim among them) answer an expired session with
    per-property faults instead of failing the call: raising it lets the
    session log in again and retry.
    """
    result = method(*args)
    for content in (result.objects if result is not None else []):
        for missing in content.missingSet or []:
            if isinstance(missing.fault, vim.fault.NotAuthenticated):
                raise missing.fault
    return result


class ComputeResource:
    """The cluster (or standalone host) behind one nova-compute node."""

    def __init__(self, datacenter, datacenter_name, resource, name,
                 root_pool, vm_folder):
        self.datacenter = datacenter
        self.datacenter_name = datacenter_name
        self.resource = resource
        self.name = name
        self.root_pool = root_pool
        self.vm_folder = vm_folder

    @property
    def is_cluster(self):
        return isinstance(self.resource, vim.ClusterComputeResource)


def discover(session, cluster_name=None, datacenter_name=None,
             vm_folder=None):
    """Find the compute resource named by [xhv_vmware] cluster_name."""
    traversal = [
        _traverse('folderChildren', vim.Folder, 'childEntity',
                  'folderChildren', 'dcHostFolder'),
        _traverse('dcHostFolder', vim.Datacenter, 'hostFolder',
                  'folderChildren'),
    ]
    found = retrieve(
        session, 'discover inventory', session.content.rootFolder, traversal,
        {vim.Folder: ['parent'],
         vim.Datacenter: ['name', 'vmFolder', 'parent'],
         vim.ComputeResource: ['name', 'resourcePool', 'parent']})
    parents = {obj: props.get('parent') for obj, props in found}
    datacenters = {obj: props for obj, props in found
                   if isinstance(obj, vim.Datacenter)}
    resources = [(obj, props) for obj, props in found
                 if isinstance(obj, vim.ComputeResource)]

    def datacenter_of(obj):
        while obj is not None and obj not in datacenters:
            obj = parents.get(obj)
        return obj

    if datacenter_name:
        resources = [(o, p) for o, p in resources
                     if datacenters.get(datacenter_of(o), {}).get('name')
                     == datacenter_name]
    if cluster_name:
        matches = [(o, p) for o, p in resources
                   if isinstance(o, vim.ClusterComputeResource)
                   and p['name'] == cluster_name]
        if not matches:
            names = sorted(p['name'] for o, p in resources
                           if isinstance(o, vim.ClusterComputeResource))
            raise errors.VSphereConfigError(
                detail='cluster %r not found on %s%s (clusters there: %s): '
                       'set cluster_name to one of them' % (
                           cluster_name, session.endpoint,
                           ' in datacenter %r' % datacenter_name
                           if datacenter_name else '',
                           ', '.join(names) or 'none'))
    else:
        matches = [(o, p) for o, p in resources
                   if not isinstance(o, vim.ClusterComputeResource)]
        if len(matches) != 1:
            raise errors.VSphereConfigError(
                detail='cluster_name is empty, which needs exactly one '
                       'standalone host on %s; found %d: set cluster_name'
                       % (session.endpoint, len(matches)))
    if len(matches) > 1:
        raise errors.VSphereConfigError(
            detail='%d clusters are named %r: set datacenter'
                   % (len(matches), cluster_name))
    resource, props = matches[0]
    dc = datacenter_of(resource)
    dc_props = datacenters[dc]
    folder = dc_props['vmFolder']
    if vm_folder:
        folder = _find_folder(session, folder, vm_folder)
    return ComputeResource(dc, dc_props['name'], resource, props['name'],
                           props['resourcePool'], folder)


def _find_folder(session, start, path):
    folder = start
    for part in [p for p in path.split('/') if p]:
        children = session.run('read folder', lambda: folder.childEntity)
        nxt = [c for c in children
               if isinstance(c, vim.Folder) and c.name == part]
        if not nxt:
            raise errors.VSphereConfigError(
                detail='vm_folder %r: folder %r does not exist'
                       % (path, part))
        folder = nxt[0]
    return folder


# Datastores XHV mounts for Cinder's NFS shares (volumes.py): never a
# place for instance disks.
VOLUME_DATASTORE_PREFIX = 'xhv-nfs-'


def resources(session, compute, datastore_regex=None):
    """Capacity of the compute resource's usable hosts and datastores."""
    traversal = [
        _traverse('crHosts', vim.ComputeResource, 'host'),
        _traverse('crDatastores', vim.ComputeResource, 'datastore'),
    ]
    found = retrieve(
        session, 'read resources', compute.resource, traversal,
        {vim.HostSystem: ['name', 'summary.hardware',
                          'runtime.connectionState',
                          'runtime.inMaintenanceMode', 'summary.config',
                          'summary.quickStats.uptime'],
         vim.Datastore: ['summary']}, skip_root=True)
    pattern = re.compile(datastore_regex) if datastore_regex else None
    hosts, datastores = [], []
    for obj, props in found:
        if isinstance(obj, vim.HostSystem):
            if (props.get('runtime.connectionState') != 'connected'
                    or props.get('runtime.inMaintenanceMode')):
                continue
            hw = props['summary.hardware']
            product = getattr(props.get('summary.config'), 'product', None)
            hosts.append({'name': props['name'],
                          'vcpus': hw.numCpuThreads,
                          'memory_mb': hw.memorySize // MiB,
                          'version': getattr(product, 'version', None),
                          'uptime': props.get('summary.quickStats.uptime')})
        elif isinstance(obj, vim.Datastore):
            summary = props['summary']
            if not summary.accessible:
                continue
            if pattern and not pattern.match(summary.name):
                continue
            if summary.name.startswith(VOLUME_DATASTORE_PREFIX):
                continue
            datastores.append({'ref': obj, 'name': summary.name,
                               'capacity': summary.capacity,
                               'free': summary.freeSpace,
                               'type': summary.type})
    return {'hosts': hosts, 'datastores': datastores}


VM_PROPERTIES = ['name', 'config.instanceUuid', 'config.annotation',
                 'runtime.powerState']


def vms(session, compute, properties=VM_PROPERTIES):
    """Every VM in the compute resource's resource pools and vApps."""
    traversal = [
        _traverse('poolPools', vim.ResourcePool, 'resourcePool',
                  'poolPools', 'poolVms'),
        _traverse('poolVms', vim.ResourcePool, 'vm'),
    ]
    found = retrieve(session, 'list VMs', compute.root_pool, traversal,
                     {vim.VirtualMachine: list(properties)})
    return [(obj, props) for obj, props in found
            if isinstance(obj, vim.VirtualMachine)]
