"""Cinder volumes on vSphere without conversion.

A raw volume file on an NFS share (Cinder's NFS driver, wrapped by XHV)
is attached as it is: the ESXi host running the VM mounts the share as a
NAS datastore (``HostDatastoreSystem.CreateNasDatastore``, once per host
and share; a datastore already mounted from the same export is reused,
whatever its name), XHV writes a small VMDK descriptor next to the volume
file whose one flat extent *is* the volume file, and the VM gets a
virtual disk backed by that descriptor (``independent_persistent``: VM
snapshots neither freeze nor copy it).  Guest writes land in the volume
file, byte for byte what KVM sees through its own NFS attach, so a volume
moves between families by re-attaching, never by copying.

Detach removes the device (never with a file operation: vSphere would
delete the extent, i.e. the volume) and then the descriptor.  Why not a
conversion to a VMDK: every attach would copy the whole volume and the
copy would have to be written back at detach; why not Cinder's VMDK
driver: its volumes are VMDKs of shadow VMs that KVM cannot attach.
"""

import hashlib

from nova import exception
from oslo_log import log as logging
from pyVmomi import vim

from nova_xhv.backends import nfs_volume
from nova_xhv.backends.vmware import datastore
from nova_xhv.backends.vmware import errors
from nova_xhv.backends.vmware import inventory
from nova_xhv.backends.vmware import vm as vmops

LOG = logging.getLogger(__name__)

SECTOR = 512
DESCRIPTOR_SUFFIX = '.xhv.vmdk'
DATASTORE_PREFIX = inventory.VOLUME_DATASTORE_PREFIX
# Unit 7 of a SCSI controller is the controller itself.
SCSI_UNITS = [u for u in range(16) if u != 7]
DISK_MODE = 'independent_persistent'


class VolumeRequestError(exception.Invalid):
    msg_fmt = 'The XHV vmware backend cannot attach this volume: %(reason)s'


