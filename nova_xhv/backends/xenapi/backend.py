"""XenAPIBackend: Nova's ComputeDriver calls and XHV's disk exchange for
one XenServer / XCP-ng pool, through its master, on the XenAPI SDK.

Disks: images are translated to dynamic vhd by the translation engine and
uploaded into a new VDI on the configured SR with ``PUT /import_raw_vdi``;
exports and snapshots come back with ``GET /export_raw_vdi?format=vhd``
into a private local copy.  Guests: cloned from the HVM template, sized by
the flavor, one VBD per VDI (boot disk first), one VIF per Neutron port.
Volumes: raw NFS volume files as raw VDIs of an NFS SR, in place
(volumes.py); a server booted from a volume has no VDI of its own, its
boot volume is the bootable VBD at device 0.  Not done
(doc/source/xenapi.rst): extending an attached volume, resize within the
pool, live migration, consoles.
"""

import os
import shutil
import tempfile

from nova.compute import task_states
from nova import exception
from nova.image import glance
from nova.objects import fields as obj_fields
from nova.virt import driver
from nova.virt import hardware as nova_hardware
import os_resource_classes as orc
from oslo_log import log as logging
from oslo_utils import versionutils

from nova_xhv.backends import base
from nova_xhv.backends import family
from nova_xhv.backends import node_identity
from nova_xhv.backends import staging
from nova_xhv.backends.xenapi import facts as xen_facts
from nova_xhv.backends.xenapi import session as xsession
from nova_xhv.backends.xenapi import vm as vmops
from nova_xhv.backends.xenapi import volumes as xen_volumes
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
FAMILY = xen_facts.FAMILY
MiB = 1024 * 1024
GiB = 1024 * MiB
VHD = 'vhd'


class UnsupportedRequest(exception.NovaException):
    msg_fmt = 'The XHV xenapi backend cannot do this yet: %(what)s'


VifRefused = base.VifRefused


