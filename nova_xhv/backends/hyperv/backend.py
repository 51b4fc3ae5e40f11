"""HyperVBackend: Nova's ComputeDriver calls and XHV's disk exchange for
one Hyper-V host, from a Linux nova-compute.

VMs are named by the instance uuid; their Notes carry ``xhv:<uuid>`` and
the display name, which is how ``list_instance_uuids`` knows Nova's VMs
from others.  Each instance has a folder ``<vm_path>\\<uuid>`` (VM
configuration and ``disk-N.vhdx``); staged disks wait in
``<vm_path>\\xhv-staged-<uuid>``.  Disk data moves over SMB
(storage.Share), everything else is PowerShell over WinRM
(remote.Remote), every value passing through script.literal.

Volumes: raw NFS file volumes, in place as fixed VHDs over SMB
(volumes.py); a server booted from a volume has no disk of its own, its
boot volume sits where the generation boots from (IDE 0:0 on generation
1, SCSI 0:0 on 2).  Not done (see doc/source/hyperv.rst): console log,
resize within Hyper-V, growing the root disk to the flavor.
"""

import os
import shutil
import tempfile

from nova.compute import power_state
from nova.compute import task_states
from nova import exception
from nova.image import glance
from nova.objects import fields as obj_fields
from nova.virt import driver
from nova.virt import hardware
from nova.virt import node as nova_node
import os_resource_classes as orc
from oslo_log import log as logging
from oslo_utils import versionutils

from nova_xhv.backends import base
from nova_xhv.backends import family
from nova_xhv.backends.hyperv import facts as hyperv_facts
from nova_xhv.backends.hyperv import network
from nova_xhv.backends.hyperv import remote as hv_remote
from nova_xhv.backends.hyperv import script as ps
from nova_xhv.backends.hyperv import storage as hv_storage
from nova_xhv.backends.hyperv import volumes as hv_volumes
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
FAMILY = hyperv_facts.FAMILY
GiB = 1024 ** 3
NOTES_PREFIX = 'xhv:'
STAGED_PREFIX = 'xhv-staged-'
# Microsoft.HyperV.PowerShell.VMState as ConvertTo-Json writes it.
VM_STATES = {2: power_state.RUNNING, 3: power_state.SHUTDOWN,
             4: power_state.RUNNING, 6: power_state.SUSPENDED,
             9: power_state.PAUSED, 10: power_state.RUNNING,
             11: power_state.RUNNING, 32773: power_state.RUNNING,
             32776: power_state.RUNNING, 32777: power_state.PAUSED,
             32779: power_state.SUSPENDED}
VM_RUNNING, VM_OFF = 2, 3
CONTROLLER_NAMES = {0: 'IDE', 1: 'SCSI'}
VHD_FORMATS = {3: 'vhdx', 2: 'vhd'}
VHD_TYPES = {2: 'fixed', 3: 'dynamic'}
IDE_SLOTS = [(0, 0), (0, 1), (1, 0), (1, 1)]
VM_FIELDS = ('Name', 'State', 'Notes', 'Generation')


class HyperVConfigError(exception.NovaException):
    msg_fmt = 'The XHV hyperv backend cannot start: %(detail)s'


class HyperVBackendError(exception.NovaException):
    msg_fmt = '%(reason)s'


def _boot_volume(block_device_info):
    """The mapping of the volume a server boots from, or None."""
    for bdm in driver.block_device_info_get_mapping(block_device_info):
        if bdm.get('boot_index') == 0:
            return bdm
    return None


