"""CloudBackend: one project in one region of another OpenStack cloud.

The node is the remote project.  Capacity comes from its quota and usage
(``flavors.py``); a guest is a remote server whose metadata carries the
home instance's uuid (``xhv_home_uuid``), on remote ports made for the
home ports (``ports.py``); the disk exchange moves disks as remote images
(``images.py``): stage uploads a private image, spawn boots from it,
export snapshots the stopped remote server.  Every remote call goes
through ``errors.remote_call`` (doc/source/cloud.rst).
"""

import os
import time

from nova.compute import power_state
from nova import exception
from nova.virt import driver
from nova.virt import hardware as nova_hardware
import os_resource_classes as orc
import os_traits
from oslo_log import log as logging

from nova_xhv.backends import base
from nova_xhv.backends.cloud import errors
from nova_xhv.backends.cloud import facts as cloud_facts
from nova_xhv.backends.cloud import flavors
from nova_xhv.backends.cloud import images
from nova_xhv.backends.cloud import ports
from nova_xhv.backends.cloud import remote
from nova_xhv.backends import family
from nova_xhv.backends import node_identity
import nova_xhv.conf
from nova_xhv.disk import DiskDescriptor
from nova_xhv.translate import formats

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
FAMILY = cloud_facts.FAMILY
GiB = 1024 ** 3

#: Remote server metadata: the home instance it stands for.
HOME_UUID = remote.HOME_UUID
STAGED_TAG = images.STAGED_TAG
EXPORT_TAG = images.EXPORT_TAG
SERVER_NAME = 'xhv-%s'
# Nova's status of a remote server -> its power state, when the remote
# API does not show OS-EXT-STS:power_state.
STATUS_POWER = {'ACTIVE': power_state.RUNNING,
                'SHUTOFF': power_state.SHUTDOWN,
                'PAUSED': power_state.PAUSED,
                'SUSPENDED': power_state.SUSPENDED,
                'ERROR': power_state.CRASHED}
TRAIT_PREFIX = 'CUSTOM_XHV_CLOUD_'
# Seconds between two looks at a remote server that is changing.
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
        if self.conf.image_format == formats.VMDK:
            # Moves stream the disk into the remote Glance as they
            # translate it (accepts_disk_streams).
            self.native_format = formats.VMDK
            self.native_subformat = formats.STREAM_OPTIMIZED
        self.images = images.RemoteImages(self)
        self.ports = ports.RemotePorts(self)

    # -- service ----------------------------------------------------------

    def _call(self, call):
        return errors.remote_call(self.cloud, call)

    def init_host(self, host):
        self.conn = remote.connect(self.conf)
        auth_url, self._region, project = remote.identity(self.conn,
                                                          self.cloud)
        self._node_uuid = remote.node_uuid(auth_url, self._region, project)
        node_identity.persist(self._node_uuid, 'cloud %s' % self.cloud)
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
        return flavors.capacity(absolute, self._flavors(), self._servers(),
                                self.conf.capacity_if_unlimited)

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
        return self.ports.plugged(instance)

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
        self.ports.delete(instance)

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
        return flavors.choose(self._flavors(), instance.flavor,
                              self.conf.flavor_map, self.cloud)

    def _boot(self, instance, image_id, network_info, power_on, call):
        networks = self.ports.networks(network_info)
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        flavor = self._flavor(instance)
        remote_ports = self.ports.make(instance, networks)
        server = None
        try:
            with self._call(call):
                server = self.conn.compute.create_server(
                    name=SERVER_NAME % instance.uuid, image_id=image_id,
                    flavor_id=flavor.id, networks=remote_ports,
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
            self.ports.delete(instance)
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

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self.ports.networks(network_info)  # refuse bad ports first
        if driver.block_device_info_get_mapping(block_device_info):
            raise UnsupportedRequest(what='volumes (remote Cinder)')
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        image_id = self.images.cached_copy(context, image_meta, instance)
        self._boot(instance, image_id, network_info, power_on,
                   'POST /servers (instance %s)' % instance.uuid)

    def snapshot(self, context, instance, image_id, update_task_state):
        server = self._get(instance)
        self.images.snapshot_home(context, server, instance, image_id,
                                  update_task_state)

    # -- the disk exchange -------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        server = self._get(instance)
        if server.status != 'SHUTOFF':
            raise exception.InstanceInvalidState(
                instance_uuid=instance.uuid, attr='status',
                state=server.status, method='export_disks')
        image = self.images.snapshot(server, instance, 'export')
        try:
            size = self.images.reader(image).virtual_size()
        except Exception:
            self.images.delete(image.id)
            raise
        return [DiskDescriptor(
            format=image.disk_format, virtual_size=size,
            url=self.images.file_url(image.id),
            bus=(server.image or {}).get('hw_disk_bus') or
            FAMILY.native_name(family.DISK_BUS, 'paravirtual'),
            boot_index=0, handle=image.id)]

    def open_exported_disk(self, disk):
        return self.images.reader(self.images.get(disk.handle))

    def release_exported_disks(self, context, instance, disks):
        for disk in disks:
            self.images.delete_if_ours(disk.handle,
                                       EXPORT_TAG % instance.uuid)

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
        image = self.images.upload(
            'xhv-staged-%s' % instance.uuid, disk.path,
            [STAGED_TAG % instance.uuid], self._bus_properties(disk),
            'uploading the staged disk of %s' % instance.uuid)
        return [self._staged(disk, image)]

    def accepts_disk_streams(self):
        return self.native_subformat == formats.STREAM_OPTIMIZED

    def stage_disk_streams(self, context, instance, disks, streams):
        if not self.accepts_disk_streams():
            raise NotImplementedError()
        self.check_stageable(context, instance, disks)
        disk = disks[0]
        image, result = self.images.upload_stream(
            'xhv-staged-%s' % instance.uuid, streams[0],
            [STAGED_TAG % instance.uuid], self._bus_properties(disk),
            'streaming the staged disk of %s' % instance.uuid)
        return [self._staged(disk, image)], [result]

    def _bus_properties(self, disk):
        return dict(FAMILY.image_properties[family.DISK_BUS].get(
            FAMILY.classify(family.DISK_BUS, disk.bus) or 'paravirtual'))

    def _staged(self, disk, image):
        return DiskDescriptor(
            format=disk.format, subformat=disk.subformat,
            virtual_size=disk.virtual_size,
            url=self.images.file_url(image.id), bus=disk.bus,
            boot_index=disk.boot_index, device_name=disk.device_name,
            checksum=disk.checksum, handle=image.id)

    def discard_staged_disks(self, context, instance, disks):
        for disk in disks:
            self.images.delete_if_ours(disk.handle,
                                       STAGED_TAG % instance.uuid)

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        self.ports.networks(network_info)  # refuse bad ports first
        if driver.block_device_info_get_mapping(block_device_info):
            raise UnsupportedRequest(what='volumes (remote Cinder)')
        if self._find(instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        if len(disks) != 1 or not disks[0].handle or not self.images.ours(
                disks[0].handle, STAGED_TAG % instance.uuid):
            raise UnsupportedRequest(
                what='spawning %s: its staged image is missing'
                     % instance.uuid)
        image_id = disks[0].handle
        self._boot(instance, image_id, network_info, power_on,
                   'POST /servers (moved instance %s)' % instance.uuid)
        # The remote compute has the disk now; the image goes, as a
        # staged disk does once its guest owns it.
        self.images.delete(image_id)