class XenAPIBackend(base.Backend):

    facts = FAMILY

    capabilities = dict(
        driver.ComputeDriver.capabilities,
        # The translation engine turns each into dynamic vhd for upload.
        supports_image_type_vhd=True, supports_image_type_raw=True,
        supports_image_type_qcow2=True, supports_image_type_vmdk=True,
        supports_image_type_vhdx=True)

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        conf = CONF.xhv_xenapi
        self._conf = {name: getattr(conf, name) for name in (
            'sr', 'template', 'network_map', 'default_network')}
        self._staging_root = conf.staging_dir
        self.xapi = xsession.XapiSession(
            conf.url, conf.username, conf.password, ca_file=conf.ca_file,
            insecure=conf.insecure, api_timeout=conf.api_timeout,
            transfer_timeout=conf.transfer_timeout)
        try:
            exports = xen_volumes.parse_exports(conf.volume_exports)
        except ValueError as exc:
            raise xsession.XapiConfigError(detail=str(exc))
        self._volumes = xen_volumes.VolumeAttacher(self.xapi, exports)
        self._sr = None
        self._template = None
        self._network_map = {}
        self._default_network = None
        self._nodename = None

    # -- service ----------------------------------------------------------

    def init_host(self, host):
        self.xapi.connect()
        pool = self.xapi.call('pool.get_all')[0]
        if self._conf['sr']:
            self._sr = self._find('SR', self._conf['sr'], 'sr')
        else:
            self._sr = self.xapi.call('pool.get_default_SR', pool)
            if self._sr == vmops.NULL:
                raise xsession.XapiConfigError(
                    detail='sr is empty and the pool has no default SR')
        self._template = self._find('VM', self._conf['template'],
                                    'template')
        if not self.xapi.call('VM.get_is_a_template', self._template):
            raise xsession.XapiConfigError(
                detail='template %r is a VM, not a template'
                       % self._conf['template'])
        self._network_map = {
            neutron: self._find('network', target, 'network_map')
            for neutron, target in self._conf['network_map'].items()}
        if self._conf['default_network']:
            self._default_network = self._find(
                'network', self._conf['default_network'], 'default_network')
        self._nodename = self.xapi.call('pool.get_uuid', pool)
        self._persist_node_identity()
        # Exports hold guest data: keep the folder private.
        os.makedirs(self._staging_root, mode=0o700, exist_ok=True)
        LOG.info('XHV xenapi backend drives pool %s through %s',
                 self._nodename, self.xapi.url)

    def _persist_node_identity(self):
        """Nova's compute_id: the pool's uuid is the node's identity."""
        node_identity.persist(self._nodename, 'pool %s' % self._nodename)

    def _find(self, cls, wanted, option):
        """The one ``cls`` whose uuid or name-label is ``wanted``."""
        try:
            return self.xapi.call('%s.get_by_uuid' % cls, wanted)
        except xsession.XapiError as exc:
            if xsession.error_code(exc) != 'UUID_INVALID':
                raise
        found = self.xapi.call('%s.get_by_name_label' % cls, wanted)
        if len(found) != 1:
            raise xsession.XapiConfigError(
                detail='%s: the pool has %s %s named %r' % (
                    option, 'no' if not found else len(found),
                    'storage repository' if cls == 'SR' else cls, wanted))
        return found[0]

    def cleanup_host(self, host):
        self.xapi.logout()

    def get_available_nodes(self, refresh=False):
        return [self._nodename] if self._nodename else []

    def get_nodenames_by_uuid(self, refresh=False):
        # The pool's uuid is the node's identity: stable across restarts
        # and reinstalls of this compute, one per pool.
        return {self._nodename: self._nodename} if self._nodename else {}

    def get_host_ip_addr(self):
        # This nova-compute's address (where XHV serves disk transfers).
        return CONF.my_ip

    def _hosts(self):
        hosts = []
        for record in self.xapi.call('host.get_all_records').values():
            metrics = self.xapi.call('host_metrics.get_record',
                                     record['metrics'])
            hosts.append({
                'vcpus': int(record['cpu_info'].get('cpu_count', 0)),
                'memory_mb': int(metrics['memory_total']) // MiB,
                'free_mb': int(metrics['memory_free']) // MiB,
                'version': record['software_version'].get(
                    'product_version')})
        return hosts

    def _sr_space(self):
        record = self.xapi.call('SR.get_record', self._sr)
        size = int(record['physical_size'])
        return size, size - int(record['physical_utilisation'])

    def get_available_resource(self, nodename):
        hosts = self._hosts()
        size, free = self._sr_space()
        versions = [h['version'] for h in hosts if h['version']]
        return {
            'vcpus': sum(h['vcpus'] for h in hosts),
            'memory_mb': sum(h['memory_mb'] for h in hosts),
            'local_gb': size // GiB,
            'vcpus_used': 0,
            'memory_mb_used': sum(h['memory_mb'] - h['free_mb']
                                  for h in hosts),
            'local_gb_used': (size - free) // GiB,
            'hypervisor_type': 'xen',
            'hypervisor_version': min(
                (versionutils.convert_version_to_int(v) for v in versions),
                default=0),
            'hypervisor_hostname': nodename,
            # The node's identity (get_nodenames_by_uuid).
            'uuid': self._nodename,
            'cpu_info': None,
            'supported_instances': [(obj_fields.Architecture.X86_64,
                                     obj_fields.HVType.XEN,
                                     obj_fields.VMMode.HVM)],
            'numa_topology': None,
        }

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        hosts = self._hosts()
        size, free = self._sr_space()
        ratios = self._get_allocation_ratios(
            provider_tree.data(nodename).inventory)
        provider_tree.update_inventory(nodename, {
            orc.VCPU: {
                'total': sum(h['vcpus'] for h in hosts),
                'reserved': CONF.reserved_host_cpus, 'min_unit': 1,
                # One VM runs on one host.
                'max_unit': max((h['vcpus'] for h in hosts), default=1),
                'step_size': 1, 'allocation_ratio': ratios[orc.VCPU]},
            orc.MEMORY_MB: {
                'total': sum(h['memory_mb'] for h in hosts),
                'reserved': CONF.reserved_host_memory_mb, 'min_unit': 1,
                'max_unit': max((h['memory_mb'] for h in hosts), default=1),
                'step_size': 1, 'allocation_ratio': ratios[orc.MEMORY_MB]},
            orc.DISK_GB: {
                'total': size // GiB,
                'reserved': -(-CONF.reserved_host_disk_mb // 1024),
                'min_unit': 1, 'max_unit': max(free // GiB, 1),
                'step_size': 1, 'allocation_ratio': ratios[orc.DISK_GB]},
        })
        provider_tree.add_traits(nodename, 'HW_ARCH_X86_64')

    # -- instances --------------------------------------------------------

    def _instance_records(self):
        return [r for r in self.xapi.call('VM.get_all_records').values()
                if vmops.is_instance(r)]

    def list_instances(self):
        return [r['name_label'] for r in self._instance_records()]

    def list_instance_uuids(self):
        return [r['other_config'][vmops.NOVA_UUID]
                for r in self._instance_records()]

    def instance_exists(self, instance):
        return vmops.find(self.xapi, instance) is not None

    def get_info(self, instance, use_cache=True):
        ref = vmops.get(self.xapi, instance)
        state = vmops.state(self.xapi, ref, instance)
        return nova_hardware.InstanceInfo(
            state=vmops.POWER_STATES.get(state, 0), internal_id=ref)

    def plugged_ports(self, instance):
        return vmops.nics(self.xapi, vmops.get(self.xapi, instance))

    def power_off(self, instance, timeout=0, retry_interval=0):
        ref = vmops.get(self.xapi, instance)
        vmops.stop(self.xapi, ref, instance, clean=bool(timeout))

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        vmops.start(self.xapi, vmops.get(self.xapi, instance), instance)

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        vmops.reboot(self.xapi, vmops.get(self.xapi, instance), instance,
                     hard=reboot_type == 'HARD')

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        ref = vmops.find(self.xapi, instance)
        if ref is None:
            LOG.info('Instance %s has no VM in pool %s; nothing to destroy',
                     instance.uuid, self._nodename)
            return
        vmops.stop(self.xapi, ref, instance)
        # Volumes are not the VM's disks: detached, their files stay.
        self._volumes.release_all(instance, ref)
        vmops.destroy(self.xapi, ref, instance, destroy_disks)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        # destroy() took the VM apart; VIFs die with it.
        pass

    # -- building guests --------------------------------------------------

    def _check_volumes(self, block_device_info):
        """Every volume checked before anything is created."""
        for bdm in driver.block_device_info_get_mapping(block_device_info):
            self._volumes._paths(bdm['connection_info'])

    def _attach_mapped(self, context, instance, block_device_info,
                       power_on):
        """Attach the mapped volumes to the new (halted) VM, then start.

        On failure the VM is taken apart (its disks stay, for the caller).
        """
        # The boot volume (a server booted from one) first, as device 0.
        mapped = sorted(
            driver.block_device_info_get_mapping(block_device_info),
            key=lambda bdm: bdm.get('boot_index') != 0)
        ref = vmops.get(self.xapi, instance)
        try:
            for bdm in mapped:
                self._volumes.attach(instance, ref, bdm['connection_info'],
                                     running=False,
                                     boot=bdm.get('boot_index') == 0)
            if power_on:
                vmops.start(self.xapi, ref, instance)
        except Exception:
            self._volumes.release_all(instance, ref)
            vmops.destroy(self.xapi, ref, instance, destroy_disks=False)
            raise

    # -- volumes (volumes.py) -------------------------------------------

    def get_volume_connector(self, instance):
        # The pool opens the file through an NFS SR; no 'instance' key
        # (nothing of os-brick runs for it on this compute).
        return {'ip': CONF.my_ip, 'host': CONF.host, 'initiator': None,
                'platform': 'x86_64', 'os_type': 'linux',
                'multipath': False}

    def check_volume_attachable(self, connection_info):
        self._volumes.check(connection_info)

    def attach_volume(self, context, connection_info, instance, mountpoint,
                      disk_bus=None, device_type=None, encryption=None):
        if encryption:
            raise UnsupportedRequest(what='attaching an encrypted volume')
        ref = vmops.get(self.xapi, instance)
        running = vmops.state(self.xapi, ref, instance) == vmops.RUNNING
        # The root device of a server booted from a volume (given back
        # after a failed or reverted move) is the bootable device 0.
        root = (instance.obj_attr_is_set('root_device_name') and
                instance.root_device_name)
        self._volumes.attach(instance, ref, connection_info, running,
                             boot=bool(mountpoint) and mountpoint == root)

    def detach_volume(self, context, connection_info, instance, mountpoint,
                      encryption=None):
        ref = vmops.find(self.xapi, instance)
        if ref is None:
            LOG.info('Instance %s has no VM in pool %s; volume already '
                     'detached', instance.uuid, self._nodename)
        self._volumes.detach(instance, ref, connection_info)

    def extend_volume(self, context, connection_info, instance,
                      requested_size):
        raise UnsupportedRequest(what='extending an attached volume '
                                      '(detach it, extend, attach again)')

    def _nics(self, network_info):
        """[(port id, MAC, xapi network ref)], checked before any change.

        The xapi network is the one the binding names, else the one
        ``[xhv_xenapi] network_map`` / ``default_network`` gives.
        """
        vifs = list(network_info or [])
        result = []
        for vif, nic in zip(vifs, self.nics(vifs)):
            try:
                network = self._bound_network(nic.port_id, nic)
            except VifRefused:
                if not (self._network_map or self._default_network):
                    raise
                network = self._mapped_network(nic.port_id,
                                               vif.get('network'))
            result.append((nic.port_id, nic.mac, network))
        return result

    def _bound_network(self, port_id, nic):
        """The xapi network a binding by XHV's ML2 driver names."""
        for name in (nic.port_group, nic.switch if nic.network_type ==
                     'flat' else None):
            if name:
                found = self.xapi.call('network.get_by_name_label', name)
                if len(found) == 1:
                    return found[0]
        raise VifRefused(
            family=self.family, port_id=port_id,
            reason='the pool has no xapi network %r for the %s segment '
                   '(VLAN %s on %r); create it first' % (
                       nic.port_group, nic.network_type,
                       nic.segmentation_id, nic.switch))

    def _mapped_network(self, port_id, network):
        """The xapi network ``[xhv_xenapi] network_map`` gives a port."""
        network = network or {}
        for key in (network.get('id'), network.get('label')):
            if key and key in self._network_map:
                return self._network_map[key]
        if self._default_network is not None:
            return self._default_network
        raise VifRefused(
            family=self.family, port_id=port_id,
            reason='Neutron network %s (%s) is not in [xhv_xenapi] '
                   'network_map and no default_network is set' % (
                       network.get('id'), network.get('label')))

    @staticmethod
    def _hardware_from_image(image_meta, override=None):
        """The family's own names for what the image properties ask for."""
        props = image_meta.properties if image_meta is not None else None
        chosen = {}
        for kind in (family.DISK_BUS, family.NIC_MODEL):
            chosen[kind] = 'paravirtual'
            for cls, wanted in FAMILY.image_properties[kind].items():
                if props is not None and all(
                        name in props and props.get(name) == value
                        for name, value in wanted.items()):
                    chosen[kind] = cls
                    break
        firmware = (props.get('hw_firmware_type')
                    if props is not None and 'hw_firmware_type' in props
                    else None)
        chosen[family.FIRMWARE] = firmware if firmware in \
            family.FIRMWARE_CLASSES else 'bios'
        names = FAMILY.native_hardware(chosen)
        names.update(override or {})
        return names

    def _create_guest(self, instance, vdis, nics, hardware, power_on):
        """A VM on ``vdis`` (boot disk first).

        On failure no VM is left and the VDIs are untouched.
        """
        ref = vmops.build(self.xapi, instance, self._template, hardware)
        try:
            for position, vdi in enumerate(vdis):
                vmops.attach_disk(self.xapi, ref, vdi, position)
            for position, (port_id, mac, network) in enumerate(nics):
                vmops.plug_nic(self.xapi, ref, position, network, mac,
                               port_id)
            if power_on:
                vmops.start(self.xapi, ref, instance)
        except Exception:
            try:
                vmops.destroy(self.xapi, ref, instance, destroy_disks=False)
            except Exception as exc:
                LOG.warning('Could not remove the VM of %s after a failed '
                            'create: %s', instance.uuid, exc)
            raise
        return ref

    def _new_vdi(self, instance, label, size, other_config):
        return self.xapi.call('VDI.create', {
            'name_label': label,
            'name_description': 'OpenStack instance %s' % instance.uuid,
            'SR': self._sr, 'virtual_size': str(size), 'type': 'user',
            'sharable': False, 'read_only': False,
            'other_config': other_config, 'xenstore_data': {},
            'sm_config': {}, 'tags': []})

    def _upload(self, vdi, path):
        self.xapi.import_vdi(vdi, self.xapi.call('VDI.get_uuid', vdi), path,
                             VHD)

    def _work_dir(self, prefix):
        return tempfile.mkdtemp(prefix=prefix, dir=self._staging_root)

    def _options(self, workdir):
        return translate_conf.convert_options_from_conf(
            CONF.xhv, staging_dir=workdir)

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        nics = self._nics(network_info)
        self._check_volumes(block_device_info)
        if vmops.find(self.xapi, instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        hardware = self._hardware_from_image(image_meta)
        if any(bdm.get('boot_index') == 0 for bdm in
               driver.block_device_info_get_mapping(block_device_info)):
            # Booted from a volume: no image disk of its own.
            self._create_guest(instance, [], nics, hardware, False)
            self._attach_mapped(context, instance, block_device_info,
                                power_on)
            return
        workdir = self._work_dir('spawn-%s-' % instance.uuid)
        try:
            image = os.path.join(workdir, 'image')
            glance.API().download(context, image_meta.id, dest_path=image)
            target = os.path.join(workdir, 'disk-0.vhd')
            try:
                result = translate.convert(
                    image, target, to_format=VHD,
                    from_format=image_meta.disk_format,
                    subformat=FAMILY.native_subformat,
                    options=self._options(workdir))
            except translate.TranslationError as error:
                # A refused or unconvertible image: one line in the fault.
                raise exception.ImageUnacceptable(image_id=image_meta.id,
                                                  reason=str(error))
            os.unlink(image)
            size = max(result.virtual_size, instance.flavor.root_gb * GiB)
            vdi = self._new_vdi(instance, '%s-disk-0' % instance.uuid, size,
                                {vmops.NOVA_UUID: instance.uuid})
            try:
                self._upload(vdi, target)
                mapped = driver.block_device_info_get_mapping(
                    block_device_info)
                self._create_guest(instance, [vdi], nics, hardware,
                                   power_on and not mapped)
                if mapped:
                    self._attach_mapped(context, instance, block_device_info,
                                        power_on)
            except Exception:
                vmops.destroy_vdi(self.xapi, vdi)
                raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def snapshot(self, context, instance, image_id, update_task_state):
        ref = vmops.get(self.xapi, instance)
        found = vmops.disks(self.xapi, ref, instance)
        if not found:
            raise UnsupportedRequest(what='snapshot of a VM without disks')
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        # A VDI snapshot is consistent while the guest runs.
        snap = self.xapi.call('VDI.snapshot', found[0][0], {})
        workdir = self._work_dir('snapshot-%s-' % instance.uuid)
        try:
            path = os.path.join(workdir, 'image.vhd')
            self.xapi.export_vdi(snap, found[0][1]['uuid'], path, VHD)
            translate.inspect_image(path, claimed_format=VHD)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            metadata = {'disk_format': VHD, 'container_format': 'bare',
                        'properties': {'hypervisor_type': 'xen'}}
            with open(path, 'rb') as data:
                glance.API().update(context, image_id, metadata, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            vmops.destroy_vdi(self.xapi, snap)

    # -- disk exchange ----------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        ref = vmops.get(self.xapi, instance)
        state = vmops.state(self.xapi, ref, instance)
        if state != vmops.HALTED:
            raise exception.InstanceInvalidState(
                instance_uuid=instance.uuid, attr='power_state',
                state=state, method='export_disks')
        bus = (self.xapi.call('VM.get_other_config', ref).get(
            vmops.DISK_BUS_KEY)
            or FAMILY.native_name(family.DISK_BUS, 'paravirtual'))
        workdir = self._work_dir('export-%s-' % instance.uuid)
        try:
            exported = []
            for n, (vdi, record, device) in enumerate(
                    vmops.disks(self.xapi, ref, instance)):
                path = os.path.join(workdir, 'disk-%d.vhd' % n)
                self.xapi.export_vdi(vdi, record['uuid'], path, VHD)
                info = translate.inspect_image(path, claimed_format=VHD)
                exported.append(DiskDescriptor(
                    format=VHD, subformat=info.subformat,
                    virtual_size=info.virtual_size, path=path, bus=bus,
                    boot_index=0 if n == 0 else None,
                    device_name=str(device), handle=record['uuid']))
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return exported

    def release_exported_disks(self, context, instance, disks):
        staging.release_export_folders(self._staging_root, disks)

    def check_stageable(self, context, instance, disks):
        if not disks or disks[0].boot_index != 0:
            raise UnsupportedRequest(
                what='a guest without its boot disk (boot_index 0) first')
        needed = sum(d.virtual_size for d in disks)
        _, free = self._sr_space()
        if needed > free:
            raise exception.ComputeResourcesUnavailable(
                reason='the SR of pool %s has %d bytes free; the disks need '
                       '%d' % (self._nodename, free, needed))

    def stage_disks(self, context, instance, disks):
        for disk in disks:
            if disk.format != VHD or not disk.path or \
                    not os.path.isfile(disk.path):
                raise UnsupportedRequest(
                    what='staging %s disk %s: the xen family stages local '
                         'vhd files' % (disk.format, disk.path or disk.url))
        staged = []
        try:
            for n, disk in enumerate(disks):
                vdi = self._new_vdi(
                    instance, 'xhv-staged-%s-%d' % (instance.uuid, n),
                    disk.virtual_size, {vmops.STAGED: instance.uuid})
                uuid = self.xapi.call('VDI.get_uuid', vdi)
                staged.append(DiskDescriptor(
                    format=VHD, subformat=disk.subformat,
                    virtual_size=disk.virtual_size,
                    url='%s/export_raw_vdi?vdi=%s&format=vhd' % (
                        self.xapi.url, uuid),
                    bus=disk.bus, boot_index=disk.boot_index,
                    device_name=disk.device_name, checksum=disk.checksum,
                    handle=uuid))
                self._upload(vdi, disk.path)
        except Exception:
            self.discard_staged_disks(context, instance, staged)
            raise
        return staged

    def _staged_vdi(self, instance, disk):
        """The VDI ref of a disk staged for ``instance``, or None."""
        if not disk.handle:
            return None
        try:
            vdi = self.xapi.call('VDI.get_by_uuid', disk.handle)
            record = self.xapi.call('VDI.get_record', vdi)
        except xsession.XapiError as exc:
            if xsession.error_code(exc) in ('UUID_INVALID',
                                            'HANDLE_INVALID'):
                return None
            raise
        if record['other_config'].get(vmops.STAGED) != instance.uuid:
            return None  # not ours, or adopted by a VM already
        return vdi

    def discard_staged_disks(self, context, instance, disks):
        for disk in disks:
            vdi = self._staged_vdi(instance, disk)
            if vdi is not None:
                vmops.destroy_vdi(self.xapi, vdi)

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        nics = self._nics(network_info)
        self._check_volumes(block_device_info)
        if vmops.find(self.xapi, instance) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        vdis = [self._staged_vdi(instance, d) for d in disks]
        volume_backed = any(
            bdm.get('boot_index') == 0 for bdm in
            driver.block_device_info_get_mapping(block_device_info))
        if (not vdis and not volume_backed) or None in vdis:
            raise UnsupportedRequest(
                what='spawning %s: a staged disk is missing' % instance.uuid)
        chosen = self._hardware_from_image(image_meta, hardware)
        mapped = driver.block_device_info_get_mapping(block_device_info)
        self._create_guest(instance, vdis, nics, chosen,
                           power_on and not mapped)
        if mapped:
            self._attach_mapped(context, instance, block_device_info,
                                power_on)
        # The VM owns them now: no longer staged, never discarded.
        for n, vdi in enumerate(vdis):
            self.xapi.call('VDI.remove_from_other_config', vdi, vmops.STAGED)
            self.xapi.call('VDI.add_to_other_config', vdi, vmops.NOVA_UUID,
                           instance.uuid)
            self.xapi.call('VDI.set_name_label', vdi,
                           '%s-disk-%d' % (instance.uuid, n))
