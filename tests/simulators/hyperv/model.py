"""A stateful Hyper-V host: VMs, switches, VHDX files, and its cmdlets.

The cmdlets take exactly the parameters listed here (PowerShell's own
names; anything else fails loudly) and emit what Windows PowerShell 5.1
emits through ``Select-Object | ConvertTo-Json``: enums as integers,
sizes in bytes.  The host's VM storage path (``C:\\XHV\\Hyper-V`` by
default) is a local folder, the one Samba shares, so the files a backend
writes over SMB are the files these cmdlets see.  UNC paths
(``\\\\server\\share\\...``) reach the other shares the host was given
(``unc_shares``: the share a filer shows an NFS export as), as a real host
opens a VHD on an SMB 3 share.

Disks are checked as Hyper-V checks them: the extension must be ``.vhd``
or ``.vhdx`` and the file that format (a fixed VHD is its data and a
512-byte footer at the end; qemu's ``vpc`` driver reads both kinds).

State lives in ``state.json`` in the simulator's folder, rewritten after
every command, so tests can read the host as the backend left it.
``faults.json`` there (a list of ``{"cmdlet": name, "message": text,
"times": n}``) makes the next n calls of that cmdlet fail.
"""

import json
import os
import re
import shutil
import subprocess
import threading
import uuid

from tests.simulators.hyperv import powershell as ps
from tests.simulators.hyperv.powershell import CommandError
from tests.simulators.hyperv.powershell import Record

# Microsoft.HyperV.PowerShell enums, as ConvertTo-Json writes them.
VM_RUNNING, VM_OFF = 2, 3
CONTROLLER_IDE, CONTROLLER_SCSI = 0, 1
CONTROLLER_TYPES = {'ide': CONTROLLER_IDE, 'scsi': CONTROLLER_SCSI}
VHD_FORMATS = {'vhdx': 3, 'vpc': 2}
VHD_DYNAMIC = 3
SWITCH_EXTERNAL = 2
VLAN_UNTAGGED, VLAN_ACCESS = 0, 1
MAC = re.compile(r'^[0-9A-Fa-f]{12}$')


def _not_found(kind, name, cmdlet):
    return CommandError(
        'Hyper-V was unable to find a %s with name "%s".' % (kind, name),
        'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.%s'
        % cmdlet.replace('-', ''), 'InvalidArgument')


