"""Virtual machine lifecycle: config specs, lookup, power, destroy,
snapshots.  Every call goes through the session (retries, faults named,
tasks waited on with a timeout)."""

import time

from nova.compute import power_state
from nova import exception
from oslo_log import log as logging
from pyVmomi import vim

from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import inventory

LOG = logging.getLogger(__name__)

# The annotation's first line tells XHV's VMs apart from everything else in
# the cluster; staged VMs (disks imported for a move, not yet an instance)
# carry their own marker so they are never listed as instances.
INSTANCE_MARKER = 'nova-xhv-instance:'
STAGED_MARKER = 'nova-xhv-staged:'

POWER_STATES = {
    'poweredOn': power_state.RUNNING,
    'poweredOff': power_state.SHUTDOWN,
    'suspended': power_state.SUSPENDED,
}

# vSphere controller classes by vmware_adaptertype / hw_scsi_model value.
SCSI_CONTROLLERS = {
    'lsiLogic': vim.vm.device.VirtualLsiLogicController,
    'lsiLogicsas': vim.vm.device.VirtualLsiLogicSASController,
    'busLogic': vim.vm.device.VirtualBusLogicController,
    'paraVirtual': vim.vm.device.ParaVirtualSCSIController,
}
ADAPTER_TYPES = tuple(SCSI_CONTROLLERS) + ('ide', 'sata')
# Nova's hw_scsi_model names for the same controllers.
SCSI_MODEL_ALIASES = {'lsilogic': 'lsiLogic', 'lsisas1068': 'lsiLogicsas',
                      'buslogic': 'busLogic', 'vmpvscsi': 'paraVirtual'}
CONTROLLER_KEY = 1000
IDE_CONTROLLER_KEY = 200  # vSphere creates the IDE controllers 200 and 201
# vSphere's VirtualMachineConfigSpec.firmware by Nova's hw_firmware_type.
FIRMWARE_TYPES = {'bios': 'bios', 'uefi': 'efi'}


def annotation(marker, instance):
    return ('%s %s\nOpenStack Nova instance %r, created by XHV\'s vmware '
            'backend. Managed by Nova: do not rename, move or delete.'
            % (marker, instance.uuid, instance.display_name or ''))


def is_instance(annotation_text):
    return (annotation_text or '').startswith(INSTANCE_MARKER)


def adapter_type(image_meta, default):
    """The disk controller from the image, else the configured default."""
    props = image_meta.properties if image_meta is not None else None
    bus = props.get('hw_disk_bus') if props is not None else None
    model = props.get('hw_scsi_model') if props is not None else None
    if bus == 'ide':
        return 'ide'
    if bus == 'sata':
        return 'sata'
    if model:
        name = SCSI_MODEL_ALIASES.get(model, model)
        if name in SCSI_CONTROLLERS:
            return name
        LOG.warning('SCSI model %r has no vSphere controller; using %s',
                    model, default)
    elif bus and bus not in ('scsi',):
        # virtio, usb, ... do not exist on vSphere.
        LOG.info('Disk bus %r does not exist on vSphere; using %s', bus,
                 default)
    return default


def firmware(image_meta):
    """vSphere firmware (``bios``/``efi``) for the image's hw_firmware_type.

    A UEFI guest does not boot from BIOS, so an unknown value is refused
    rather than guessed.
    """
    props = image_meta.properties if image_meta is not None else None
    wanted = (props.get('hw_firmware_type')
              if props is not None and 'hw_firmware_type' in props
              else None) or 'bios'
    if wanted not in FIRMWARE_TYPES:
        raise exception.ImageUnacceptable(
            image_id=getattr(image_meta, 'id', None),
            reason='hw_firmware_type=%r has no vSphere firmware; use one of '
                   '%s' % (wanted, ', '.join(FIRMWARE_TYPES)))
    return FIRMWARE_TYPES[wanted]


def _controller(adapter):
    if adapter == 'ide':
        return None, IDE_CONTROLLER_KEY
    if adapter == 'sata':
        ctrl = vim.vm.device.VirtualAHCIController(key=CONTROLLER_KEY,
                                                   busNumber=0)
    else:
        ctrl = SCSI_CONTROLLERS[adapter](
            key=CONTROLLER_KEY, busNumber=0,
            sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing)
    spec = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=ctrl)
    return spec, CONTROLLER_KEY


