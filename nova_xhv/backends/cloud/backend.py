"""CloudBackend: one project in one region of another OpenStack cloud.

The node is the remote project.  Capacity comes from its quota and usage;
a guest is a remote server whose metadata carries the home instance's
uuid (``xhv_home_uuid``); the disk exchange moves disks as remote images:
stage uploads a private image, spawn boots from it, export snapshots the
stopped remote server.  Every remote call goes through
``errors.remote_call`` (doc/source/cloud.rst).
"""

import hashlib
import os
import shutil
import struct
import tempfile
import time

from nova.compute import power_state
from nova.compute import task_states
from nova import exception
from nova.image import glance
from nova.virt import driver
from nova.virt import hardware as nova_hardware
from nova.virt import node as nova_node
import os_resource_classes as orc
import os_traits
from oslo_concurrency import lockutils
from oslo_config import cfg
from oslo_log import log as logging

from nova_xhv.backends import base
from nova_xhv.backends.cloud import errors
from nova_xhv.backends.cloud import facts as cloud_facts
from nova_xhv.backends.cloud import remote
from nova_xhv.backends import family
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv.disk import DiskDescriptor
from nova_xhv.disk import DiskReader
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
FAMILY = cloud_facts.FAMILY
GiB = 1024 ** 3

#: Remote server metadata: the home instance it stands for.
HOME_UUID = 'xhv_home_uuid'
#: Remote image tags: a cached copy of a home image (by content hash), a
#: disk staged for a move, a snapshot exported for a move.
CACHED_TAG = 'xhv-image-%s'
STAGED_TAG = 'xhv-staged-%s'
EXPORT_TAG = 'xhv-export-%s'
SERVER_NAME = 'xhv-%s'
# Remote ports: named by position and home port, described by instance.
PORT_NAME = 'xhv-%02d-%s'
PORT_OWNER = 'xhv-instance:%s'
# Nova's status of a remote server -> its power state, when the remote
# API does not show OS-EXT-STS:power_state.
STATUS_POWER = {'ACTIVE': power_state.RUNNING,
                'SHUTOFF': power_state.SHUTDOWN,
                'PAUSED': power_state.PAUSED,
                'SUSPENDED': power_state.SUSPENDED,
                'ERROR': power_state.CRASHED}
TRAIT_PREFIX = 'CUSTOM_XHV_CLOUD_'
# Seconds between two looks at a remote server or image that is changing.
POLL_INTERVAL = 0.25
# Attempts of a remote read that meets a transient failure (5xx, reset).
READ_ATTEMPTS = 3
REGION_TRAIT_PREFIX = 'CUSTOM_XHV_REGION_'


class UnsupportedRequest(exception.NovaException):
    msg_fmt = 'The XHV cloud backend cannot do this yet: %(what)s'


def _trait(prefix, name):
    return os_traits.normalize_name(prefix[len('CUSTOM_'):] + name)