class HyperVHost(object):
    """One simulated host (see module doc)."""

    def __init__(self, folder, storage_dir, storage_path='C:\\XHV\\Hyper-V',
                 switches=('xhv-external',), cpus=16,
                 memory=64 * 1024 ** 3, computer_name='XHV-HV01',
                 unc_shares=None):
        self.folder = folder
        self.unc_shares = {k.rstrip('\\').lower(): v
                           for k, v in (unc_shares or {}).items()}
        self.storage_dir = storage_dir
        self.storage_path = storage_path.rstrip('\\')
        self.lock = threading.RLock()
        self.state_path = os.path.join(folder, 'state.json')
        self.faults_path = os.path.join(folder, 'faults.json')
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)
        else:
            self.state = {
                'host': {'ComputerName': computer_name,
                         'LogicalProcessorCount': cpus,
                         'MemoryCapacity': memory,
                         'VirtualMachinePath': self.storage_path,
                         'VirtualHardDiskPath': self.storage_path},
                'switches': [{'Name': s, 'SwitchType': SWITCH_EXTERNAL}
                             for s in switches],
                'vms': []}
            self.save()
        self.runspace = ps.Runspace(self._cmdlets())

    def save(self):
        tmp = self.state_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_path)

    def run(self, script):
        with self.lock:
            try:
                return self.runspace.run(script)
            finally:
                self.save()

    # -- helpers -----------------------------------------------------------

    def _fault(self, cmdlet):
        try:
            with open(self.faults_path) as f:
                faults = json.load(f)
        except FileNotFoundError:
            return
        for fault in faults:
            if fault['cmdlet'].lower() == cmdlet.lower() and \
                    fault.get('times', 1) > 0:
                fault['times'] = fault.get('times', 1) - 1
                with open(self.faults_path, 'w') as f:
                    json.dump(faults, f)
                raise CommandError(fault['message'], 'InjectedFault',
                                   'OperationStopped')

    def local_path(self, path, cmdlet):
        """The local file behind a Windows path on the storage volume."""
        for unc, folder in self.unc_shares.items():
            if path.lower().startswith(unc + '\\'):
                parts = path[len(unc) + 1:].split('\\')
                if any(p in ('', '.', '..') or '/' in p for p in parts):
                    raise CommandError("Illegal characters in path '%s'."
                                       % path, 'InvalidArgument',
                                       'InvalidArgument')
                return os.path.join(folder, *parts)
        root = self.storage_path.lower() + '\\'
        if not path.lower().startswith(root):
            raise CommandError(
                "Cannot find path '%s' because it does not exist (only %s "
                "is modelled)." % (path, self.storage_path),
                'PathNotFound', 'ObjectNotFound')
        parts = path[len(root):].split('\\')
        if any(p in ('', '.', '..') for p in parts) or any(
                '/' in p or '\0' in p for p in parts):
            raise CommandError("Illegal characters in path '%s'." % path,
                               'InvalidPath', 'InvalidArgument')
        return os.path.join(self.storage_dir, *parts)

    def _vms(self, name, cmdlet):
        found = [vm for vm in self.state['vms']
                 if ps.wildcard_match(name, vm['Name'])]
        if not found:
            raise _not_found('virtual machine', name, cmdlet)
        return found

    def _switch(self, name, cmdlet):
        for switch in self.state['switches']:
            if switch['Name'].lower() == name.lower():
                return switch
        raise _not_found('virtual switch', name, cmdlet)

    @staticmethod
    def _vm_record(vm):
        record = Record(Name=vm['Name'], Id=vm['Id'], State=vm['State'],
                        Notes=vm['Notes'], Generation=vm['Generation'],
                        ProcessorCount=vm['ProcessorCount'],
                        MemoryStartup=vm['MemoryStartup'], Path=vm['Path'],
                        Uptime=None)
        return record

    # -- cmdlets -------------------------------------------------------------

    def _cmdlets(self):
        table = ps.language_cmdlets()

        def add(name, params, body, takes_input=False):
            def guarded(p, objects, _name=name, _body=body):
                self._fault(_name)
                return _body(p, objects)
            table[name] = ps.Cmdlet(name, params, guarded, takes_input)

        add('Get-VMHost', {}, self.get_vmhost)
        add('Get-VMSwitch', {'Name': 'string'}, self.get_vmswitch)
        add('Get-Volume', {'FilePath': 'string'}, self.get_volume)
        add('Get-VM', {'Name': 'string'}, self.get_vm)
        add('New-VM', {'Name': 'string', 'Generation': 'int',
                       'MemoryStartupBytes': 'int', 'NoVHD': 'switch',
                       'Path': 'string'}, self.new_vm)
        add('Set-VM', {'Name': 'string', 'ProcessorCount': 'int',
                       'Notes': 'string', 'MemoryStartupBytes': 'int',
                       'StaticMemory': 'switch'}, self.set_vm)
        add('Set-VMFirmware', {'VMName': 'string',
                               'EnableSecureBoot': 'string'},
            self.set_vmfirmware)
        add('Add-VMHardDiskDrive', {
            'VMName': 'string', 'Path': 'string', 'ControllerType': 'string',
            'ControllerNumber': 'int', 'ControllerLocation': 'int'},
            self.add_vmharddiskdrive)
        add('Get-VMHardDiskDrive', {'VMName': 'string'},
            self.get_vmharddiskdrive)
        add('Remove-VMHardDiskDrive', {
            'VMName': 'string', 'ControllerType': 'string',
            'ControllerNumber': 'int', 'ControllerLocation': 'int'},
            self.remove_vmharddiskdrive)
        add('Add-VMNetworkAdapter', {
            'VMName': 'string', 'Name': 'string', 'SwitchName': 'string',
            'StaticMacAddress': 'string', 'IsLegacy': 'bool'},
            self.add_vmnetworkadapter)
        add('Set-VMNetworkAdapterVlan', {
            'VMName': 'string', 'VMNetworkAdapterName': 'string',
            'Access': 'switch', 'VlanId': 'int', 'Untagged': 'switch'},
            self.set_vmnetworkadaptervlan)
        add('Get-VMNetworkAdapter', {'VMName': 'string'},
            self.get_vmnetworkadapter)
        add('Start-VM', {'Name': 'string'}, self.start_vm)
        add('Stop-VM', {'Name': 'string', 'Force': 'switch',
                        'TurnOff': 'switch'}, self.stop_vm)
        add('Restart-VM', {'Name': 'string', 'Force': 'switch'},
            self.restart_vm)
        add('Remove-VM', {'Name': 'string', 'Force': 'switch'},
            self.remove_vm)
        add('Get-VHD', {'Path': 'string'}, self.get_vhd)
        add('Checkpoint-VM', {'Name': 'string', 'SnapshotName': 'string'},
            self.checkpoint_vm)
        add('Remove-VMSnapshot', {'VMName': 'string', 'Name': 'string'},
            self.remove_vmsnapshot)
        return table

    @staticmethod
    def _required(params, cmdlet, *names):
        for name in names:
            if name not in params:
                raise CommandError(
                    'Cannot process command because of one or more missing '
                    'mandatory parameters: %s.' % name,
                    'MissingMandatoryParameter', 'InvalidArgument')

    def get_vmhost(self, p, _):
        record = Record(self.state['host'])
        return [record]

    def get_vmswitch(self, p, _):
        if 'Name' in p:
            return [Record(self._switch(p['Name'], 'Get-VMSwitch'))]
        return [Record(s) for s in self.state['switches']]

    def get_volume(self, p, _):
        self._required(p, 'Get-Volume', 'FilePath')
        local = (self.storage_dir if p['FilePath'].rstrip('\\').lower()
                 == self.storage_path.lower()
                 else self.local_path(p['FilePath'], 'Get-Volume'))
        if not os.path.exists(local):
            raise CommandError("Cannot find path '%s' because it does not "
                               "exist." % p['FilePath'], 'PathNotFound',
                               'ObjectNotFound')
        usage = shutil.disk_usage(local)
        return [Record(DriveLetter='C', FileSystem='NTFS', Size=usage.total,
                       SizeRemaining=usage.free)]

    def get_vm(self, p, _):
        vms = (self._vms(p['Name'], 'Get-VM') if 'Name' in p
               else self.state['vms'])
        return [self._vm_record(vm) for vm in vms]

    def new_vm(self, p, _):
        self._required(p, 'New-VM', 'Name', 'MemoryStartupBytes')
        generation = p.get('Generation', 1)
        if generation not in (1, 2):
            raise CommandError('Cannot validate argument on parameter '
                               "'Generation'. The argument \"%d\" does not "
                               'belong to the set "1,2".' % generation,
                               'ParameterArgumentValidationError',
                               'InvalidData')
        memory = p['MemoryStartupBytes']
        if memory < 32 * 1024 ** 2 or memory % (2 * 1024 ** 2):
            raise CommandError('Invalid startup memory amount: %d bytes '
                               '(at least 32 MB, a multiple of 2 MB).'
                               % memory, 'InvalidParameter',
                               'InvalidArgument')
        if 'NoVHD' not in p:
            raise CommandError('New-VM without -NoVHD (a new blank VHD) is '
                               'not modelled', 'NotModelled')
        path = p.get('Path', self.storage_path)
        self.local_path(path + '\\x', 'New-VM')
        vm = {'Id': str(uuid.uuid4()), 'Name': p['Name'], 'State': VM_OFF,
              'Notes': '', 'Generation': generation, 'ProcessorCount': 1,
              'MemoryStartup': memory, 'Path': path, 'HardDrives': [],
              'NetworkAdapters': [], 'SecureBoot': generation == 2,
              'Checkpoints': [], 'Starts': 0, 'GuestShutdown': False}
        self.state['vms'].append(vm)
        return [self._vm_record(vm)]

    def set_vm(self, p, _):
        self._required(p, 'Set-VM', 'Name')
        for vm in self._vms(p['Name'], 'Set-VM'):
            if 'ProcessorCount' in p:
                if vm['State'] != VM_OFF:
                    raise CommandError('The processor count cannot be '
                                       'changed while the VM is running.',
                                       'InvalidState', 'InvalidOperation')
                if not 1 <= p['ProcessorCount'] <= \
                        self.state['host']['LogicalProcessorCount']:
                    raise CommandError('Invalid processor count %d.'
                                       % p['ProcessorCount'],
                                       'InvalidParameter', 'InvalidArgument')
                vm['ProcessorCount'] = p['ProcessorCount']
            if 'MemoryStartupBytes' in p:
                vm['MemoryStartup'] = p['MemoryStartupBytes']
            if 'Notes' in p:
                vm['Notes'] = p['Notes']
        return []

    def set_vmfirmware(self, p, _):
        self._required(p, 'Set-VMFirmware', 'VMName')
        for vm in self._vms(p['VMName'], 'Set-VMFirmware'):
            if vm['Generation'] != 2:
                raise CommandError('Set-VMFirmware applies to generation 2 '
                                   'virtual machines only.',
                                   'InvalidParameter', 'InvalidArgument')
            if 'EnableSecureBoot' in p:
                if p['EnableSecureBoot'].lower() not in ('on', 'off'):
                    raise CommandError('EnableSecureBoot is On or Off',
                                       'InvalidParameter', 'InvalidArgument')
                vm['SecureBoot'] = p['EnableSecureBoot'].lower() == 'on'
        return []

    def add_vmharddiskdrive(self, p, _):
        self._required(p, 'Add-VMHardDiskDrive', 'VMName', 'Path',
                       'ControllerType')
        kind = CONTROLLER_TYPES.get(p['ControllerType'].lower())
        if kind is None:
            raise CommandError('ControllerType is IDE or SCSI',
                               'InvalidParameter', 'InvalidArgument')
        local = self.local_path(p['Path'], 'Add-VMHardDiskDrive')
        if not os.path.isfile(local):
            raise CommandError("The system cannot find the file '%s'."
                               % p['Path'], 'ObjectNotFound',
                               'ObjectNotFound')
        self._vhd_info(local, p['Path'])
        for other in self.state['vms']:
            for drive in other['HardDrives']:
                if drive['Path'].lower() == p['Path'].lower():
                    raise CommandError(
                        "The disk '%s' is already attached to virtual "
                        "machine '%s'." % (p['Path'], other['Name']),
                        'InvalidParameter', 'ResourceExists')
        for vm in self._vms(p['VMName'], 'Add-VMHardDiskDrive'):
            if kind == CONTROLLER_IDE and vm['Generation'] == 2:
                raise CommandError('Generation 2 virtual machines have no '
                                   'IDE controller.', 'InvalidParameter',
                                   'InvalidArgument')
            if kind == CONTROLLER_IDE and vm['State'] != VM_OFF:
                raise CommandError('IDE disks cannot be added while the '
                                   'virtual machine is running.',
                                   'InvalidState', 'InvalidOperation')
            number = p.get('ControllerNumber', 0)
            location = p.get('ControllerLocation', 0)
            limit = (2, 2) if kind == CONTROLLER_IDE else (4, 64)
            if not (0 <= number < limit[0] and 0 <= location < limit[1]):
                raise CommandError('No such controller slot %d:%d.'
                                   % (number, location), 'InvalidParameter',
                                   'InvalidArgument')
            for drive in vm['HardDrives']:
                if (drive['ControllerType'], drive['ControllerNumber'],
                        drive['ControllerLocation']) == (kind, number,
                                                         location):
                    raise CommandError('The controller slot %d:%d is in '
                                       'use.' % (number, location),
                                       'InvalidParameter', 'ResourceExists')
            vm['HardDrives'].append({
                'ControllerType': kind, 'ControllerNumber': number,
                'ControllerLocation': location, 'Path': p['Path']})
        return []

    def remove_vmharddiskdrive(self, p, _):
        self._required(p, 'Remove-VMHardDiskDrive', 'VMName',
                       'ControllerType', 'ControllerNumber',
                       'ControllerLocation')
        kind = CONTROLLER_TYPES.get(p['ControllerType'].lower())
        if kind is None:
            raise CommandError('ControllerType is IDE or SCSI',
                               'InvalidParameter', 'InvalidArgument')
        for vm in self._vms(p['VMName'], 'Remove-VMHardDiskDrive'):
            if kind == CONTROLLER_IDE and vm['State'] != VM_OFF:
                raise CommandError('IDE disks cannot be removed while the '
                                   'virtual machine is running.',
                                   'InvalidState', 'InvalidOperation')
            slot = (kind, p['ControllerNumber'], p['ControllerLocation'])
            found = [d for d in vm['HardDrives']
                     if (d['ControllerType'], d['ControllerNumber'],
                         d['ControllerLocation']) == slot]
            if not found:
                raise CommandError(
                    'Hyper-V was unable to find a hard disk drive at %s '
                    '%d:%d.' % (p['ControllerType'], slot[1], slot[2]),
                    'ObjectNotFound', 'ObjectNotFound')
            # As on Hyper-V: the drive goes, its file stays.
            vm['HardDrives'].remove(found[0])
        return []

    def get_vmharddiskdrive(self, p, _):
        self._required(p, 'Get-VMHardDiskDrive', 'VMName')
        out = []
        for vm in self._vms(p['VMName'], 'Get-VMHardDiskDrive'):
            for drive in vm['HardDrives']:
                out.append(Record(VMName=vm['Name'], **drive))
        return out

    def add_vmnetworkadapter(self, p, _):
        self._required(p, 'Add-VMNetworkAdapter', 'VMName')
        name = p.get('Name', 'Network Adapter')
        if 'SwitchName' in p:
            self._switch(p['SwitchName'], 'Add-VMNetworkAdapter')
        mac = p.get('StaticMacAddress')
        if mac is not None and not MAC.match(mac):
            raise CommandError("Invalid MAC address '%s'." % mac,
                               'InvalidParameter', 'InvalidArgument')
        for vm in self._vms(p['VMName'], 'Add-VMNetworkAdapter'):
            if p.get('IsLegacy') and vm['Generation'] == 2:
                raise CommandError('Generation 2 virtual machines have no '
                                   'legacy network adapter.',
                                   'InvalidParameter', 'InvalidArgument')
            if vm['State'] != VM_OFF and p.get('IsLegacy'):
                raise CommandError('Legacy adapters cannot be added while '
                                   'the virtual machine is running.',
                                   'InvalidState', 'InvalidOperation')
            vm['NetworkAdapters'].append({
                'Name': name, 'SwitchName': p.get('SwitchName'),
                'MacAddress': (mac or '00155D000000').upper(),
                'DynamicMacAddressEnabled': mac is None,
                'IsLegacy': bool(p.get('IsLegacy')),
                'VlanMode': VLAN_UNTAGGED, 'AccessVlanId': 0})
        return []

    def set_vmnetworkadaptervlan(self, p, _):
        self._required(p, 'Set-VMNetworkAdapterVlan', 'VMName')
        if ('Access' in p) == ('Untagged' in p):
            raise CommandError('Give exactly one of -Access and -Untagged.',
                               'AmbiguousParameterSet', 'InvalidArgument')
        if 'Access' in p and not 1 <= p.get('VlanId', 0) <= 4094:
            raise CommandError('-Access needs -VlanId 1..4094.',
                               'InvalidParameter', 'InvalidArgument')
        for vm in self._vms(p['VMName'], 'Set-VMNetworkAdapterVlan'):
            adapters = [a for a in vm['NetworkAdapters']
                        if 'VMNetworkAdapterName' not in p
                        or a['Name'] == p['VMNetworkAdapterName']]
            if not adapters:
                raise _not_found('network adapter',
                                 p.get('VMNetworkAdapterName'),
                                 'Set-VMNetworkAdapterVlan')
            for adapter in adapters:
                if 'Access' in p:
                    adapter['VlanMode'] = VLAN_ACCESS
                    adapter['AccessVlanId'] = p['VlanId']
                else:
                    adapter['VlanMode'] = VLAN_UNTAGGED
                    adapter['AccessVlanId'] = 0
        return []

    def get_vmnetworkadapter(self, p, _):
        self._required(p, 'Get-VMNetworkAdapter', 'VMName')
        return [Record(VMName=vm['Name'], **a)
                for vm in self._vms(p['VMName'], 'Get-VMNetworkAdapter')
                for a in vm['NetworkAdapters']]

    def start_vm(self, p, _):
        self._required(p, 'Start-VM', 'Name')
        for vm in self._vms(p['Name'], 'Start-VM'):
            if vm['State'] == VM_RUNNING:
                continue
            for drive in vm['HardDrives']:
                if not os.path.isfile(self.local_path(drive['Path'],
                                                      'Start-VM')):
                    raise CommandError(
                        "'%s' failed to start. The system cannot find the "
                        "file specified: '%s'." % (vm['Name'], drive['Path']),
                        'ObjectNotFound', 'ObjectNotFound')
            vm['State'] = VM_RUNNING
            vm['Starts'] += 1
        return []

    def stop_vm(self, p, _):
        self._required(p, 'Stop-VM', 'Name')
        for vm in self._vms(p['Name'], 'Stop-VM'):
            if vm['State'] == VM_OFF:
                continue
            if 'TurnOff' not in p and not vm['GuestShutdown']:
                raise CommandError(
                    "'%s' failed to shut down: the shutdown integration "
                    "service is not available in the guest." % vm['Name'],
                    'Unspecified', 'NotImplemented')
            vm['State'] = VM_OFF
        return []

    def restart_vm(self, p, _):
        self._required(p, 'Restart-VM', 'Name')
        for vm in self._vms(p['Name'], 'Restart-VM'):
            if vm['State'] != VM_RUNNING:
                raise CommandError(
                    "'%s' cannot be restarted: it is not running."
                    % vm['Name'], 'InvalidState', 'InvalidOperation')
            vm['Starts'] += 1
        return []

    def remove_vm(self, p, _):
        self._required(p, 'Remove-VM', 'Name')
        for vm in self._vms(p['Name'], 'Remove-VM'):
            if vm['State'] != VM_OFF:
                raise CommandError(
                    "'%s' cannot be removed while it is running."
                    % vm['Name'], 'InvalidState', 'InvalidOperation')
            # As on Hyper-V: the VM goes, its VHDX files stay.
            self.state['vms'].remove(vm)
        return []

    def _vhd_info(self, local, path):
        extension = path.rpartition('.')[2].lower()
        if '.' not in path or extension not in ('vhd', 'vhdx'):
            raise CommandError(
                "The file '%s' does not have a virtual hard disk extension "
                "(.vhd or .vhdx)." % path, 'InvalidParameter',
                'InvalidArgument')
        # The content must be what the extension says.
        for fmt in (('vhdx',) if extension == 'vhdx' else ('vpc',)):
            result = subprocess.run(
                ['qemu-img', 'info', '--output=json', '-U', '-f', fmt, local],
                capture_output=True, text=True)
            if result.returncode == 0:
                return fmt, json.loads(result.stdout)
        raise CommandError("The file '%s' is not a virtual hard disk file."
                           % path, 'InvalidParameter', 'InvalidArgument')

    def get_vhd(self, p, _):
        self._required(p, 'Get-VHD', 'Path')
        local = self.local_path(p['Path'], 'Get-VHD')
        if not os.path.isfile(local):
            raise CommandError("Cannot find path '%s' because it does not "
                               "exist." % p['Path'], 'ObjectNotFound',
                               'ObjectNotFound')
        fmt, info = self._vhd_info(local, p['Path'])
        attached = any(d['Path'].lower() == p['Path'].lower()
                       for vm in self.state['vms'] for d in vm['HardDrives'])
        return [Record(Path=p['Path'], VhdFormat=VHD_FORMATS[fmt],
                       VhdType=VHD_DYNAMIC, Size=info['virtual-size'],
                       FileSize=os.path.getsize(local), ParentPath='',
                       Attached=attached)]

    def checkpoint_vm(self, p, _):
        self._required(p, 'Checkpoint-VM', 'Name', 'SnapshotName')
        for vm in self._vms(p['Name'], 'Checkpoint-VM'):
            vm['Checkpoints'].append(p['SnapshotName'])
        return []

    def remove_vmsnapshot(self, p, _):
        self._required(p, 'Remove-VMSnapshot', 'VMName', 'Name')
        for vm in self._vms(p['VMName'], 'Remove-VMSnapshot'):
            if p['Name'] not in vm['Checkpoints']:
                raise _not_found('checkpoint', p['Name'],
                                 'Remove-VMSnapshot')
            vm['Checkpoints'].remove(p['Name'])
        return []