class HyperVBackend(base.Backend):

    facts = FAMILY
    capabilities = dict(
        driver.ComputeDriver.capabilities,
        supports_image_type_raw=True, supports_image_type_qcow2=True,
        supports_image_type_vmdk=True, supports_image_type_vhdx=True,
        supports_image_type_vhd=True)

    def __init__(self, virtapi, read_only=False, options=None):
        """``options``: another [xhv_hyperv] group (xhv-status)."""
        super().__init__(virtapi)
        conf = options if options is not None else CONF.xhv_hyperv
        if not conf.host:
            raise HyperVConfigError(detail='[xhv_hyperv] host is not set')
        if conf.transport == 'basic' and not conf.use_https:
            raise HyperVConfigError(
                detail='transport basic sends the password in clear over '
                       'HTTP: set use_https = true or use ntlm')
        try:
            self._mappings = network.parse_mappings(conf.vswitch_mappings)
            volume_shares = hv_volumes.parse_mappings(conf.volume_shares)
        except ValueError as exc:
            raise HyperVConfigError(detail=str(exc))
        self._generation = conf.generation
        self._vm_path = conf.vm_path.rstrip('\\')
        self._staging_root = conf.staging_dir
        self._remote = hv_remote.Remote(
            conf.host, conf.port, conf.use_https, conf.transport,
            conf.username, conf.password, ca_file=conf.ca_file,
            insecure=conf.insecure,
            operation_timeout=conf.operation_timeout)
        self._share = hv_storage.Share(
            conf.host, conf.smb_port, conf.smb_share, conf.username,
            conf.password, self._vm_path, encrypt=conf.smb_encrypt)
        self._volume_shares = hv_volumes.VolumeShares(
            volume_shares, conf.smb_port, conf.username, conf.password,
            encrypt=conf.smb_encrypt)
        self._nodename = None

    @property
    def endpoint(self):
        """The WinRM URL and the SMB share this backend talks to."""
        return self._remote.endpoint, self._share.label

    def _run(self, what, *lines):
        return self._remote.run(ps.script(*lines), what)

    # -- service ----------------------------------------------------------

    def init_host(self, host):
        found = self._run('Get-VMHost', ps.command(
            'Get-VMHost', ps.select_json('ComputerName')))
        if not found or not found[0].get('ComputerName'):
            raise HyperVConfigError(detail='Get-VMHost returned no host')
        docs = self._run('Get-VMSwitch', ps.command(
            'Get-VMSwitch', ps.select_json('Name')))
        switches = {s['Name'] for s in hv_remote.as_list(
            docs[0] if docs else None)}
        missing = sorted(network.switches_of(self._mappings) - switches)
        if missing:
            raise HyperVConfigError(
                detail='vSwitch(es) %s named in [xhv_hyperv] '
                       'vswitch_mappings do not exist on '
                       '%s (it has: %s)' % (', '.join(map(repr, missing)),
                                            found[0]['ComputerName'],
                                            ', '.join(sorted(switches))))
        self._resources()
        self._share.check()
        self._nodename = found[0]['ComputerName']
        os.makedirs(self._staging_root, mode=0o700, exist_ok=True)
        LOG.info('XHV hyperv backend drives Hyper-V host %s (%s)',
                 self._nodename, self._remote.endpoint)

    def cleanup_host(self, host):
        self._remote.close()
        self._share.close()

    def get_available_nodes(self, refresh=False):
        return [self._nodename] if self._nodename else []

    def node_uuid(self):
        """This compute's node uuid: Nova's, kept in its state_path."""
        return nova_node.get_local_node_uuid()

    def get_nodenames_by_uuid(self, refresh=False):
        return {self.node_uuid(): self._nodename}

    def get_host_ip_addr(self):
        # This nova-compute's address (where XHV serves disk transfers).
        return CONF.my_ip

    def _resources(self):
        docs = self._run(
            'Get-VMHost',
            ps.command('Get-VMHost', ps.select_json(
                'LogicalProcessorCount', 'MemoryCapacity')),
            ps.command('Get-Volume', ps.select_json('Size', 'SizeRemaining'),
                       FilePath=self._vm_path))
        if len(docs) != 2:
            raise HyperVBackendError(reason='Get-VMHost/Get-Volume returned '
                                            '%d documents' % len(docs))
        host, volume = docs
        return {'vcpus': int(host['LogicalProcessorCount']),
                'memory_mb': int(host['MemoryCapacity']) // (1024 * 1024),
                'disk_total': int(volume['Size']),
                'disk_free': int(volume['SizeRemaining'])}

    def get_available_resource(self, nodename):
        res = self._resources()
        return {
            'vcpus': res['vcpus'], 'memory_mb': res['memory_mb'],
            'local_gb': res['disk_total'] // GiB,
            'vcpus_used': 0, 'memory_mb_used': 0,
            'local_gb_used': (res['disk_total'] - res['disk_free']) // GiB,
            'hypervisor_type': 'hyperv',
            # Windows Server 2016 and later are all 10.0.
            'hypervisor_version': versionutils.convert_version_to_int('10.0'),
            'hypervisor_hostname': nodename,
            'uuid': self.node_uuid(),
            'cpu_info': None,
            'supported_instances': [(obj_fields.Architecture.X86_64,
                                     obj_fields.HVType.HYPERV,
                                     obj_fields.VMMode.HVM)],
            'numa_topology': None,
        }

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        res = self._resources()
        ratios = self._get_allocation_ratios(
            provider_tree.data(nodename).inventory)
        inventory = {
            orc.VCPU: {'total': res['vcpus'],
                       'reserved': CONF.reserved_host_cpus, 'min_unit': 1,
                       'max_unit': res['vcpus'], 'step_size': 1,
                       'allocation_ratio': ratios[orc.VCPU]},
            orc.MEMORY_MB: {'total': res['memory_mb'],
                            'reserved': CONF.reserved_host_memory_mb,
                            'min_unit': 1, 'max_unit': res['memory_mb'],
                            'step_size': 1,
                            'allocation_ratio': ratios[orc.MEMORY_MB]},
            orc.DISK_GB: {'total': res['disk_total'] // GiB,
                          'reserved': -(-CONF.reserved_host_disk_mb // 1024),
                          'min_unit': 1,
                          'max_unit': max(res['disk_free'] // GiB, 1),
                          'step_size': 1,
                          'allocation_ratio': ratios[orc.DISK_GB]},
        }
        provider_tree.update_inventory(nodename, inventory)
        provider_tree.add_traits(nodename, 'HW_ARCH_X86_64')

    # -- instances --------------------------------------------------------

    def _vms(self):
        docs = self._run('Get-VM', ps.command('Get-VM',
                                              ps.select_json(*VM_FIELDS)))
        vms = hv_remote.as_list(docs[0]) if docs else []
        return [vm for vm in vms if (vm.get('Notes') or '').startswith(
            NOTES_PREFIX + vm['Name'])]

    def _find(self, uuid):
        docs = self._run('Get-VM', ps.command(
            'Get-VM', ps.select_json(*VM_FIELDS), Name=uuid,
            ErrorAction='SilentlyContinue'))
        vms = [vm for vm in (hv_remote.as_list(docs[0]) if docs else [])
               if vm['Name'] == uuid]
        if len(vms) > 1:
            raise HyperVBackendError(reason='%d VMs on the host are named %s'
                                            % (len(vms), uuid))
        return vms[0] if vms else None

    def _get(self, instance):
        vm = self._find(instance.uuid)
        if vm is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return vm

    def list_instances(self):
        return [vm['Name'] for vm in self._vms()]

    def list_instance_uuids(self):
        return [vm['Name'] for vm in self._vms()]

    def instance_exists(self, instance):
        return self._find(instance.uuid) is not None

    def get_info(self, instance, use_cache=True):
        vm = self._get(instance)
        return hardware.InstanceInfo(
            state=VM_STATES.get(vm['State'], power_state.NOSTATE))

    def _generation_for(self, image_meta, hardware_override=None):
        firmware = (hardware_override or {}).get(family.FIRMWARE)
        if firmware:
            return 2 if FAMILY.classify(family.FIRMWARE,
                                        firmware) == 'uefi' else 1
        props = image_meta.properties if image_meta is not None else None
        if props is not None:
            if props.get('hw_machine_type', None) == 'hyperv-gen2':
                return 2
            wanted = props.get('hw_firmware_type', None)
            if wanted == 'uefi':
                return 2
            if wanted == 'bios':
                return 1
        return self._generation

    @staticmethod
    def _nic_class(image_meta, hardware_override=None):
        nic = (hardware_override or {}).get(family.NIC_MODEL)
        if nic:
            return FAMILY.classify(family.NIC_MODEL, nic) or 'paravirtual'
        props = image_meta.properties if image_meta is not None else None
        model = props.get('hw_vif_model', None) if props is not None \
            else None
        return 'e1000' if model in ('e1000', 'e1000e', 'rtl8139',
                                    'ne2k_pci', 'pcnet') else 'paravirtual'

    @staticmethod
    def _notes(instance):
        name = getattr(instance, 'display_name', None) \
            if instance.obj_attr_is_set('display_name') else None
        return '%s%s\n%s' % (NOTES_PREFIX, instance.uuid, name or '')

    def _attachments(self, generation, disks):
        """(relative path, controller type, number, location) per disk."""
        ide = list(IDE_SLOTS)
        scsi = 0
        placed = []
        for n, (relative, bus) in enumerate(disks):
            want_ide = (bus or '').upper().startswith('IDE') or (
                generation == 1 and n == 0)
            if generation == 2 or not want_ide or not ide:
                placed.append((relative, 'SCSI', 0, scsi))
                scsi += 1
            else:
                number, location = ide.pop(0)
                placed.append((relative, 'IDE', number, location))
        return placed

    def _create_vm(self, instance, disks, network_info, generation,
                   nic_class, power_on):
        """Create the VM on staged/uploaded ``disks`` [(relative, bus)]."""
        uuid = instance.uuid
        legacy = nic_class == 'e1000' and generation == 1
        lines = [
            ps.command('New-VM', 'Out-Null', Name=uuid,
                       Generation=generation,
                       MemoryStartupBytes=instance.flavor.memory_mb
                       * 1024 * 1024,
                       NoVHD=ps.SWITCH,
                       Path=self._share.windows_path(uuid)),
            ps.command('Set-VM', Name=uuid,
                       ProcessorCount=instance.flavor.vcpus,
                       Notes=self._notes(instance)),
        ]
        if generation == 2:
            # XHV's guests are not all signed for Microsoft's UEFI CA.
            lines.append(ps.command('Set-VMFirmware', VMName=uuid,
                                    EnableSecureBoot='Off'))
        for relative, ctype, number, location in self._attachments(
                generation, disks):
            lines.append(ps.command(
                'Add-VMHardDiskDrive', VMName=uuid,
                Path=self._share.windows_path(relative),
                ControllerType=ctype, ControllerNumber=number,
                ControllerLocation=location))
        # One script per port: a script must fit on a command line.
        ports = network.plug_lines(uuid, network_info, self._mappings,
                                   legacy)
        try:
            self._run('New-VM', *lines)
            for port in ports:
                self._run('Add-VMNetworkAdapter', *port)
            if power_on:
                self._run('Start-VM', ps.command('Start-VM', Name=uuid))
        except Exception:
            self._remove_vm(uuid)
            raise

    def _remove_vm(self, uuid, quiet=True):
        """Turn off and remove VM ``uuid`` (its disks stay).

        ``quiet``: also when it may not exist (undoing a half-made VM);
        otherwise a failure raises, before its disks are touched.
        """
        action = 'SilentlyContinue' if quiet else None
        self._run('Remove-VM',
                  ps.command('Stop-VM', Name=uuid, TurnOff=ps.SWITCH,
                             Force=ps.SWITCH, ErrorAction=action),
                  ps.command('Remove-VM', Name=uuid, Force=ps.SWITCH,
                             ErrorAction=action))

    def _check_request(self, network_info, block_device_info):
        for bdm in driver.block_device_info_get_mapping(block_device_info):
            # Every volume checked before the VM exists.
            self._volume_shares.unc_of(bdm['connection_info'])
        self.nics(network_info)  # the network contract's own checks
        network.check(network_info, self._mappings)

    def plugged_ports(self, instance):
        """[(port id or None, MAC)] of the VM's adapters, in order."""
        self._get(instance)
        docs = self._run('Get-VMNetworkAdapter', ps.command(
            'Get-VMNetworkAdapter', ps.select_json('Name', 'MacAddress'),
            VMName=instance.uuid))
        return [network.port_of(a['Name'], a['MacAddress'])
                for a in hv_remote.as_list(docs[0] if docs else None)]

    def _staging_dir(self, prefix):
        return tempfile.mkdtemp(prefix=prefix, dir=self._staging_root)

    def _options(self, workdir):
        return translate_conf.convert_options_from_conf(
            CONF.xhv, staging_dir=workdir)

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self._check_request(network_info, block_device_info)
        if self._find(instance.uuid) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        if self._share.exists(instance.uuid):
            raise HyperVBackendError(
                reason='The folder of instance %s exists on the host '
                       'already.' % instance.uuid)
        if _boot_volume(block_device_info) is not None:
            # Booted from a volume: no image disk, the VM's folder only.
            self._share.mkdir(instance.uuid)
            try:
                self._create_vm(instance, [], network_info,
                                self._generation_for(image_meta),
                                self._nic_class(image_meta), False)
                self._attach_mapped(context, instance, block_device_info,
                                    power_on)
            except Exception:
                self._share.remove_tree(instance.uuid)
                raise
            return
        workdir = self._staging_dir('spawn-%s-' % instance.uuid)
        created = False
        try:
            image = os.path.join(workdir, 'image')
            glance.API().download(context, image_meta.id, dest_path=image)
            target = os.path.join(workdir, 'disk-0.vhdx')
            try:
                translate.convert(image, target,
                                  to_format=FAMILY.native_format,
                                  from_format=image_meta.disk_format,
                                  subformat=FAMILY.native_subformat,
                                  options=self._options(workdir))
            except translate.TranslationError as error:
                raise exception.ImageUnacceptable(image_id=image_meta.id,
                                                  reason=str(error))
            self._share.mkdir(instance.uuid)
            created = True
            relative = '%s/disk-0.vhdx' % instance.uuid
            self._share.upload(target, relative)
            self._create_vm(instance, [(relative, None)], network_info,
                            self._generation_for(image_meta),
                            self._nic_class(image_meta), power_on)
        except Exception:
            if created:
                self._share.remove_tree(instance.uuid)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def power_off(self, instance, timeout=0, retry_interval=0):
        self._get(instance)
        if timeout:
            try:
                self._run('Stop-VM', ps.command('Stop-VM', Name=instance.uuid,
                                                Force=ps.SWITCH))
                return
            except hv_remote.HyperVCommandError as exc:
                LOG.info('Clean shutdown of %s failed (%s); turning it off',
                         instance.uuid, exc)
        self._run('Stop-VM', ps.command('Stop-VM', Name=instance.uuid,
                                        TurnOff=ps.SWITCH, Force=ps.SWITCH))

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        self._get(instance)
        self._run('Start-VM', ps.command('Start-VM', Name=instance.uuid))

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        vm = self._get(instance)
        uuid = instance.uuid
        if vm['State'] == VM_RUNNING and reboot_type != 'HARD':
            try:
                self._run('Stop-VM', ps.command('Stop-VM', Name=uuid,
                                                Force=ps.SWITCH),
                          ps.command('Start-VM', Name=uuid))
                return
            except hv_remote.HyperVCommandError as exc:
                LOG.info('Soft reboot of %s failed (%s); rebooting hard',
                         uuid, exc)
        if vm['State'] == VM_RUNNING:
            self._run('Restart-VM', ps.command('Restart-VM', Name=uuid,
                                               Force=ps.SWITCH))
        else:
            self._run('Start-VM', ps.command('Start-VM', Name=uuid))

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        if self._find(instance.uuid) is not None:
            volumes = [d['Path'] for d in self._drives(instance.uuid)
                       if self._volume_shares.is_volume_path(d['Path'])]
            self._remove_vm(instance.uuid, quiet=False)
            # The VM is gone, its volume files stay: as they were.
            for link in volumes:
                self._volume_shares.restore(link=link)
        else:
            LOG.info('Instance %s has no VM on the host', instance.uuid)
        if destroy_disks:
            self._share.remove_tree(instance.uuid)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        if destroy_disks:
            self._share.remove_tree(instance.uuid)

    def _drives(self, uuid):
        docs = self._run('Get-VMHardDiskDrive', ps.command(
            'Get-VMHardDiskDrive', ps.select_json(
                'ControllerType', 'ControllerNumber', 'ControllerLocation',
                'Path'), VMName=uuid))
        drives = hv_remote.as_list(docs[0]) if docs else []
        # The boot disk first: generation 1 boots from IDE 0:0.
        return sorted(drives, key=lambda d: (d['ControllerType'],
                                             d['ControllerNumber'],
                                             d['ControllerLocation']))

    def _vhd(self, windows_path):
        docs = self._run('Get-VHD', ps.command(
            'Get-VHD', ps.select_json('VhdFormat', 'VhdType', 'Size'),
            Path=windows_path))
        return docs[0]

    def snapshot(self, context, instance, image_id, update_task_state):
        vm = self._get(instance)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        drives = self._drives(instance.uuid)
        if not drives:
            raise HyperVBackendError(reason='Instance %s has no disk to '
                                            'snapshot.' % instance.uuid)
        relative = self._share.relative(drives[0]['Path'])
        if relative is None:
            raise HyperVBackendError(reason='Disk %s is outside %s.'
                                     % (drives[0]['Path'], self._vm_path))
        name = 'xhv-image-%s' % image_id
        # While the checkpoint exists, Hyper-V writes to a differencing
        # disk: the base VHDX read below is consistent.
        self._run('Checkpoint-VM', ps.command('Checkpoint-VM',
                                              Name=instance.uuid,
                                              SnapshotName=name))
        workdir = self._staging_dir('snapshot-%s-' % instance.uuid)
        try:
            local = os.path.join(workdir, 'image.vhdx')
            self._share.download(relative, local)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            metadata = {'disk_format': 'vhdx', 'container_format': 'bare',
                        'properties': {'hypervisor_type': 'hyperv'}}
            if vm.get('Generation') == 2:
                metadata['properties'].update(hw_machine_type='hyperv-gen2',
                                              hw_firmware_type='uefi')
            with open(local, 'rb') as data:
                glance.API().update(context, image_id, metadata, data=data)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self._run('Remove-VMSnapshot', ps.command(
                'Remove-VMSnapshot', VMName=instance.uuid, Name=name))

    # -- disk exchange ----------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        vm = self._get(instance)
        if vm['State'] != VM_OFF:
            raise exception.InstanceInvalidState(
                instance_uuid=instance.uuid, attr='power_state',
                state='not Off', method='export_disks')
        disks = []
        drives = [d for d in self._drives(instance.uuid)
                  if not self._volume_shares.is_volume_path(d['Path'])]
        for n, drive in enumerate(drives):
            relative = self._share.relative(drive['Path'])
            if relative is None:
                raise HyperVBackendError(
                    reason='Disk %s of instance %s is outside %s; XHV '
                           'reads disks over the share only.'
                           % (drive['Path'], instance.uuid, self._vm_path))
            vhd = self._vhd(drive['Path'])
            fmt = VHD_FORMATS.get(vhd['VhdFormat'])
            if fmt is None:
                raise HyperVBackendError(reason='Disk %s has VhdFormat %s.'
                                         % (drive['Path'],
                                            vhd['VhdFormat']))
            disks.append(DiskDescriptor(
                format=fmt, subformat=VHD_TYPES.get(vhd['VhdType']),
                virtual_size=int(vhd['Size']), url=self._share.url(relative),
                bus=CONTROLLER_NAMES[drive['ControllerType']],
                boot_index=0 if n == 0 else None, handle=relative))
        return disks

    def open_exported_disk(self, disk):
        return self._share.reader(disk.handle)

    def check_stageable(self, context, instance, disks):
        if not disks or disks[0].boot_index != 0:
            raise HyperVBackendError(reason='A Hyper-V guest needs its boot '
                                            'disk (boot_index 0) first.')

    def _staged_folder(self, instance):
        return STAGED_PREFIX + instance.uuid

    def stage_disks(self, context, instance, disks):
        for disk in disks:
            if disk.format != FAMILY.native_format or not disk.path:
                raise HyperVBackendError(
                    reason='Disk %s of instance %s is %s; Hyper-V stages '
                           'local %s files.' % (disk.path or disk.url,
                                                instance.uuid, disk.format,
                                                FAMILY.native_format))
        folder = self._staged_folder(instance)
        if self._share.exists(folder):
            raise HyperVBackendError(reason='Disks of instance %s are '
                                            'already staged.' % instance.uuid)
        self._share.mkdir(folder)
        staged = []
        try:
            for n, disk in enumerate(disks):
                relative = '%s/disk-%d.vhdx' % (folder, n)
                self._share.upload(disk.path, relative)
                staged.append(DiskDescriptor(
                    format=disk.format, subformat=disk.subformat,
                    virtual_size=disk.virtual_size,
                    url=self._share.url(relative), bus=disk.bus,
                    boot_index=disk.boot_index, device_name=disk.device_name,
                    checksum=disk.checksum, handle=relative))
        except Exception:
            self._share.remove_tree(folder)
            raise
        return staged

    def discard_staged_disks(self, context, instance, disks):
        self._share.remove_tree(self._staged_folder(instance))

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        self._check_request(network_info, block_device_info)
        if self._find(instance.uuid) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        folder = self._staged_folder(instance)
        for disk in disks:
            if not (disk.handle or '').startswith(folder + '/') or \
                    not self._share.exists(disk.handle):
                raise HyperVBackendError(
                    reason='Staged disk %s of instance %s is missing.'
                           % (disk.handle, instance.uuid))
        if self._share.exists(instance.uuid):
            raise HyperVBackendError(reason='The folder of instance %s '
                                            'exists on the host already.'
                                     % instance.uuid)
        if disks:
            self._share.rename(folder, instance.uuid)
        elif _boot_volume(block_device_info) is not None:
            self._share.mkdir(instance.uuid)  # volume-backed: no disk
        else:
            raise HyperVBackendError(reason='Instance %s has neither a '
                                            'staged disk nor a boot volume.'
                                     % instance.uuid)

        def unplace():
            # Leave the disks staged, for discard_staged_disks.
            if disks:
                self._share.rename(instance.uuid, folder)
            else:
                self._share.remove_tree(instance.uuid)
        placed = [('%s/%s' % (instance.uuid, d.handle.split('/', 1)[1]),
                   d.bus) for d in disks]
        mapped = driver.block_device_info_get_mapping(block_device_info)
        try:
            self._create_vm(instance, placed, network_info,
                            self._generation_for(image_meta, hardware),
                            self._nic_class(image_meta, hardware),
                            power_on and not mapped)
        except Exception:
            unplace()
            raise
        if mapped:
            try:
                self._attach_mapped(context, instance, block_device_info,
                                    power_on)
            except Exception:
                unplace()
                raise

    def _attach_mapped(self, context, instance, block_device_info,
                       power_on):
        """Attach the volumes (boot volume first) to the new, off VM.

        Powered on only once they are attached.  On failure the VM is
        removed, every volume file as it was; the VM's folder stays.
        """
        mapped = sorted(
            driver.block_device_info_get_mapping(block_device_info),
            key=lambda bdm: bdm.get('boot_index') != 0)
        try:
            for bdm in mapped:
                self._attach(instance, bdm['connection_info'],
                             boot=bdm.get('boot_index') == 0)
            if power_on:
                self._run('Start-VM', ps.command('Start-VM',
                                                 Name=instance.uuid))
        except Exception:
            for bdm in mapped:
                self.detach_volume(context, bdm['connection_info'],
                                   instance, bdm.get('mount_device'))
            self._remove_vm(instance.uuid)
            raise

    # -- volumes (volumes.py) -------------------------------------------

    def get_volume_connector(self, instance):
        # The host the volume's file is opened from is the Hyper-V host;
        # no 'instance' key (nothing of os-brick runs for it).
        return {'ip': CONF.my_ip, 'host': CONF.host, 'initiator': None,
                'platform': 'x86_64', 'os_type': 'windows',
                'multipath': False}

    def check_volume_attachable(self, connection_info):
        self._volume_shares.check(connection_info)

    def _volume_drives(self, uuid, link):
        return [d for d in self._drives(uuid)
                if d['Path'].lower() == link.lower()]

    def attach_volume(self, context, connection_info, instance, mountpoint,
                      disk_bus=None, device_type=None, encryption=None):
        if encryption:
            raise HyperVBackendError(reason='The XHV hyperv backend does '
                                            'not attach encrypted volumes.')
        # The root device of a server booted from a volume (given back
        # after a failed or reverted move) goes where the VM boots from.
        root = (instance.obj_attr_is_set('root_device_name') and
                instance.root_device_name)
        self._attach(instance, connection_info,
                     boot=bool(mountpoint) and mountpoint == root)

    def _attach(self, instance, connection_info, boot=False):
        vm = self._get(instance)
        _, link = self._volume_shares.unc_of(connection_info)
        drives = self._drives(instance.uuid)
        if any(d['Path'].lower() == link.lower() for d in drives):
            LOG.info('Volume %s is already attached to %s', link,
                     instance.uuid)
            return
        # Generation 1 boots from IDE 0:0, generation 2 from SCSI 0:0.
        ide = boot and vm.get('Generation') != 2
        used = {d['ControllerLocation'] for d in drives
                if d['ControllerType'] == (0 if ide else 1)
                and d['ControllerNumber'] == 0}
        free = [n for n in range(2 if ide else 64) if n not in used]
        if not free or (boot and free[0] != 0):
            raise HyperVBackendError(
                reason='No free %s on the VM of %s.' % (
                    'boot location (%s 0:0)' % ('IDE' if ide else 'SCSI')
                    if boot else 'SCSI location', instance.uuid))
        controller = 'IDE' if ide else 'SCSI'
        self._volume_shares.prepare(connection_info)
        try:
            self._run('Add-VMHardDiskDrive', ps.command(
                'Add-VMHardDiskDrive', VMName=instance.uuid, Path=link,
                ControllerType=controller, ControllerNumber=0,
                ControllerLocation=free[0]))
        except Exception:
            if not self._in_use(link):
                self._volume_shares.restore(connection_info)
            raise
        LOG.info('Attached volume %s to %s at %s 0:%d%s', link,
                 instance.uuid, controller, free[0],
                 ' (boot disk)' if boot else '')

    def _in_use(self, link):
        for vm in self._vms():
            if self._volume_drives(vm['Name'], link):
                return True
        return False

    def detach_volume(self, context, connection_info, instance, mountpoint,
                      encryption=None):
        _, link = self._volume_shares.unc_of(connection_info)
        if self._find(instance.uuid) is not None:
            for drive in self._volume_drives(instance.uuid, link):
                self._run('Remove-VMHardDiskDrive', ps.command(
                    'Remove-VMHardDiskDrive', VMName=instance.uuid,
                    ControllerType=CONTROLLER_NAMES[drive['ControllerType']],
                    ControllerNumber=drive['ControllerNumber'],
                    ControllerLocation=drive['ControllerLocation']))
        else:
            LOG.info('Instance %s has no VM on the host; volume %s already '
                     'detached', instance.uuid, link)
        if not self._in_use(link):  # another VM's (multiattach) keeps it
            self._volume_shares.restore(connection_info)

    def extend_volume(self, context, connection_info, instance,
                      requested_size):
        raise HyperVBackendError(reason='The XHV hyperv backend does not '
                                        'extend an attached volume (detach '
                                        'it, extend, attach again).')