class CloudBackend(base.Backend):
    """A remote OpenStack project as one node (see module doc)."""

    facts = FAMILY
    capabilities = dict(
        driver.ComputeDriver.capabilities,
        # The translation engine turns each into [xhv_cloud] image_format.
        supports_image_type_raw=True, supports_image_type_qcow2=True,
        supports_image_type_vmdk=True, supports_image_type_vhdx=True,
        supports_image_type_vhd=True)

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.conf = CONF.xhv_cloud
        self.cloud = self.conf.cloud or '(none)'
        self.conn = None
        self._nodename = None
        self._node_uuid = None
        self._region = None

    # -- service ----------------------------------------------------------

    def _call(self, call):
        return errors.remote_call(self.cloud, call)

    def init_host(self, host):
        self.conn = remote.connect(self.conf)
        auth_url, self._region, project = remote.identity(self.conn,
                                                          self.cloud)
        self._node_uuid = remote.node_uuid(auth_url, self._region, project)
        # Nova refuses every later start without $state_path/compute_id,
        # which only its default get_nodenames_by_uuid writes (as xenapi).
        try:
            found = nova_node.read_local_node_uuid()
        except cfg.NoSuchOptError:  # no service parsed CONF: no state
            found = ''
        if found is None:
            os.makedirs(CONF.state_path, exist_ok=True)
            nova_node.write_local_node_uuid(self._node_uuid)
        self._nodename = self.conf.node_name or '%s-%s' % (
            self.cloud, self._region or 'default')
        os.makedirs(self.conf.staging_dir, mode=0o700, exist_ok=True)
        with self._call('GET /limits'):
            self.conn.compute.get_limits()
        LOG.info('XHV cloud backend stands for project %s in region %s of '
                 'cloud %s', project, self._region or '(default)', self.cloud)

    def cleanup_host(self, host):
        if self.conn is not None:
            self.conn.close()

    def get_available_nodes(self, refresh=False):
        return [self._nodename] if self._nodename else []

    def get_nodenames_by_uuid(self, refresh=False):
        return ({self._node_uuid: self._nodename} if self._nodename
                else {})

    def get_host_ip_addr(self):
        # This nova-compute's address (where XHV serves disk transfers).
        return CONF.my_ip

    # -- capacity ---------------------------------------------------------

    def _servers(self):
        """This project's remote servers that stand for home instances."""
        listed = self._read(
            'GET /servers/detail',
            lambda: list(self.conn.compute.servers(details=True)))
        return [s for s in listed if (s.metadata or {}).get(HOME_UUID)]

    def _flavors(self):
        with self._call('GET /flavors/detail'):
            return list(self.conn.compute.flavors(details=True))

    def capacity(self):
        """{resource class: (total, reserved, max_unit)} of the project.

        total = the quota (or ``capacity_if_unlimited``); reserved = the
        usage of servers XHV did not make; max_unit = the largest remote
        flavor's size.
        """
        with self._call('GET /limits'):
            absolute = self.conn.compute.get_limits().absolute
        flavors = self._flavors()
        ours = {'VCPU': 0, 'MEMORY_MB': 0, 'DISK_GB': 0}
        for server in self._servers():
            flavor = server.flavor or {}
            ours['VCPU'] += int(flavor.get('vcpus') or 0)
            ours['MEMORY_MB'] += int(flavor.get('ram') or 0)
            ours['DISK_GB'] += int(flavor.get('disk') or 0)
        unlimited = {k: int(v) for k, v in
                     self.conf.capacity_if_unlimited.items()}
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

    def traits(self):
        return [_trait(TRAIT_PREFIX, self.cloud),
                _trait(REGION_TRAIT_PREFIX, self._region or 'default')]

    def get_available_resource(self, nodename):
        cap = self.capacity()
        return {
            'vcpus': cap['VCPU'][0], 'memory_mb': cap['MEMORY_MB'][0],
            'local_gb': cap['DISK_GB'][0], 'vcpus_used': 0,
            'memory_mb_used': 0, 'local_gb_used': 0,
            'hypervisor_type': 'cloud', 'hypervisor_version': 1,
            'hypervisor_hostname': nodename, 'uuid': self._node_uuid,
            'cpu_info': None, 'supported_instances': [],
            'numa_topology': None,
        }

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        cap = self.capacity()
        inventory = {}
        for rc, orc_name in (('VCPU', orc.VCPU), ('MEMORY_MB',
                                                  orc.MEMORY_MB),
                             ('DISK_GB', orc.DISK_GB)):
            total, reserved, max_unit = cap[rc]
            if total <= 0:
                continue
            inventory[orc_name] = {
                'total': total, 'reserved': reserved, 'min_unit': 1,
                'max_unit': max_unit, 'step_size': 1,
                # The remote quota counts real units: no overcommit.
                'allocation_ratio': 1.0}
        provider_tree.update_inventory(nodename, inventory)
        provider_tree.add_traits(nodename, *self.traits())

    # -- remote servers ---------------------------------------------------

    def _read(self, call, fetch):
        """``fetch()``, a remote read, again after a transient failure.

        Reads change nothing: one that met a 5xx or a dropped connection
        is repeated (READ_ATTEMPTS in all) before it counts as failed.
        """
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                with self._call(call):
                    return fetch()
            except errors.RemoteCloudError as exc:
                status = errors.status_of(exc.__cause__)
                transient = (isinstance(exc, errors.RemoteCloudUnreachable)
                             or (status is not None and status >= 500))
                if not transient or attempt == READ_ATTEMPTS:
                    raise
                LOG.warning('%s; trying again', exc)
                time.sleep(POLL_INTERVAL * attempt)

    def _find(self, instance):
        """The remote server standing for ``instance``, or None."""
        name = SERVER_NAME % instance.uuid
        listed = self._read(
            'GET /servers/detail?name=%s' % name,
            lambda: list(self.conn.compute.servers(details=True,
                                                   name='^%s$' % name)))
        found = [s for s in listed
                 if (s.metadata or {}).get(HOME_UUID) == instance.uuid]
        if not found:
            # Renamed remotely: the metadata still says whose it is.
            found = [s for s in self._servers()
                     if s.metadata[HOME_UUID] == instance.uuid]
        return found[0] if found else None

    def _get(self, instance):
        server = self._find(instance)
        if server is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return server

    def _wait(self, server, statuses, call):
        deadline = time.monotonic() + self.conf.build_timeout
        while True:
            server = self._read('GET /servers/%s' % server.id,
                                lambda: self.conn.compute.get_server(
                                    server.id))
            if server.status in statuses and not server.task_state:
                return server
            if server.status == 'ERROR':
                raise errors.server_fault(self.cloud, call, server)
            if time.monotonic() > deadline:
                raise errors.RemoteCloudTimeout(
                    cloud=self.cloud, call=call,
                    reason='server %s is still %s/%s after %ss' % (
                        server.id, server.status, server.task_state,
                        self.conf.build_timeout))
            time.sleep(POLL_INTERVAL)

    def list_instance_uuids(self):
        return [s.metadata[HOME_UUID] for s in self._servers()]

    def list_instances(self):
        return [s.name for s in self._servers()]

    def instance_exists(self, instance):
        return self._find(instance) is not None

    def get_info(self, instance, use_cache=True):
        server = self._get(instance)
        state = server.power_state
        if state is None:
            state = STATUS_POWER.get(server.status, power_state.NOSTATE)
        return nova_hardware.InstanceInfo(state=int(state),
                                          internal_id=server.id)

    def plugged_ports(self, instance):
        # The remote ports made for the home ports, in order.
        self._get(instance)
        found = []
        for port in self._ports(instance):
            home = (port.name or '').split('-', 2)[-1] or None
            found.append((home, port.mac_address))
        return found

    def power_off(self, instance, timeout=0, retry_interval=0):
        server = self._get(instance)
        if server.status != 'SHUTOFF':
            call = 'POST /servers/%s/action os-stop' % server.id
            with self._call(call):
                self.conn.compute.stop_server(server)
            self._wait(server, ('SHUTOFF',), call)

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        server = self._get(instance)
        if server.status != 'ACTIVE':
            call = 'POST /servers/%s/action os-start' % server.id
            with self._call(call):
                self.conn.compute.start_server(server)
            self._wait(server, ('ACTIVE',), call)

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        server = self._get(instance)
        call = 'POST /servers/%s/action reboot %s' % (server.id, reboot_type)
        with self._call(call):
            self.conn.compute.reboot_server(
                server, 'HARD' if reboot_type == 'HARD' else 'SOFT')
        self._wait(server, ('ACTIVE',), call)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        server = self._find(instance)
        if server is None:
            LOG.info('Instance %s has no server in cloud %s', instance.uuid,
                     self.cloud)
        else:
            call = 'DELETE /servers/%s' % server.id
            with self._call(call):
                self.conn.compute.delete_server(server, ignore_missing=True)
                self.conn.compute.wait_for_delete(
                    server, interval=POLL_INTERVAL,
                    wait=self.conf.build_timeout)
        self._delete_ports(instance)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        pass  # destroy() deleted the remote server and its ports

    def get_console_output(self, context, instance):
        server = self._get(instance)
        with self._call('POST /servers/%s/action os-getConsoleOutput'
                        % server.id):
            output = self.conn.compute.get_server_console_output(server)
        return (output or {}).get('output') or ''

    # -- building remote servers -----------------------------------------

    def _flavor(self, instance):
        """The remote flavor for the instance's flavor (see [xhv_cloud])."""
        flavors = self._flavors()
        home = instance.flavor
        wanted = self.conf.flavor_map.get(home.name) if \
            home.obj_attr_is_set('name') else None
        if wanted:
            for flavor in flavors:
                if wanted in (flavor.id, flavor.name):
                    return flavor
            raise errors.RemoteConfigError(
                cloud=self.cloud, reason='[xhv_cloud] flavor_map maps %s to '
                                         '%r, which it does not have'
                                         % (home.name, wanted))
        if home.obj_attr_is_set('name'):
            for flavor in flavors:
                if flavor.name == home.name:
                    return flavor
        fitting = [f for f in flavors if f.vcpus >= home.vcpus
                   and f.ram >= home.memory_mb and f.disk >= home.root_gb]
        if not fitting:
            raise errors.RemoteNoCapacity(
                cloud=self.cloud, call='choosing a flavor',
                reason='no remote flavor has %d vCPUs, %d MiB and %d GiB'
                       % (home.vcpus, home.memory_mb, home.root_gb))
        return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk, f.name))

    def _remote_networks(self, network_info):
        """[(Nic, remote network id)] for the home ports, checked first.

        Each home port goes on the remote network ``[xhv_cloud]
        network_map`` names for its network (by id or name), else the one
        its binding names (``cloud_network``, the segment's network as
        XHV's ML2 driver names it), else the remote network of the same
        name.
        """
        vifs = list(network_info or [])
        nics = self.nics(vifs)
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
                with self._call('GET /v2.0/networks?name=%s' % target):
                    remote_net = self.conn.network.find_network(
                        target, ignore_missing=True)
            if remote_net is None:
                raise base.VifRefused(
                    family=self.family, port_id=nic.port_id,
                    reason='cloud %s has no network %r; map it in '
                           '[xhv_cloud] network_map' % (self.cloud, target))
            wanted.append((nic, remote_net.id))
        return wanted

    def _make_ports(self, instance, networks):
        """Remote ports with the home ports' MACs, in order.

        Their description names the instance; none is left on failure.
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
                    with self._call(call):
                        port = self.conn.network.create_port(
                            mac_address=nic.mac, **attrs)
                except errors.RemoteCloudError as exc:
                    if errors.status_of(exc.__cause__) != 403:
                        raise
                    # The remote project may not set MACs: a new one.
                    LOG.warning('Cloud %s refused MAC %s for home port %s; '
                                'the remote port gets its own', self.cloud,
                                nic.mac, nic.port_id)
                    with self._call(call):
                        port = self.conn.network.create_port(**attrs)
                made.append(port)
        except Exception:
            self._delete_ports(instance)
            raise
        return [{'port': port.id} for port in made] or 'none'

    def _ports(self, instance):
        with self._call('GET /v2.0/ports?description=%s'
                        % (PORT_OWNER % instance.uuid)):
            ports = list(self.conn.network.ports(
                description=PORT_OWNER % instance.uuid))
        return sorted(ports, key=lambda p: p.name or '')

    def _delete_ports(self, instance):
        if not self._has_network():
            return
        for port in self._ports(instance):
            with self._call('DELETE /v2.0/ports/%s' % port.id):
                self.conn.network.delete_port(port, ignore_missing=True)

    def _has_network(self):
        try:
            return self.conn.has_service('network')
        except Exception:  # noqa: B902 - no catalog entry: no Neutron
            return False

    def _boot(self, instance, image_id, network_info, power_on, call):
        networks = self._remote_networks(network_info)
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        flavor = self._flavor(instance)
        ports = self._make_ports(instance, networks)
        server = None
        try:
            with self._call(call):
                server = self.conn.compute.create_server(
                    name=SERVER_NAME % instance.uuid, image_id=image_id,
                    flavor_id=flavor.id, networks=ports,
                    metadata={HOME_UUID: instance.uuid})
            server = self._wait(server, ('ACTIVE',), call)
            if not power_on:
                stop = 'POST /servers/%s/action os-stop' % server.id
                with self._call(stop):
                    self.conn.compute.stop_server(server)
                self._wait(server, ('SHUTOFF',), stop)
        except Exception:
            if server is not None:
                self._delete_server(server)
            self._delete_ports(instance)
            raise
        return server

    def _delete_server(self, server):
        try:
            with self._call('DELETE /servers/%s' % server.id):
                self.conn.compute.delete_server(server, ignore_missing=True)
                self.conn.compute.wait_for_delete(
                    server, interval=POLL_INTERVAL,
                    wait=self.conf.build_timeout)
        except Exception as exc:
            LOG.warning('Could not delete remote server %s of cloud %s '
                        'after a failed build: %s', server.id, self.cloud,
                        exc)

    def _work_dir(self, prefix):
        return tempfile.mkdtemp(prefix=prefix, dir=self.conf.staging_dir)

    def _upload(self, name, path, tags, properties, call):
        """A private remote image of the file ``path`` (format checked)."""
        with self._call(call):
            image = self.conn.image.create_image(
                name, filename=path, disk_format=self.conf.image_format,
                container_format='bare', visibility='private', tags=tags,
                allow_duplicates=True, wait=True,
                timeout=self.conf.build_timeout, **properties)
        return image

    def _delete_image(self, image_id):
        with self._call('DELETE /v2/images/%s' % image_id):
            self.conn.image.delete_image(image_id, ignore_missing=True)

    def _images_tagged(self, tag):
        with self._call('GET /v2/images?tag=%s' % tag):
            return list(self.conn.image.images(tag=tag))

    def _remote_image(self, context, image_meta, instance):
        """The remote image for a home image: cached by its content hash.

        The first spawn of an image downloads it from the home Glance,
        translates it to ``image_format`` (after the engine's safety
        inspection) and uploads it; later spawns find it by its tag.
        """
        home = glance.API().get(context, image_meta.id)
        digest = (home.get('os_hash_value') or home.get('checksum')
                  or image_meta.id)
        tag = CACHED_TAG % hashlib.sha256(
            digest.encode()).hexdigest()[:48]
        with lockutils.lock('xhv-cloud-image-%s' % tag):
            for image in self._images_tagged(tag):
                if image.status == 'active':
                    return image.id
            workdir = self._work_dir('spawn-%s-' % instance.uuid)
            try:
                source = os.path.join(workdir, 'image')
                glance.API().download(context, image_meta.id,
                                      dest_path=source)
                target = os.path.join(workdir, 'image.' +
                                      self.conf.image_format)
                try:
                    translate.convert(
                        source, target, to_format=self.conf.image_format,
                        from_format=image_meta.disk_format,
                        options=translate_conf.convert_options_from_conf(
                            CONF.xhv, staging_dir=workdir))
                except translate.TranslationError as error:
                    raise exception.ImageUnacceptable(
                        image_id=image_meta.id, reason=str(error))
                os.unlink(source)
                image = self._upload(
                    'xhv-cache-%s' % image_meta.id, target, [tag],
                    {'xhv_home_image': image_meta.id},
                    'uploading image %s' % image_meta.id)
                return image.id
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self._remote_networks(network_info)  # refuse bad ports first
        if driver.block_device_info_get_mapping(block_device_info):
            raise UnsupportedRequest(what='volumes (remote Cinder)')
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        image_id = self._remote_image(context, image_meta, instance)
        self._boot(instance, image_id, network_info, power_on,
                   'POST /servers (instance %s)' % instance.uuid)

    def snapshot(self, context, instance, image_id, update_task_state):
        server = self._get(instance)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        image = self._snapshot(server, instance, 'snapshot')
        workdir = self._work_dir('snapshot-%s-' % instance.uuid)
        try:
            path = os.path.join(workdir, 'image')
            reader = RemoteImageReader(self, image)
            with open(path, 'wb') as f:
                for chunk in reader.iter_range(0, reader.size - 1):
                    f.write(chunk)
            translate.inspect_image(path, claimed_format=image.disk_format)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(path, 'rb') as data:
                glance.API().update(context, image_id, {
                    'disk_format': image.disk_format,
                    'container_format': 'bare'}, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self._delete_image(image.id)

    def _snapshot(self, server, instance, why):
        """A remote snapshot image of ``server``, active, tagged as ours."""
        call = 'POST /servers/%s/action createImage (%s)' % (server.id, why)
        with self._call(call):
            image = self.conn.compute.create_server_image(
                server, 'xhv-%s-%s' % (why, instance.uuid),
                metadata={HOME_UUID: instance.uuid})
        try:
            with self._call(call):
                self.conn.image.add_tag(image, EXPORT_TAG % instance.uuid)
            image = self._wait_image(image, call)
        except Exception:
            self._delete_image(image.id)
            raise
        return image

    def _wait_image(self, image, call):
        deadline = time.monotonic() + self.conf.build_timeout
        while True:
            with self._call('GET /v2/images/%s' % image.id):
                image = self.conn.image.get_image(image.id)
            if image.status == 'active':
                return image
            if image.status in ('killed', 'deleted', 'deactivated'):
                raise errors.RemoteCloudError(
                    cloud=self.cloud, call=call,
                    reason='image %s went %s' % (image.id, image.status))
            if time.monotonic() > deadline:
                raise errors.RemoteCloudTimeout(
                    cloud=self.cloud, call=call,
                    reason='image %s still %s after %ss' % (
                        image.id, image.status, self.conf.build_timeout))
            time.sleep(POLL_INTERVAL)

    # -- the disk exchange -------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        server = self._get(instance)
        if server.status != 'SHUTOFF':
            raise exception.InstanceInvalidState(
                instance_uuid=instance.uuid, attr='status',
                state=server.status, method='export_disks')
        image = self._snapshot(server, instance, 'export')
        try:
            size = RemoteImageReader(self, image).virtual_size()
        except Exception:
            self._delete_image(image.id)
            raise
        return [DiskDescriptor(
            format=image.disk_format, virtual_size=size,
            url=self._image_file_url(image.id),
            bus=(server.image or {}).get('hw_disk_bus') or
            FAMILY.native_name(family.DISK_BUS, 'paravirtual'),
            boot_index=0, handle=image.id)]

    def _image_file_url(self, image_id):
        with self._call('image endpoint'):
            endpoint = self.conn.image.get_endpoint()
        return '%s/v2/images/%s/file' % (endpoint.rstrip('/'), image_id) \
            if not endpoint.rstrip('/').endswith('/v2') else \
            '%s/images/%s/file' % (endpoint.rstrip('/'), image_id)

    def open_exported_disk(self, disk):
        with self._call('GET /v2/images/%s' % disk.handle):
            image = self.conn.image.get_image(disk.handle)
        return RemoteImageReader(self, image)

    def release_exported_disks(self, context, instance, disks):
        for disk in disks:
            if disk.handle and self._ours(disk.handle,
                                          EXPORT_TAG % instance.uuid):
                self._delete_image(disk.handle)

    def _ours(self, image_id, tag):
        """Whether the remote image exists and carries ``tag``."""
        try:
            with self._call('GET /v2/images/%s' % image_id):
                image = self.conn.image.get_image(image_id)
        except errors.RemoteCloudError as exc:
            if errors.is_not_found(exc.__cause__):
                return False
            raise
        return tag in (image.tags or [])

    def check_stageable(self, context, instance, disks):
        if not disks or disks[0].boot_index != 0:
            raise UnsupportedRequest(
                what='a guest without its boot disk (boot_index 0) first')
        if len(disks) > 1:
            raise UnsupportedRequest(
                what='%d disks: a remote server gets its boot disk only '
                     '(more would be remote volumes)' % len(disks))

    def stage_disks(self, context, instance, disks):
        self.check_stageable(context, instance, disks)
        disk = disks[0]
        if disk.format != self.conf.image_format or not disk.path or \
                not os.path.isfile(disk.path):
            raise UnsupportedRequest(
                what='staging %s disk %s: the cloud family stages local %s '
                     'files' % (disk.format, disk.path or disk.url,
                                self.conf.image_format))
        properties = FAMILY.image_properties[family.DISK_BUS].get(
            FAMILY.classify(family.DISK_BUS, disk.bus) or 'paravirtual')
        image = self._upload('xhv-staged-%s' % instance.uuid, disk.path,
                             [STAGED_TAG % instance.uuid], dict(properties),
                             'uploading the staged disk of %s'
                             % instance.uuid)
        return [DiskDescriptor(
            format=disk.format, subformat=disk.subformat,
            virtual_size=disk.virtual_size,
            url=self._image_file_url(image.id), bus=disk.bus,
            boot_index=disk.boot_index, device_name=disk.device_name,
            checksum=disk.checksum, handle=image.id)]

    def discard_staged_disks(self, context, instance, disks):
        for disk in disks:
            if disk.handle and self._ours(disk.handle,
                                          STAGED_TAG % instance.uuid):
                self._delete_image(disk.handle)

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        self._remote_networks(network_info)  # refuse bad ports first
        if driver.block_device_info_get_mapping(block_device_info):
            raise UnsupportedRequest(what='volumes (remote Cinder)')
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        if len(disks) != 1 or not disks[0].handle or not self._ours(
                disks[0].handle, STAGED_TAG % instance.uuid):
            raise UnsupportedRequest(
                what='spawning %s: its staged image is missing'
                     % instance.uuid)
        image_id = disks[0].handle
        self._boot(instance, image_id, network_info, power_on,
                   'POST /servers (moved instance %s)' % instance.uuid)
        # The remote compute has the disk now; the image goes, as a
        # staged disk does once its guest owns it.
        self._delete_image(image_id)


class RemoteImageReader(DiskReader):
    """Range reads of a remote image's data (its Glance ``file``)."""

    def __init__(self, backend, image):
        self.backend = backend
        self.image = image
        self.size = int(image.size or 0)
        self.path = '/images/%s/file' % image.id

    def iter_range(self, start, end, chunk=1024 * 1024):
        call = 'GET /v2/images/%s/file (bytes %d-%d)' % (
            self.image.id, start, end)
        with self.backend._call(call):
            resp = self.backend.conn.image.get(
                self.path, headers={'Range': 'bytes=%d-%d' % (start, end)},
                stream=True, raise_exc=True)
        try:
            if resp.status_code not in (200, 206):
                raise OSError('%s answered %d' % (call, resp.status_code))
            if resp.status_code == 200 and start:
                raise OSError('%s ignored the Range header' % call)
            left = end - start + 1
            for data in resp.iter_content(chunk):
                data = data[:left]
                left -= len(data)
                yield data
                if not left:
                    break
            if left:
                raise OSError('%s ended %d bytes short' % (call, left))
        finally:
            resp.close()

    def virtual_size(self):
        """The disk's size for the guest: Glance's, else the header's."""
        if getattr(self.image, 'virtual_size', None):
            return int(self.image.virtual_size)
        if self.image.disk_format == 'qcow2':
            header = b''.join(self.iter_range(0, 31))
            if header[:4] == b'QFI\xfb':
                return struct.unpack('>Q', header[24:32])[0]
        return self.size