def descriptor_text(extent_name, size, adapter='lsilogic'):
    """A VMDK descriptor whose one flat extent is the file ``extent_name``.

    ``createType="vmfs"`` with a ``VMFS`` extent is what ESXi itself
    writes for a flat disk on any datastore (NFS included); qemu reads it
    too (as a flat extent), which the tests use as an independent check.
    """
    if size <= 0 or size % SECTOR:
        raise VolumeRequestError(
            reason='volume file %s is %d bytes, not a whole number of '
                   '512-byte sectors' % (extent_name, size))
    if '"' in extent_name or '/' in extent_name or '\n' in extent_name:
        raise VolumeRequestError(reason='unusable volume file name %r'
                                        % extent_name)
    sectors = size // SECTOR
    cylinders = max(1, min(65535, sectors // (255 * 63)))
    return ('# Disk DescriptorFile\n'
            'version=1\n'
            'encoding="UTF-8"\n'
            'CID=fffffffe\n'
            'parentCID=ffffffff\n'
            'createType="vmfs"\n\n'
            '# Extent description\n'
            'RW %d VMFS "%s"\n\n'
            '# The Disk Data Base\n'
            '#DDB\n\n'
            'ddb.adapterType = "%s"\n'
            'ddb.geometry.cylinders = "%d"\n'
            'ddb.geometry.heads = "255"\n'
            'ddb.geometry.sectors = "63"\n'
            'ddb.virtualHWVersion = "8"\n'
            % (sectors, extent_name, adapter, cylinders)).encode()


def file_volume(connection_info):
    """(remote host, remote path, volume file name) of an NFS attachment."""
    return nfs_volume.raw_file_volume(
        connection_info, 'vSphere', VolumeRequestError,
        lambda name: '/' not in name and not name.startswith('.'))


def is_volume_disk(device):
    """Whether a VirtualDisk is a volume attached by XHV (not the VM's)."""
    name = getattr(getattr(device, 'backing', None), 'fileName', '') or ''
    return name.endswith(DESCRIPTOR_SUFFIX)


def datastore_name_for(remote_host, remote_path):
    digest = hashlib.sha256(('%s:%s' % (remote_host, remote_path))
                            .encode()).hexdigest()[:12]
    return DATASTORE_PREFIX + digest


class VolumeAttacher:
    """Attach and detach NFS file volumes of one vSphere compute."""

    def __init__(self, session, compute, files):
        self.session = session
        self.compute = compute
        self.files = files

    # -- the share as a datastore ----------------------------------------

    def _host_of(self, vm, instance):
        return vmops.props(self.session, vm, 'runtime.host',
                           instance=instance)['runtime.host']

    def mounted_datastore(self, host, remote_host, remote_path):
        """The name under which ``host`` mounts the export, or None."""
        for ds in host.datastore:
            info = ds.info
            nas = getattr(info, 'nas', None)
            if nas is None:
                continue
            if (nas.remoteHost == remote_host and
                    (nas.remotePath or '').rstrip('/') == remote_path):
                return ds.name
        return None

    def mount(self, host, remote_host, remote_path):
        """Mount the export on ``host`` as a NAS datastore; its name."""
        found = self.mounted_datastore(host, remote_host, remote_path)
        if found:
            return found
        name = datastore_name_for(remote_host, remote_path)
        spec = vim.host.NasVolume.Specification(
            remoteHost=remote_host, remotePath=remote_path, localPath=name,
            accessMode='readWrite', type='NFS')
        system = host.configManager.datastoreSystem
        try:
            self.session.run('CreateNasDatastore',
                             system.CreateNasDatastore, spec)
        except errors.VSphereError as exc:
            # Another compute's attach may have mounted it meanwhile.
            if not (errors.is_fault(exc, 'DuplicateName') or
                    errors.is_fault(exc, 'AlreadyExists')):
                raise
        found = self.mounted_datastore(host, remote_host, remote_path)
        if not found:
            raise VolumeRequestError(
                reason='host %s did not mount %s:%s as a datastore'
                       % (host.name, remote_host, remote_path))
        LOG.info('Host %s mounted NFS export %s:%s as datastore %s',
                 host.name, remote_host, remote_path, found)
        return found

    # -- devices -----------------------------------------------------------

    @staticmethod
    def descriptor_path(ds_name, name):
        return '[%s] %s%s' % (ds_name, name, DESCRIPTOR_SUFFIX)

    def volume_devices(self, vm, instance, ds_path=None):
        """[VirtualDisk] backed by XHV descriptors (or by ``ds_path``)."""
        found = []
        for disk, _ in vmops.disks(self.session, vm, instance):
            file_name = getattr(disk.backing, 'fileName', '') or ''
            if ds_path is not None:
                if file_name == ds_path:
                    found.append(disk)
            elif is_volume_disk(disk):
                found.append(disk)
        return found

    def _free_slot(self, vm, instance, changes):
        devices = vmops.props(self.session, vm, 'config.hardware.device',
                              instance=instance)['config.hardware.device']
        used = {}
        for device in devices:
            if device.controllerKey is not None:
                used.setdefault(device.controllerKey, set()).add(
                    device.unitNumber)
        scsi = [d for d in devices
                if isinstance(d, vim.vm.device.VirtualSCSIController)]
        for ctrl in sorted(scsi, key=lambda c: c.busNumber):
            for unit in SCSI_UNITS:
                if unit not in used.get(ctrl.key, ()):
                    return ctrl.key, unit
        buses = {c.busNumber for c in scsi}
        free_bus = [b for b in range(4) if b not in buses]
        if not free_bus:
            raise VolumeRequestError(reason='no free SCSI unit on the VM')
        # A VM without SCSI (IDE/SATA boot disk): volumes get their own
        # paravirtual controller; vSphere hot-adds disks on SCSI only.
        ctrl = vim.vm.device.ParaVirtualSCSIController(
            key=-200, busNumber=free_bus[0],
            sharedBus=vim.vm.device.VirtualSCSIController.Sharing.noSharing)
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=ctrl))
        return ctrl.key, 0

    def attach(self, instance, vm, connection_info):
        remote_host, remote_path, name = file_volume(connection_info)
        host = self._host_of(vm, instance)
        ds_name = self.mount(host, remote_host, remote_path)
        ds_path = self.descriptor_path(ds_name, name)
        if self.volume_devices(vm, instance, ds_path):
            LOG.info('Volume file %s is already attached to %s', name,
                     instance.uuid)
            return ds_path
        size = self.files.size(ds_name, name)
        if size is None:
            raise VolumeRequestError(
                reason='the volume file %s is not on datastore %s (%s:%s)'
                       % (name, ds_name, remote_host, remote_path))
        _, desc = datastore.split_path(ds_path)
        self.files.write(descriptor_text(name, size), ds_name, desc)
        changes = []
        ctrl_key, unit = self._free_slot(vm, instance, changes)
        disk = vim.vm.device.VirtualDisk(
            key=-101, controllerKey=ctrl_key, unitNumber=unit,
            capacityInKB=size // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=ds_path, diskMode=DISK_MODE))
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=disk))
        try:
            vmops.reconfigure(self.session, vm,
                              vim.vm.ConfigSpec(deviceChange=changes),
                              instance)
        except Exception:
            self._drop_descriptor(ds_name, desc)
            raise
        LOG.info('Attached volume file %s (%d bytes, datastore %s) to %s',
                 name, size, ds_name, instance.uuid)
        return ds_path

    def detach(self, instance, vm, connection_info):
        remote_host, remote_path, name = file_volume(connection_info)
        host = self._host_of(vm, instance)
        ds_name = self.mounted_datastore(host, remote_host, remote_path)
        if ds_name is None:
            LOG.info('Volume file %s: export %s:%s not mounted on %s, so '
                     'not attached to %s', name, remote_host, remote_path,
                     host.name, instance.uuid)
            return
        ds_path = self.descriptor_path(ds_name, name)
        self.remove_devices(instance, vm,
                            self.volume_devices(vm, instance, ds_path))

    def remove_devices(self, instance, vm, devices):
        """Detach volume disks (no file deleted) and their descriptors."""
        if not devices:
            return
        changes = [vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.remove,
            device=d) for d in devices]
        vmops.reconfigure(self.session, vm,
                          vim.vm.ConfigSpec(deviceChange=changes), instance)
        for device in devices:
            ds_name, desc = datastore.split_path(device.backing.fileName)
            self._drop_descriptor(ds_name, desc)
        LOG.info('Detached %d volume disk(s) from %s', len(devices),
                 instance.uuid)

    def _drop_descriptor(self, ds_name, desc):
        if not desc.endswith(DESCRIPTOR_SUFFIX):
            return  # never anything but our own descriptors
        try:
            vmops.delete_datastore_path(self.session, self.compute,
                                        '[%s] %s' % (ds_name, desc))
        except errors.VSphereError as exc:
            LOG.warning('Could not delete descriptor [%s] %s: %s', ds_name,
                        desc, exc)
