"""VMwareBackend: Nova's ComputeDriver calls and XHV's disk exchange for
one vCenter cluster (or standalone ESXi host), on pyvmomi.

Neutron ports: one NIC per port on the distributed port group the binding
names (nova_xhv/backends/vmware/network.py, doc/source/networking.rst).
Volumes: raw NFS file volumes, attached in place (volumes.py).  What it
does not do yet (see doc/source/vmware.rst): other volume types,
ephemeral and swap disks, resize within vSphere.
"""

import os
import re
import shutil
import tempfile

from nova.compute import task_states
from nova import exception
from nova.image import glance
from nova.objects import fields as obj_fields
from nova.virt import driver
from nova.virt import hardware
import os_resource_classes as orc
from oslo_log import log as logging
from oslo_utils import versionutils

try:
    from pyVmomi import vim
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = ('the XHV vmware backend needs pyvmomi: pip install '
           '"openstack-xhv[vmware]" (%s)' % exc)
    raise ImportError(msg, name='pyVmomi') from exc

from nova_xhv.backends import base
from nova_xhv.backends import staging
from nova_xhv.backends.vmware import datastore
from nova_xhv.backends.vmware import disk_storage
from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import facts as vmware_facts
from nova_xhv.backends.vmware import inventory
from nova_xhv.backends.vmware import network
from nova_xhv.backends.vmware import nfc
from nova_xhv.backends.vmware import session as vsession
from nova_xhv.backends.vmware import vm as vmops
from nova_xhv.backends.vmware import volumes
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
GiB = 1024 ** 3


def _convert_options(workdir):
    """The operator's [xhv] translation options, staging in ``workdir``.

    ``workdir`` is private to one operation, so a monolithicFlat
    descriptor + extent pair downloaded there may be read.
    """
    return translate_conf.convert_options_from_conf(CONF.xhv,
                                                    staging_dir=workdir)


def _root_volume(block_device_info):
    """The mapping of the boot volume, or None (image-backed)."""
    for bdm in driver.block_device_info_get_mapping(block_device_info):
        if bdm.get('boot_index') == 0:
            return bdm
    return None


class UnsupportedRequest(exception.NovaException):
    msg_fmt = 'The XHV vmware backend cannot do this yet: %(what)s'