def _disk_slot(adapter, ctrl_key, index):
    """(controller key, unit number) of the index-th disk."""
    if adapter == 'ide':
        # Two IDE controllers with two units each.
        if index >= 4:
            msg = 'IDE takes at most 4 disks'
            raise ValueError(msg)
        return ctrl_key + index // 2, index % 2
    if adapter == 'sata':
        return ctrl_key, index
    if index >= 15:
        msg = 'one SCSI controller takes at most 15 disks'
        raise ValueError(msg)
    # Unit 7 is the SCSI controller itself.
    return ctrl_key, index if index < 7 else index + 1


def config_spec(name, instance, datastore_name, vm_dir, disks, adapter,
                marker=INSTANCE_MARKER, create_disks=False,
                firmware='bios'):
    """A ConfigSpec for CreateVM/ImportVApp.

    :param disks: list of (file name inside vm_dir, virtual size in bytes)
    :param create_disks: True for ImportVApp (vSphere writes the disks from
        the upload); False to attach files already on the datastore.
    :param firmware: vSphere firmware, ``bios`` or ``efi``.
    """
    flavor = instance.flavor
    changes = []
    ctrl_spec, ctrl_key = _controller(adapter)
    if ctrl_spec is not None:
        changes.append(ctrl_spec)
    for index, (filename, size) in enumerate(disks):
        key, unit = _disk_slot(adapter, ctrl_key, index)
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName='[%s] %s/%s' % (datastore_name, vm_dir, filename),
            diskMode='persistent', thinProvisioned=True)
        disk = vim.vm.device.VirtualDisk(
            key=-100 - index, controllerKey=key, unitNumber=unit,
            capacityInKB=max(1, (size + 1023) // 1024), backing=backing)
        change = vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=disk)
        if create_disks:
            change.fileOperation = (
                vim.vm.device.VirtualDeviceSpec.FileOperation.create)
        changes.append(change)
    return vim.vm.ConfigSpec(
        name=name, instanceUuid=instance.uuid, numCPUs=flavor.vcpus,
        memoryMB=flavor.memory_mb, guestId='otherGuest64', firmware=firmware,
        annotation=annotation(marker, instance),
        files=vim.vm.FileInfo(vmPathName='[%s] %s/' % (datastore_name,
                                                       vm_dir)),
        deviceChange=changes,
        extraConfig=[vim.option.OptionValue(key='nvp.vm-uuid',
                                            value=instance.uuid)])


def find(session, compute, instance):
    """The VM whose instanceUuid is the Nova instance uuid, or None."""
    index = session.content.searchIndex
    return session.run('FindByUuid', index.FindByUuid, compute.datacenter,
                       instance.uuid, True, True)


def get(session, compute, instance):
    vm = find(session, compute, instance)
    if vm is None:
        raise exception.InstanceNotFound(instance_id=instance.uuid)
    return vm


def props(session, vm, *paths, instance=None):
    """A few properties of one VM in one call."""
    try:
        found = inventory.retrieve(session, 'read VM', vm, [],
                                   {vim.VirtualMachine: list(paths)})
    except errors.VSphereError as exc:
        if not errors.is_fault(exc, 'ManagedObjectNotFound'):
            raise
        found = None
    if not found:
        raise exception.InstanceNotFound(
            instance_id=getattr(instance, 'uuid', vm._moId))
    return found[0][1]


def power_state_of(session, vm, instance=None):
    return props(session, vm, 'runtime.powerState',
                 instance=instance)['runtime.powerState']


def power_on(session, vm, instance):
    if power_state_of(session, vm, instance) == 'poweredOn':
        return
    session.run_task('PowerOnVM_Task', vm.PowerOnVM_Task, instance=instance)


def power_off(session, vm, instance, timeout=0, retry_interval=1):
    """Ask the guest to shut down, then power off hard after ``timeout``."""
    if power_state_of(session, vm, instance) == 'poweredOff':
        return
    if timeout:
        try:
            session.run('ShutdownGuest', vm.ShutdownGuest, instance=instance)
        except Exception as exc:  # no tools, or state changed meanwhile
            LOG.info('Clean shutdown of %s not possible (%s); powering '
                     'off', instance.uuid, exc)
        else:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if power_state_of(session, vm, instance) == 'poweredOff':
                    return
                time.sleep(min(retry_interval,
                               max(0, deadline - time.monotonic())))
            LOG.info('Guest %s did not shut down within %s s; powering off',
                     instance.uuid, timeout)
    if power_state_of(session, vm, instance) != 'poweredOff':
        session.run_task('PowerOffVM_Task', vm.PowerOffVM_Task,
                         instance=instance)


def reboot(session, vm, instance, hard):
    if power_state_of(session, vm, instance) != 'poweredOn':
        session.run_task('PowerOnVM_Task', vm.PowerOnVM_Task,
                         instance=instance)
        return
    if not hard:
        try:
            session.run('RebootGuest', vm.RebootGuest, instance=instance)
            return
        except Exception as exc:
            LOG.info('Soft reboot of %s not possible (%s); resetting',
                     instance.uuid, exc)
    session.run_task('ResetVM_Task', vm.ResetVM_Task, instance=instance)


def disks(session, vm, instance=None):
    """[(VirtualDisk, controller)], boot disk first.

    Ordered by controller key then unit number (the BIOS boot order), not
    by position in the device list, which edits reorder.
    """
    devices = props(session, vm, 'config.hardware.device',
                    instance=instance)['config.hardware.device']
    by_key = {d.key: d for d in devices}
    found = [(d, by_key.get(d.controllerKey)) for d in devices
             if isinstance(d, vim.vm.device.VirtualDisk)]
    return sorted(found, key=lambda pair: (pair[0].controllerKey or 0,
                                           pair[0].unitNumber or 0))


def controller_name(controller):
    """vmware_adaptertype-style name of a controller device."""
    if isinstance(controller, vim.vm.device.VirtualIDEController):
        return 'ide'
    if isinstance(controller, vim.vm.device.VirtualAHCIController):
        return 'sata'
    for name, cls in SCSI_CONTROLLERS.items():
        if isinstance(controller, cls):
            return name
    return None


def grow_root_disk(session, vm, instance):
    """Grow the first disk to the flavor's root_gb (never shrink it)."""
    wanted_kb = (instance.flavor.root_gb or 0) * 1024 * 1024
    found = disks(session, vm, instance)
    if not found or found[0][0].capacityInKB >= wanted_kb:
        return False
    root = found[0][0]
    root.capacityInKB = wanted_kb
    root.capacityInBytes = wanted_kb * 1024
    change = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.edit,
        device=root)
    reconfigure(session, vm, vim.vm.ConfigSpec(deviceChange=[change]),
                instance)
    return True