class VMwareBackend(base.Backend):

    facts = vmware_facts.FAMILY

    capabilities = dict(
        driver.ComputeDriver.capabilities,
        # Images that the translation engine turns into streamOptimized
        # vmdk before upload; vmdk streamOptimized/monolithicSparse as is.
        supports_image_type_vmdk=True,
        supports_image_type_qcow2=True,
        supports_image_type_raw=True,
    )

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        # Read once: in functional tests config is process-global.
        conf = CONF.xhv_vmware
        self._conf = {name: getattr(conf, name) for name in (
            'cluster_name', 'datacenter', 'datastore_regex', 'vm_folder',
            'default_adapter_type', 'export_method', 'task_timeout',
            'direct_datastore_reads', 'stream_uploads',
            'create_port_groups',
            'transfer_timeout')}
        self._staging_root = conf.staging_dir
        try:
            re.compile(conf.datastore_regex or '')
        except re.error as exc:
            raise errors.VSphereConfigError(
                detail='datastore_regex %r is not a valid regular '
                       'expression: %s' % (conf.datastore_regex, exc))
        self._session = vsession.VSphereSession(
            conf.host, conf.port, conf.username, conf.password,
            ca_file=conf.ca_file, insecure=conf.insecure,
            retries=conf.connection_retries,
            retry_interval=conf.retry_interval, api_timeout=conf.api_timeout,
            task_timeout=conf.task_timeout,
            poll_interval=conf.task_poll_interval)
        self._compute = None
        self._nodename = None
        self._files = None

    # -- service ----------------------------------------------------------

    def init_host(self, host):
        self._session.connect()
        self._compute = inventory.discover(
            self._session, self._conf['cluster_name'],
            self._conf['datacenter'], self._conf['vm_folder'])
        self._files = datastore.DatastoreFiles(
            self._session, self._compute.datacenter_name,
            self._conf['transfer_timeout'])
        self._volumes = volumes.VolumeAttacher(self._session, self._compute,
                                               self._files)
        if not self._resources()['datastores']:
            raise errors.VSphereConfigError(
                detail='no accessible datastore of %s matches datastore_regex'
                       ' %r' % (self._compute.name,
                                self._conf['datastore_regex']))
        about = self._session.content.about
        self._nodename = '%s.%s' % (self._compute.resource._moId,
                                    about.instanceUuid or about.name)
        # Exports hold guest data: keep the folder private.
        os.makedirs(self._staging_root, mode=0o700, exist_ok=True)
        LOG.info('XHV vmware backend drives %s %s in datacenter %s',
                 'cluster' if self._compute.is_cluster else 'host',
                 self._compute.name, self._compute.datacenter_name)

    def cleanup_host(self, host):
        self._session.disconnect()

    def get_available_nodes(self, refresh=False):
        return [self._nodename] if self._nodename else []

    def get_host_ip_addr(self):
        # The address of this nova-compute (where XHV serves disk
        # transfers), not vCenter's.
        return CONF.my_ip

    def get_host_uptime(self):
        hosts = self._resources()['hosts']
        uptimes = [h['uptime'] for h in hosts if h['uptime'] is not None]
        return '%d host(s) of %s connected; longest uptime %s s' % (
            len(hosts), self._compute.name,
            max(uptimes) if uptimes else 'unknown')

    def _resources(self):
        return inventory.resources(self._session, self._compute,
                                   self._conf['datastore_regex'])

    def get_available_resource(self, nodename):
        res = self._resources()
        capacity = sum(d['capacity'] for d in res['datastores'])
        free = sum(d['free'] for d in res['datastores'])
        versions = [h['version'] for h in res['hosts'] if h['version']]
        return {
            'vcpus': sum(h['vcpus'] for h in res['hosts']),
            'memory_mb': sum(h['memory_mb'] for h in res['hosts']),
            'local_gb': capacity // GiB,
            'vcpus_used': 0,
            'memory_mb_used': 0,
            'local_gb_used': (capacity - free) // GiB,
            'hypervisor_type': 'VMware vCenter Server',
            # The oldest host bounds what the cluster can run.
            'hypervisor_version': min(
                (versionutils.convert_version_to_int(v) for v in versions),
                default=0),
            'hypervisor_hostname': nodename,
            'cpu_info': None,
            'supported_instances': [(obj_fields.Architecture.X86_64,
                                     obj_fields.HVType.VMWARE,
                                     obj_fields.VMMode.HVM)],
            'numa_topology': None,
        }

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        res = self._resources()
        hosts, stores = res['hosts'], res['datastores']
        ratios = self._get_allocation_ratios(
            provider_tree.data(nodename).inventory)
        inventory_data = {
            orc.VCPU: {
                'total': sum(h['vcpus'] for h in hosts),
                'reserved': CONF.reserved_host_cpus,
                'min_unit': 1,
                # One VM runs on one host.
                'max_unit': max((h['vcpus'] for h in hosts), default=1),
                'step_size': 1,
                'allocation_ratio': ratios[orc.VCPU],
            },
            orc.MEMORY_MB: {
                'total': sum(h['memory_mb'] for h in hosts),
                'reserved': CONF.reserved_host_memory_mb,
                'min_unit': 1,
                'max_unit': max((h['memory_mb'] for h in hosts), default=1),
                'step_size': 1,
                'allocation_ratio': ratios[orc.MEMORY_MB],
            },
            orc.DISK_GB: {
                'total': sum(d['capacity'] for d in stores) // GiB,
                'reserved': -(-CONF.reserved_host_disk_mb // 1024),
                'min_unit': 1,
                # One disk lives on one datastore.
                'max_unit': max((d['free'] for d in stores),
                                default=GiB) // GiB,
                'step_size': 1,
                'allocation_ratio': ratios[orc.DISK_GB],
            },
        }
        provider_tree.update_inventory(nodename, inventory_data)
        provider_tree.add_traits(nodename, 'HW_ARCH_X86_64')

    # -- instances --------------------------------------------------------

    def _instance_vms(self):
        return [(obj, props) for obj, props in
                inventory.vms(self._session, self._compute)
                if vmops.is_instance(props.get('config.annotation'))]

    def list_instances(self):
        return [props['name'] for _, props in self._instance_vms()]

    def list_instance_uuids(self):
        return [props['config.instanceUuid']
                for _, props in self._instance_vms()]

    def instance_exists(self, instance):
        return vmops.find(self._session, self._compute, instance) is not None

    def get_info(self, instance, use_cache=True):
        vm = vmops.get(self._session, self._compute, instance)
        state = vmops.power_state_of(self._session, vm, instance)
        return hardware.InstanceInfo(state=vmops.POWER_STATES.get(state),
                                     internal_id=vm._moId)

    def _check_request(self, network_info, block_device_info,
                       instance=None):
        """Refuse what cannot be done before anything is created.

        :returns: the placed ports (network.resolve) for _nic_spec.
        """
        for bdm in driver.block_device_info_get_mapping(block_device_info):
            volumes.file_volume(bdm['connection_info'])
        nics = self.nics(network_info)
        return network.resolve(self._session, self._compute, nics,
                               self._conf['create_port_groups'], instance)

    @staticmethod
    def _nic_spec(placed, model):
        """A ConfigSpec adding the ports' NICs, or None without ports."""
        if not placed:
            return None
        return vim.vm.ConfigSpec(
            deviceChange=network.device_changes(placed, model),
            extraConfig=network.extra_config(placed))

    def plugged_ports(self, instance):
        vm = vmops.get(self._session, self._compute, instance)
        devices = vmops.props(self._session, vm, 'config.hardware.device',
                              instance=instance)['config.hardware.device']
        return [(port_id, mac)
                for port_id, mac, _group in network.plugged(devices)]

    def _staging_dir(self, prefix):
        return tempfile.mkdtemp(prefix=prefix, dir=self._staging_root)

    def _pick_datastore(self, needed):
        stores = sorted(self._resources()['datastores'],
                        key=lambda d: d['free'], reverse=True)
        if not stores or stores[0]['free'] < needed:
            raise exception.ComputeResourcesUnavailable(
                reason='no datastore of %s has %d bytes free'
                       % (self._compute.name, needed))
        return stores[0]['name']

    def _to_stream_optimized(self, path, disk_format, workdir):
        """(A streamOptimized vmdk for an image file, its virtual size).

        The vmdk is a local file, or, with stream_uploads, a
        translate.TranslationStream (already inspected; written while
        it is uploaded) that the caller closes.
        """
        options = _convert_options(workdir)
        info = translate.inspect_image(
            path, claimed_format=disk_format, staging_dir=workdir,
            max_virtual_size=options.max_virtual_size)
        if info.format == 'vmdk' and info.subformat == 'streamOptimized':
            return path, info.virtual_size
        if self._conf['stream_uploads'] and options.vmdk_stream_writer \
                and not options.rate_limit:
            stream = translate.open_stream(path, from_format=info.format,
                                           options=options)
            return stream, stream.virtual_size
        target = os.path.join(workdir, 'disk-0.vmdk')
        result = translate.convert(path, target, to_format='vmdk',
                                   from_format=info.format,
                                   subformat='streamOptimized',
                                   options=options)
        return target, result.virtual_size

    @staticmethod
    def _upload_size(disk):
        """Bytes a file or stream is expected to need on the datastore."""
        if isinstance(disk, str):
            return os.path.getsize(disk)
        return disk.size_hint

    def _import(self, instance, name, marker, files_and_sizes, adapter,
                power_on, firmware='bios', nic_spec=None):
        """Import a VM with these disks (vmdk files or streams)."""
        needed = sum(self._upload_size(d) for d, _ in files_and_sizes)
        ds_name = self._pick_datastore(needed)
        disks = [('%s%s.vmdk' % (instance.uuid, '_%d' % i if i else ''),
                  size) for i, (_, size) in enumerate(files_and_sizes)]
        spec = vmops.config_spec(name, instance, ds_name, instance.uuid,
                                 disks, adapter, marker=marker,
                                 create_disks=True, firmware=firmware)
        vm, results = nfc.import_vm(
            self._session, self._compute, spec,
            [d for d, _ in files_and_sizes], self._conf['transfer_timeout'],
            discard=lambda vm: vmops.destroy(self._session, self._compute,
                                             vm, instance))
        try:
            if marker == vmops.INSTANCE_MARKER:
                vmops.grow_root_disk(self._session, vm, instance)
            if nic_spec is not None:
                vmops.reconfigure(self._session, vm, nic_spec, instance)
            if power_on:
                vmops.power_on(self._session, vm, instance)
        except Exception:
            vmops.destroy(self._session, self._compute, vm, instance)
            raise
        return vm, ds_name, disks, results

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        if vmops.find(self._session, self._compute, instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        firmware = vmops.firmware(image_meta)
        placed = self._check_request(network_info, block_device_info,
                                     instance)
        nic_spec = self._nic_spec(placed, network.nic_model(image_meta))
        if _root_volume(block_device_info):
            return self._spawn_from_volume(instance, block_device_info,
                                           firmware, power_on, nic_spec)
        workdir = self._staging_dir('spawn-%s-' % instance.uuid)
        try:
            image = os.path.join(workdir, 'image')
            glance.API().download(context, image_meta.id, dest_path=image)
            disk = None
            try:
                disk, size = self._to_stream_optimized(
                    image, image_meta.disk_format, workdir)
                adapter = vmops.adapter_type(
                    image_meta, self._conf['default_adapter_type'])
                # Powered on only once its volumes are attached.
                vm = self._import(instance, instance.uuid,
                                  vmops.INSTANCE_MARKER, [(disk, size)],
                                  adapter, False, firmware, nic_spec)[0]
            except translate.TranslationError as error:
                # A refused or unconvertible image: one line in the fault.
                raise exception.ImageUnacceptable(image_id=image_meta.id,
                                                  reason=str(error))
            finally:
                if disk is not None and not isinstance(disk, str):
                    disk.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._attach_mapped_volumes(instance, vm, block_device_info)
        if power_on:
            vmops.power_on(self._session, vm, instance)

    def _spawn_from_volume(self, instance, block_device_info, firmware,
                           power_on, nic_spec=None):
        """A VM whose boot disk is the root volume (no image disk)."""
        ds_name = self._pick_datastore(0)
        spec = vmops.config_spec(instance.uuid, instance, ds_name,
                                 instance.uuid, [],
                                 self._conf['default_adapter_type'],
                                 firmware=firmware)
        vm = self._session.run_task(
            'CreateVM_Task', self._compute.vm_folder.CreateVM_Task,
            config=spec, pool=self._compute.root_pool, instance=instance)
        try:
            if nic_spec is not None:
                vmops.reconfigure(self._session, vm, nic_spec, instance)
            self._attach_mapped_volumes(instance, vm, block_device_info)
            if power_on:
                vmops.power_on(self._session, vm, instance)
        except Exception:
            vmops.destroy(self._session, self._compute, vm, instance)
            raise

    def _attach_mapped_volumes(self, instance, vm, block_device_info):
        try:
            # The boot volume first: it takes the first free unit, which
            # the BIOS boots from.
            for bdm in sorted(
                    driver.block_device_info_get_mapping(block_device_info),
                    key=lambda b: (b.get('boot_index') is None or
                                   b.get('boot_index') < 0,
                                   b.get('boot_index') or 0)):
                self._volumes.attach(instance, vm, bdm['connection_info'])
        except Exception:
            self._volumes.remove_devices(
                instance, vm, self._volumes.volume_devices(vm, instance))
            raise

    # -- volumes (volumes.py) -----------------------------------------

    def get_volume_connector(self, instance):
        # No 'instance' key: Cinder's VMDK driver would take the connector
        # for Nova's own VMware driver and answer with shadow-VM disks.
        return {'ip': CONF.my_ip, 'host': CONF.host, 'initiator': None,
                'platform': 'x86_64', 'os_type': 'linux',
                'multipath': False}

    def attach_volume(self, context, connection_info, instance, mountpoint,
                      disk_bus=None, device_type=None, encryption=None):
        if encryption:
            raise UnsupportedRequest(what='attaching an encrypted volume')
        vm = vmops.get(self._session, self._compute, instance)
        self._volumes.attach(instance, vm, connection_info)

    def detach_volume(self, context, connection_info, instance, mountpoint,
                      encryption=None):
        vm = vmops.find(self._session, self._compute, instance)
        if vm is None:
            LOG.info('Instance %s has no VM on %s; volume already detached',
                     instance.uuid, self._compute.name)
            return
        self._volumes.detach(instance, vm, connection_info)

    def extend_volume(self, context, connection_info, instance,
                      requested_size):
        raise UnsupportedRequest(what='extending an attached volume '
                                      '(detach it, extend, attach again)')

    def power_off(self, instance, timeout=0, retry_interval=0):
        vm = vmops.get(self._session, self._compute, instance)
        vmops.power_off(self._session, vm, instance, timeout,
                        retry_interval or 1)

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        vm = vmops.get(self._session, self._compute, instance)
        vmops.power_on(self._session, vm, instance)

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        vm = vmops.get(self._session, self._compute, instance)
        vmops.reboot(self._session, vm, instance, reboot_type == 'HARD')

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        vm = vmops.find(self._session, self._compute, instance)
        if vm is None:
            LOG.info('Instance %s has no VM on %s; nothing to destroy',
                     instance.uuid, self._compute.name)
            return
        # vSphere deletes every disk file of a destroyed VM: volumes go
        # first (their files are Cinder's).
        self._volumes.remove_devices(
            instance, vm, self._volumes.volume_devices(vm, instance))
        if destroy_disks:
            vmops.destroy(self._session, self._compute, vm, instance)
        else:
            vmops.power_off(self._session, vm, instance)
            self._session.run('UnregisterVM', vm.UnregisterVM,
                              instance=instance)

    def snapshot(self, context, instance, image_id, update_task_state):
        vm = vmops.get(self._session, self._compute, instance)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        devices = vmops.disks(self._session, vm, instance)
        if not devices:
            raise UnsupportedRequest(what='snapshot of a VM without disks')
        root, controller = devices[0]
        base_disk = root.backing.fileName
        # On ESXi the snapshot freezes base_disk (writes go to a delta), so
        # the copy below is consistent while the guest runs.
        snap = vmops.create_snapshot(self._session, vm, instance,
                                     'xhv-image-%s' % image_id)
        workdir = self._staging_dir('snapshot-%s-' % instance.uuid)
        try:
            stored = disk_storage.inspect(self._files, base_disk)
            local, fmt, sub = disk_storage.download(self._files, stored,
                                                    workdir, 'base')
            if sub != 'streamOptimized':
                target = os.path.join(workdir, 'image.vmdk')
                translate.convert(local, target, to_format='vmdk',
                                  from_format=fmt,
                                  subformat='streamOptimized',
                                  options=_convert_options(workdir))
                local = target
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            metadata = {
                'disk_format': 'vmdk', 'container_format': 'bare',
                'properties': {
                    'vmware_disktype': 'streamOptimized',
                    'vmware_adaptertype': vmops.controller_name(controller)
                    or self._conf['default_adapter_type'],
                    'hypervisor_type': 'vmware'}}
            with open(local, 'rb') as data:
                glance.API().update(context, image_id, metadata, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            vmops.remove_snapshot(self._session, snap, instance)

    # -- disk exchange ----------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        vm = vmops.get(self._session, self._compute, instance)
        if vmops.power_state_of(self._session, vm, instance) != 'poweredOff':
            raise exception.InstanceInvalidState(
                instance_uuid=instance.uuid, attr='power_state',
                state='not poweredOff', method='export_disks')
        # Volumes are Cinder's: they follow the server by re-attaching.
        devices = [(d, c) for d, c in vmops.disks(self._session, vm,
                                                  instance)
                   if not volumes.is_volume_disk(d)]
        if self._conf['export_method'] == 'nfc':
            workdir = self._staging_dir('export-%s-' % instance.uuid)
            try:
                paths = nfc.export_vm(self._session, vm, instance, workdir,
                                      self._conf['transfer_timeout'])
                found = [disk_storage.inspect_local(p) for p in paths]
            except Exception:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            located = [({'path': p}, fmt, sub, size)
                       for p, (fmt, sub, size) in zip(paths, found)]
        else:
            # Read in place on the datastore (Range requests through the
            # exchange endpoint): no local copy of a powered-off disk.
            located = []
            for device, _ in devices:
                stored = disk_storage.inspect(self._files,
                                              device.backing.fileName)
                ds_name, path, fmt, sub = disk_storage.data_file(
                    self._files, stored)
                where = {'url': self._files.url(ds_name, path)}
                located.append((where, fmt, sub, stored.virtual_size))
        return [DiskDescriptor(
            format=fmt, subformat=sub, virtual_size=size,
            bus=vmops.controller_name(ctrl), boot_index=n if n == 0 else None,
            device_name=device.deviceInfo.label if device.deviceInfo
            else None, handle=device.backing.fileName, **where)
            for n, ((where, fmt, sub, size), (device, ctrl))
            in enumerate(zip(located, devices))]

    def open_exported_disk(self, disk):
        if disk.path is not None:
            return super().open_exported_disk(disk)
        ds_name, path = self._files.locate(disk.url)
        size = self._files.size(ds_name, path)
        if size is None:
            raise errors.VSphereDiskError(
                path='[%s] %s' % (ds_name, path),
                detail='the exported disk is gone from the datastore')
        return self._files.reader(
            ds_name, path, size,
            direct=self._conf['direct_datastore_reads'])

    def release_exported_disks(self, context, instance, disks):
        staging.release_export_folders(self._staging_root, disks)

    def stage_disks(self, context, instance, disks):
        for disk in disks:
            if (disk.format, disk.subformat) != ('vmdk', 'streamOptimized'):
                raise UnsupportedRequest(
                    what='staging a %s/%s disk: translate it to '
                         'streamOptimized vmdk first'
                         % (disk.format, disk.subformat))
            if disk.path is None:
                raise UnsupportedRequest(what='staging a disk from a URL')
        return self._stage(instance, disks, [d.path for d in disks])[0]

    def accepts_disk_streams(self):
        return self._conf['stream_uploads']

    def stage_disk_streams(self, context, instance, disks, streams):
        return self._stage(instance, disks, streams)

    def _stage(self, instance, disks, sources):
        adapter = (disks[0].bus if disks and disks[0].bus
                   in vmops.ADAPTER_TYPES
                   else self._conf['default_adapter_type'])
        # Staged disks live in a powered-off VM that is not an instance
        # yet: vSphere only turns streamOptimized into usable disks through
        # an import, and the VM keeps them together until spawn_from_disks.
        vm, ds_name, names, results = self._import(
            instance, 'xhv-staged-%s' % instance.uuid, vmops.STAGED_MARKER,
            [(source, d.virtual_size) for d, source in zip(disks, sources)],
            adapter, False)
        return [DiskDescriptor(
            format='vmdk', subformat='streamOptimized',
            virtual_size=d.virtual_size, path=d.path, url=d.url,
            bus=adapter, boot_index=d.boot_index, device_name=d.device_name,
            checksum=d.checksum,
            handle='%s|[%s] %s/%s' % (vm._moId, ds_name, instance.uuid,
                                      name))
                for d, (name, _) in zip(disks, names)], results

    def _staged_vm(self, disks):
        handles = {d.handle.split('|', 1)[0] for d in disks if d.handle}
        if len(handles) != 1:
            raise UnsupportedRequest(what='disks staged by different calls')
        ref = vim.VirtualMachine(handles.pop(), self._session.si._stub)
        try:
            note = vmops.props(self._session, ref,
                               'config.annotation')['config.annotation']
        except exception.InstanceNotFound:
            return None
        return ref if (note or '').startswith(vmops.STAGED_MARKER) else None

    def discard_staged_disks(self, context, instance, disks):
        vm = self._staged_vm(disks)
        if vm is not None:
            vmops.destroy(self._session, self._compute, vm, instance)

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        placed = self._check_request(network_info, block_device_info,
                                     instance)
        nic_spec = self._nic_spec(placed,
                                  network.nic_model(image_meta, hardware))
        if not disks and _root_volume(block_device_info):
            # A volume-backed server arriving: nothing was staged.
            firmware = (hardware or {}).get('firmware') or (
                vmops.firmware(image_meta) if image_meta is not None
                else 'bios')
            return self._spawn_from_volume(instance, block_device_info,
                                           firmware, power_on, nic_spec)
        vm = self._staged_vm(disks)
        if vm is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        spec = vim.vm.ConfigSpec(
            name=instance.uuid, instanceUuid=instance.uuid,
            numCPUs=instance.flavor.vcpus,
            memoryMB=instance.flavor.memory_mb,
            annotation=vmops.annotation(vmops.INSTANCE_MARKER, instance))
        if hardware and hardware.get('firmware'):
            spec.firmware = hardware['firmware']
        elif image_meta is not None:
            # The mapped firmware (bios/efi) from the server's image
            # properties: staged VMs are made as BIOS.
            spec.firmware = vmops.firmware(image_meta)
        if nic_spec is not None:
            spec.deviceChange = nic_spec.deviceChange
            spec.extraConfig = nic_spec.extraConfig
        vmops.reconfigure(self._session, vm, spec, instance)
        vmops.grow_root_disk(self._session, vm, instance)
        self._attach_mapped_volumes(instance, vm, block_device_info)
        if power_on:
            vmops.power_on(self._session, vm, instance)