def reconfigure(session, vm, spec, instance):
    session.run_task('ReconfigVM_Task', vm.ReconfigVM_Task, spec=spec,
                     instance=instance)


def destroy(session, compute, vm, instance):
    """Power off, destroy the VM and delete its folder on the datastore."""
    info = props(session, vm, 'runtime.powerState', 'config.files',
                 instance=instance)
    if info['runtime.powerState'] != 'poweredOff':
        session.run_task('PowerOffVM_Task', vm.PowerOffVM_Task,
                         instance=instance)
    session.run_task('Destroy_Task', vm.Destroy_Task, instance=instance)
    files = info.get('config.files')
    vm_dir = files.vmPathName if files else None
    if vm_dir:
        if not vm_dir.endswith('/'):
            vm_dir = vm_dir.rsplit('/', 1)[0]
        delete_datastore_path(session, compute, vm_dir.rstrip('/'))


def delete_datastore_path(session, compute, ds_path):
    """Delete a datastore file or folder; a missing one is fine."""
    manager = session.content.fileManager
    try:
        session.run_task('DeleteDatastoreFile_Task',
                         manager.DeleteDatastoreFile_Task, name=ds_path,
                         datacenter=compute.datacenter)
    except errors.VSphereError as exc:
        if not errors.is_fault(exc, 'FileNotFound'):
            raise
        LOG.debug('%s already gone', ds_path)


def create_snapshot(session, vm, instance, name):
    return session.run_task(
        'CreateSnapshot_Task', vm.CreateSnapshot_Task, name=name,
        description='XHV image snapshot of %s' % instance.uuid,
        memory=False, quiesce=False, instance=instance)


def remove_snapshot(session, snapshot, instance):
    session.run_task('RemoveSnapshot_Task', snapshot.RemoveSnapshot_Task,
                     removeChildren=False, consolidate=True,
                     instance=instance)
