"""The simulated pool: xapi's objects, its generic calls and its rules.

Every object is a record of typed fields in one class (``CLASSES``), named
by an ``OpaqueRef:`` and carrying a ``uuid``.  Calls are xapi's own names
(``VM.start``, ``VDI.get_virtual_size`` ...) with xapi's error codes; the
generic ones (get_all, get_all_records, get_record, get_by_uuid,
get_by_name_label, get_<field>, set_<field>, add_to_/remove_from_<map>)
exist for every class and field, derived from the schema.  Values travel
as xapi sends them: int64 as decimal strings, refs as strings,
``OpaqueRef:NULL`` for no object.  ``Pool.call`` never raises anything
but ``XapiError``: a bug or a bad argument becomes INTERNAL_ERROR or a
typed error, never a traceback on the wire.
"""

import os
import re
import subprocess
import uuid as uuidlib

NULL = 'OpaqueRef:NULL'
STR, INT, BOOL, FLOAT, MAP, SET = 'string', 'int', 'bool', 'float', 'map', \
    'set'
HALTED, RUNNING, PAUSED, SUSPENDED = 'Halted', 'Running', 'Paused', \
    'Suspended'
MAC_RE = re.compile(r'^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$')
MAX_INT64 = 2 ** 63 - 1


def ref(cls):
    return 'ref:' + cls


def backref(cls, field):
    return ('backref', cls, field)


# class -> field -> (type, writable) or backref(cls, field).  Every class
# also has ``uuid`` (read-only).
CLASSES = {
    'session': {
        'this_host': (ref('host'), False), 'this_user': (STR, False),
        'originator': (STR, False), 'other_config': (MAP, True)},
    'pool': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'master': (ref('host'), False), 'default_SR': (ref('SR'), True),
        'other_config': (MAP, True)},
    'host': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'hostname': (STR, False), 'address': (STR, False),
        'metrics': (ref('host_metrics'), False),
        'API_version_major': (INT, False), 'API_version_minor': (INT, False),
        'software_version': (MAP, False), 'cpu_info': (MAP, False),
        'enabled': (BOOL, False),
        'resident_VMs': backref('VM', 'resident_on'),
        'other_config': (MAP, True)},
    'host_metrics': {
        'memory_total': (INT, False), 'memory_free': (INT, False),
        'live': (BOOL, False), 'other_config': (MAP, True)},
    'SR': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'type': (STR, False), 'content_type': (STR, False),
        'shared': (BOOL, True), 'physical_size': (INT, False),
        'physical_utilisation': (INT, False),
        'virtual_allocation': (INT, False),
        'sm_config': (MAP, False),
        'VDIs': backref('VDI', 'SR'), 'PBDs': backref('PBD', 'SR'),
        'other_config': (MAP, True)},
    'PBD': {
        'host': (ref('host'), False), 'SR': (ref('SR'), False),
        'device_config': (MAP, False), 'currently_attached': (BOOL, False),
        'other_config': (MAP, True)},
    'VDI': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'SR': (ref('SR'), False), 'virtual_size': (INT, False),
        'physical_utilisation': (INT, False), 'type': (STR, False),
        'sharable': (BOOL, False), 'read_only': (BOOL, False),
        'managed': (BOOL, False), 'missing': (BOOL, False),
        'is_a_snapshot': (BOOL, False), 'snapshot_of': (ref('VDI'), False),
        'VBDs': backref('VBD', 'VDI'), 'other_config': (MAP, True),
        'sm_config': (MAP, False), 'xenstore_data': (MAP, False),
        'location': (STR, False)},
    'VBD': {
        'VM': (ref('VM'), False), 'VDI': (ref('VDI'), False),
        'device': (STR, False), 'userdevice': (STR, True),
        'bootable': (BOOL, True), 'mode': (STR, True), 'type': (STR, True),
        'empty': (BOOL, False), 'unpluggable': (BOOL, True),
        'currently_attached': (BOOL, False), 'other_config': (MAP, True),
        'qos_algorithm_type': (STR, True),
        'qos_algorithm_params': (MAP, True)},
    'network': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'bridge': (STR, False), 'MTU': (INT, True),
        'VIFs': backref('VIF', 'network'), 'other_config': (MAP, True)},
    'VIF': {
        'device': (STR, False), 'network': (ref('network'), False),
        'VM': (ref('VM'), False), 'MAC': (STR, False), 'MTU': (INT, False),
        'currently_attached': (BOOL, False), 'other_config': (MAP, True),
        'qos_algorithm_type': (STR, True),
        'qos_algorithm_params': (MAP, True)},
    'VM': {
        'name_label': (STR, True), 'name_description': (STR, True),
        'power_state': (STR, False), 'is_a_template': (BOOL, True),
        'is_control_domain': (BOOL, False),
        'memory_static_max': (INT, False), 'memory_static_min': (INT, False),
        'memory_dynamic_max': (INT, False),
        'memory_dynamic_min': (INT, False),
        'VCPUs_max': (INT, True), 'VCPUs_at_startup': (INT, True),
        'HVM_boot_policy': (STR, True), 'HVM_boot_params': (MAP, True),
        'platform': (MAP, True), 'PV_bootloader': (STR, True),
        'other_config': (MAP, True), 'resident_on': (ref('host'), False),
        'VBDs': backref('VBD', 'VM'), 'VIFs': backref('VIF', 'VM'),
        'actions_after_shutdown': (STR, True),
        'actions_after_reboot': (STR, True),
        'actions_after_crash': (STR, True)},
}

# What VDI/VBD/VIF/VM.create require in their record (xapi requires all
# fields; the rest default here to keep the simulator's callers short).
CREATE_REQUIRED = {
    'VDI': ('SR', 'virtual_size', 'type', 'sharable', 'read_only'),
    'VBD': ('VM', 'VDI', 'userdevice', 'bootable', 'mode', 'type'),
    'VIF': ('device', 'network', 'VM', 'MAC'),
    'VM': ('name_label', 'memory_static_max', 'VCPUs_max'),
    'PBD': ('host', 'SR', 'device_config'),
}
# SMAPI's answers (XE_SR_ERRORCODES) for what the NFS SR driver refuses.
NFS_MOUNT_ERROR = ('SR_BACKEND_FAILURE_73', '', 'NFS mount error')
VDI_UNAVAILABLE = ('SR_BACKEND_FAILURE_46', '', 'The VDI is not available')
VDI_EXISTS = ('SR_BACKEND_FAILURE_41', '', 'The VDI already exists')
DEFAULTS = {STR: '', INT: 0, BOOL: False, FLOAT: 0.0, MAP: {}, SET: []}


class XapiError(Exception):
    """A xapi failure: ErrorDescription is ``[code, param, ...]``."""

    def __init__(self, code, *params):
        super().__init__(code)
        self.details = [code] + [str(p) for p in params]


def new_ref():
    return 'OpaqueRef:' + str(uuidlib.uuid4())


class Pool(object):
    """One pool with one host, its SRs, networks and VMs (see module doc).

    Callers hold one lock around ``call`` and the disk helpers.
    """

    def __init__(self, state_dir, username, password, sr_size=1 << 40,
                 networks=('Pool-wide network associated with eth0',),
                 srs=('Local storage',), host_memory=64 << 30, host_cpus=16,
                 pool_uuid=None):
        self.username = username
        self.password = password
        self.state_dir = state_dir
        self.objects = {cls: {} for cls in CLASSES}
        self.by_uuid = {cls: {} for cls in CLASSES}
        metrics = self._add('host_metrics', memory_total=host_memory,
                            memory_free=host_memory, live=True)
        self.host = self._add(
            'host', name_label='xhv-sim-host', hostname='xhv-sim-host',
            address='127.0.0.1', metrics=metrics, API_version_major=2,
            API_version_minor=21, enabled=True,
            software_version={'product_brand': 'XCP-ng',
                              'product_version': '8.3.0',
                              'xapi': '24.19'},
            cpu_info={'cpu_count': str(host_cpus), 'vendor': 'GenuineIntel'})
        for n, name in enumerate(srs):
            sr = self._add('SR', name_label=name, type='ext',
                           content_type='user', physical_size=sr_size)
            os.makedirs(self.sr_dir(sr), exist_ok=True)
            if n == 0:
                default = sr
        # pool_uuid: the same pool across restarts (a service's), as a
        # real pool keeps its uuid; None: a new one.
        self.pool = self._add('pool', name_label='xhv-sim-pool',
                              master=self.host, default_SR=default,
                              **({'uuid': pool_uuid} if pool_uuid else {}))
        for n, name in enumerate(networks):
            self._add('network', name_label=name, bridge='xenbr%d' % n,
                      MTU=1500)
        # What every xapi host has: dom0 and templates.
        self._add('VM', name_label='Control domain on host: xhv-sim-host',
                  power_state=RUNNING, is_control_domain=True,
                  resident_on=self.host, memory_static_max=4 << 30,
                  memory_dynamic_max=4 << 30, VCPUs_max=4,
                  VCPUs_at_startup=4)
        for name in ('Other install media', 'Debian Bookworm 12'):
            self._add('VM', name_label=name, is_a_template=True,
                      power_state=HALTED, memory_static_max=256 << 20,
                      memory_static_min=256 << 20,
                      memory_dynamic_max=256 << 20,
                      memory_dynamic_min=256 << 20, VCPUs_max=1,
                      VCPUs_at_startup=1, HVM_boot_policy='BIOS order',
                      HVM_boot_params={'order': 'cd'},
                      platform={'acpi': '1', 'apic': 'true', 'pae': 'true',
                                'viridian': 'false', 'nx': 'true'},
                      actions_after_shutdown='destroy',
                      actions_after_reboot='restart',
                      actions_after_crash='restart')
        self.sessions = {}

    # -- storage of objects ------------------------------------------------

    def _add(self, cls, **fields):
        record = {}
        for name, kind in CLASSES[cls].items():
            if isinstance(kind, tuple) and kind[0] == 'backref':
                continue
            ftype = kind[0]
            default = NULL if ftype.startswith('ref:') else DEFAULTS[ftype]
            record[name] = fields.pop(name, default)
            if isinstance(record[name], (dict, list)):
                record[name] = type(record[name])(record[name])
        record['uuid'] = fields.pop('uuid', str(uuidlib.uuid4()))
        record.update(fields)  # private fields (leading underscore)
        opaque = new_ref()
        self.objects[cls][opaque] = record
        self.by_uuid[cls][record['uuid']] = opaque
        return opaque

    def _remove(self, cls, opaque):
        record = self.objects[cls].pop(opaque)
        self.by_uuid[cls].pop(record['uuid'], None)

    def get(self, cls, opaque):
        if not isinstance(opaque, str) or opaque not in self.objects[cls]:
            raise XapiError('HANDLE_INVALID', cls, opaque)
        return self.objects[cls][opaque]

    def sr_dir(self, sr):
        record = self.objects['SR'][sr]
        if record['type'] == 'nfs':
            # NFSSR mounts <serverpath>/<SR uuid>: the exports of this
            # machine are its own folders (the bed's stand-in for NFS).
            return self._nfs_dir(sr)
        return os.path.join(self.state_dir, 'sr-' + record['uuid'])

    def _nfs_dir(self, sr):
        record = self.objects['SR'][sr]
        for pbd in self._backrefs('PBD', 'SR', sr):
            config = self.objects['PBD'][pbd]['device_config']
            if self.objects['PBD'][pbd]['currently_attached']:
                return os.path.join(config['serverpath'], record['uuid'])
        raise XapiError('SR_HAS_NO_PBDS', sr)

    def vdi_path(self, vdi):
        """A file-based SR's VDI: <SR folder>/<location>.raw (or .vhd)."""
        record = self.objects['VDI'][vdi]
        kind = record['sm_config'].get('type') if record['location'] else None
        return os.path.join(self.sr_dir(record['SR']),
                            (record['location'] or record['uuid']) +
                            ('.vhd' if kind == 'vhd' else '.raw'))

    def _backrefs(self, cls, field, target):
        return [r for r, rec in self.objects[cls].items()
                if rec.get(field) == target]

    # -- wire format -------------------------------------------------------

    def _out(self, cls, name, opaque):
        """A field's value as xapi sends it."""
        record = self.objects[cls][opaque]
        if name == 'uuid':
            return record['uuid']
        kind = CLASSES[cls][name]
        if kind[0] == 'backref':
            return self._backrefs(kind[1], kind[2], opaque)
        value = self._live_value(cls, name, opaque, record)
        if kind[0] == INT:
            return str(value)
        if kind[0] == MAP:
            return {str(k): str(v) for k, v in value.items()}
        return value

    def _live_value(self, cls, name, opaque, record):
        if cls == 'SR' and name in ('physical_utilisation',
                                    'virtual_allocation'):
            vdis = self._backrefs('VDI', 'SR', opaque)
            if name == 'virtual_allocation':
                return sum(self.objects['VDI'][v]['virtual_size']
                           for v in vdis)
            return sum(self._allocated(v) for v in vdis)
        if cls == 'VDI' and name == 'physical_utilisation':
            return self._allocated(opaque)
        if cls == 'host_metrics' and name == 'memory_free':
            used = sum(vm['memory_dynamic_max']
                       for vm in self.objects['VM'].values()
                       if vm['power_state'] in (RUNNING, PAUSED))
            return max(0, record['memory_total'] - used)
        return record[name]

    def _allocated(self, vdi):
        try:
            return os.stat(self.vdi_path(vdi)).st_blocks * 512
        except (FileNotFoundError, XapiError):
            return 0

    def record_out(self, cls, opaque):
        out = {name: self._out(cls, name, opaque) for name in CLASSES[cls]}
        out['uuid'] = self.objects[cls][opaque]['uuid']
        return out

    def _in(self, cls, name, value):
        """A value from the wire for field ``name``, typed, or an error."""
        ftype = CLASSES[cls][name][0]
        if ftype == INT:
            if isinstance(value, bool):
                raise XapiError('FIELD_TYPE_ERROR', name)
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise XapiError('FIELD_TYPE_ERROR', name)
            if not -MAX_INT64 <= number <= MAX_INT64:
                raise XapiError('FIELD_TYPE_ERROR', name)
            return number
        if ftype == BOOL:
            if not isinstance(value, bool):
                raise XapiError('FIELD_TYPE_ERROR', name)
            return value
        if ftype == STR:
            if not isinstance(value, str):
                raise XapiError('FIELD_TYPE_ERROR', name)
            return value
        if ftype == MAP:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str)
                    for k, v in value.items()):
                raise XapiError('FIELD_TYPE_ERROR', name)
            return dict(value)
        if ftype.startswith('ref:'):
            target = ftype[4:]
            if value == NULL:
                return NULL
            self.get(target, value)
            return value
        raise XapiError('FIELD_TYPE_ERROR', name)

    # -- sessions ----------------------------------------------------------

    def login(self, username, password, originator=''):
        if not (isinstance(username, str) and isinstance(password, str)
                and username == self.username
                and password == self.password):
            raise XapiError('SESSION_AUTHENTICATION_FAILED', username,
                            'Authentication failure')
        opaque = self._add('session', this_host=self.host,
                           this_user=username, originator=str(originator))
        self.sessions[opaque] = True
        return opaque

    def check_session(self, opaque):
        if not isinstance(opaque, str) or opaque not in self.sessions:
            raise XapiError('SESSION_INVALID', opaque)

    def logout(self, opaque):
        self.check_session(opaque)
        self.sessions.pop(opaque)
        self._remove('session', opaque)

    def expire_sessions(self):
        """What a xapi restart does: every session becomes invalid."""
        for opaque in list(self.sessions):
            self.logout(opaque)

    # -- dispatch ----------------------------------------------------------

    def call(self, method, params):
        """Run ``method`` (``Class.op``) with ``params`` (session first)."""
        if not isinstance(method, str) or '.' not in method:
            raise XapiError('MESSAGE_METHOD_UNKNOWN', method)
        cls, _, op = method.partition('.')
        if cls == 'session' and op in ('login_with_password',
                                       'slave_local_login_with_password'):
            if not 2 <= len(params) <= 4:
                raise XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', method,
                                4, len(params))
            return self.login(params[0], params[1],
                              params[3] if len(params) > 3 else '')
        handler = self._handler(cls, op)
        if handler is None:
            raise XapiError('MESSAGE_METHOD_UNKNOWN', method)
        func, arity = handler
        if len(params) != arity + 1:
            raise XapiError('MESSAGE_PARAMETER_COUNT_MISMATCH', method,
                            arity + 1, len(params))
        self.check_session(params[0])
        if cls == 'session' and op == 'logout':
            return self.logout(params[0]) or ''
        result = func(*params[1:])
        return '' if result is None else result

    def _handler(self, cls, op):
        """(function, number of arguments after the session) or None."""
        special = getattr(self, '%s_%s' % (cls, op), None)
        if special is not None and cls in CLASSES:
            return special, special.__code__.co_argcount - 1
        if cls == 'session' and op == 'logout':
            return (None, 0)
        if cls not in CLASSES:
            return None
        if cls == 'session' and op in ('get_all', 'get_all_records'):
            return None  # as in xapi: no listing other clients' sessions
        fields = CLASSES[cls]
        if op == 'get_all':
            return (lambda: list(self.objects[cls])), 0
        if op == 'get_all_records':
            return (lambda: {r: self.record_out(cls, r)
                             for r in self.objects[cls]}), 0
        if op == 'get_record':
            return (lambda r: self.record_out(cls, self._ref(cls, r))), 1
        if op == 'get_by_uuid':
            return (lambda u: self._by_uuid(cls, u)), 1
        if op == 'get_by_name_label' and 'name_label' in fields:
            return (lambda name: [r for r, rec in self.objects[cls].items()
                                  if rec['name_label'] == name]), 1
        if op.startswith('get_'):
            name = op[4:]
            if name == 'uuid' or name in fields:
                return (lambda r: self._out(cls, name,
                                            self._ref(cls, r))), 1
        if op.startswith('set_'):
            name = op[4:]
            if name in fields and fields[name][0] != 'backref' \
                    and fields[name][1]:
                return (lambda r, v: self._set(cls, r, name, v)), 2
        for prefix in ('add_to_', 'remove_from_'):
            if op.startswith(prefix):
                name = op[len(prefix):]
                if name in fields and fields[name][0] == MAP \
                        and fields[name][1]:
                    if prefix == 'add_to_':
                        return (lambda r, k, v: self._map_add(
                            cls, r, name, k, v)), 3
                    return (lambda r, k: self._map_remove(
                        cls, r, name, k)), 2
        return None

    def _ref(self, cls, opaque):
        self.get(cls, opaque)
        return opaque

    def _by_uuid(self, cls, value):
        if not isinstance(value, str) or value not in self.by_uuid[cls]:
            raise XapiError('UUID_INVALID', cls, value)
        return self.by_uuid[cls][value]

    def _set(self, cls, opaque, name, value):
        record = self.get(cls, opaque)
        value = self._in(cls, name, value)
        if cls == 'VM' and name in ('VCPUs_max',) and \
                record['power_state'] != HALTED:
            raise XapiError('VM_BAD_POWER_STATE', opaque, 'halted',
                            record['power_state'].lower())
        record[name] = value

    def _map_add(self, cls, opaque, name, key, value):
        record = self.get(cls, opaque)
        if not isinstance(key, str) or not isinstance(value, str):
            raise XapiError('FIELD_TYPE_ERROR', name)
        if key in record[name]:
            raise XapiError('MAP_DUPLICATE_KEY', cls, name, opaque, key)
        record[name][key] = value

    def _map_remove(self, cls, opaque, name, key):
        record = self.get(cls, opaque)
        if not isinstance(key, str):
            raise XapiError('FIELD_TYPE_ERROR', name)
        record[name].pop(key, None)

    def _create(self, cls, record):
        if not isinstance(record, dict):
            raise XapiError('FIELD_TYPE_ERROR', 'record')
        for name in CREATE_REQUIRED[cls]:
            if name not in record:
                raise XapiError('FIELD_TYPE_ERROR', name)
        fields = {}
        for name, value in record.items():
            kind = CLASSES[cls].get(name)
            if kind is None or kind[0] == 'backref':
                continue  # xapi ignores fields a create does not take
            fields[name] = self._in(cls, name, value)
        return fields

    # -- VM ----------------------------------------------------------------

    def _vm(self, opaque, allow_template=False):
        record = self.get('VM', opaque)
        if record['is_a_template'] and not allow_template:
            raise XapiError('VM_IS_TEMPLATE', opaque)
        if record['is_control_domain']:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'This operation is not allowed on dom0')
        return record

    def _power(self, opaque, expected, new, allow=()):
        record = self._vm(opaque)
        if record['power_state'] not in (expected,) + tuple(allow):
            raise XapiError('VM_BAD_POWER_STATE', opaque, expected.lower(),
                            record['power_state'].lower())
        record['power_state'] = new
        running = new in (RUNNING, PAUSED)
        record['resident_on'] = self.host if running else NULL
        for cls in ('VBD', 'VIF'):
            for r in self._backrefs(cls, 'VM', opaque):
                self.objects[cls][r]['currently_attached'] = running

    def VM_create(self, record):
        fields = self._create('VM', record)
        fields.setdefault('power_state', HALTED)
        fields['power_state'] = HALTED
        fields.setdefault('VCPUs_at_startup', fields['VCPUs_max'])
        return self._add('VM', **fields)

    def VM_clone(self, vm, new_name):
        source = self._vm(vm, allow_template=True)
        if source['power_state'] != HALTED:
            raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                            source['power_state'].lower())
        if not isinstance(new_name, str):
            raise XapiError('FIELD_TYPE_ERROR', 'new_name')
        fields = {k: v for k, v in source.items()
                  if k in CLASSES['VM'] and k != 'resident_on'}
        fields['name_label'] = new_name
        fields['other_config'] = dict(source['other_config'])
        # Templates in these tests carry no disks or VIFs to copy.
        return self._add('VM', **fields)

    def VM_provision(self, vm):
        self._vm(vm, allow_template=True)

    def VM_start(self, vm, start_paused, force):
        if not isinstance(start_paused, bool) or \
                not isinstance(force, bool):
            raise XapiError('FIELD_TYPE_ERROR', 'start_paused')
        record = self._vm(vm)
        needed = record['memory_static_max']
        free = self._live_value('host_metrics', 'memory_free', None,
                                self.objects['host_metrics'][
                                    self.objects['host'][self.host][
                                        'metrics']])
        if record['power_state'] == HALTED and needed > free:
            raise XapiError('HOST_NOT_ENOUGH_FREE_MEMORY', needed, free)
        self._power(vm, HALTED, PAUSED if start_paused else RUNNING)

    def VM_clean_shutdown(self, vm):
        self._power(vm, RUNNING, HALTED)

    def VM_hard_shutdown(self, vm):
        self._power(vm, RUNNING, HALTED, allow=(PAUSED, SUSPENDED))

    def VM_clean_reboot(self, vm):
        self._power(vm, RUNNING, RUNNING)

    def VM_hard_reboot(self, vm):
        self._power(vm, RUNNING, RUNNING, allow=(PAUSED,))

    def VM_pause(self, vm):
        self._power(vm, RUNNING, PAUSED)

    def VM_unpause(self, vm):
        self._power(vm, PAUSED, RUNNING)

    def VM_set_memory_limits(self, vm, static_min, static_max, dynamic_min,
                             dynamic_max):
        record = self._vm(vm, allow_template=True)
        values = [self._in('VM', 'memory_static_max', v)
                  for v in (static_min, dynamic_min, dynamic_max,
                            static_max)]
        if values != sorted(values) or values[0] <= 0:
            raise XapiError('MEMORY_CONSTRAINT_VIOLATION',
                            'static_min <= dynamic_min <= dynamic_max <= '
                            'static_max')
        if record['power_state'] != HALTED:
            raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                            record['power_state'].lower())
        (record['memory_static_min'], record['memory_dynamic_min'],
         record['memory_dynamic_max'], record['memory_static_max']) = values

    def VM_set_VCPUs_at_startup(self, vm, value):
        record = self._vm(vm, allow_template=True)
        value = self._in('VM', 'VCPUs_at_startup', value)
        if not 1 <= value <= record['VCPUs_max']:
            raise XapiError('VALUE_NOT_SUPPORTED', 'VCPUs_at_startup', value,
                            'must be between 1 and VCPUs_max')
        record['VCPUs_at_startup'] = value

    def VM_destroy(self, vm):
        record = self._vm(vm, allow_template=True)
        if record['power_state'] != HALTED:
            raise XapiError('VM_BAD_POWER_STATE', vm, 'halted',
                            record['power_state'].lower())
        for cls in ('VBD', 'VIF'):
            for r in self._backrefs(cls, 'VM', vm):
                self._remove(cls, r)
        self._remove('VM', vm)

    # -- VBD, VIF ----------------------------------------------------------

    def _devices_of(self, cls, vm, field):
        return {self.objects[cls][r][field]
                for r in self._backrefs(cls, 'VM', vm)}

    def VBD_create(self, record):
        fields = self._create('VBD', record)
        vm = self._vm(fields['VM'])
        if fields['mode'] not in ('RW', 'RO') or \
                fields['type'] not in ('Disk', 'CD', 'Floppy'):
            raise XapiError('FIELD_TYPE_ERROR', 'mode' if fields['mode']
                            not in ('RW', 'RO') else 'type')
        if fields['VDI'] == NULL:
            fields['empty'] = True
            if fields['type'] == 'Disk':
                raise XapiError('VBD_NOT_REMOVABLE_MEDIA', NULL)
        used = self._devices_of('VBD', fields['VM'], 'userdevice')
        device = fields['userdevice']
        if device == 'autodetect':
            device = str(min(set(range(16)) - {int(d) for d in used
                                               if d.isdigit()}))
        elif not device.isdigit() or int(device) > 15:
            raise XapiError('INVALID_DEVICE', device)
        if device in used:
            raise XapiError('DEVICE_ALREADY_EXISTS', device)
        fields['userdevice'] = device
        fields['device'] = ''
        fields['currently_attached'] = False
        del vm
        return self._add('VBD', **fields)

    def VBD_destroy(self, vbd):
        record = self.get('VBD', vbd)
        if record['currently_attached']:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'VBD is currently attached')
        self._remove('VBD', vbd)

    def VIF_create(self, record):
        fields = self._create('VIF', record)
        self._vm(fields['VM'])
        mac = fields['MAC']
        if mac == '':
            mac = 'c6:%s' % ':'.join(uuidlib.uuid4().hex[i:i + 2]
                                     for i in range(0, 10, 2))
        elif not MAC_RE.match(mac):
            raise XapiError('MAC_INVALID', mac)
        if not fields['device'].isdigit():
            raise XapiError('INVALID_DEVICE', fields['device'])
        if fields['device'] in self._devices_of('VIF', fields['VM'],
                                                'device'):
            raise XapiError('DEVICE_ALREADY_EXISTS', fields['device'])
        fields['MAC'] = mac.lower()
        fields.setdefault('MTU', self.objects['network'][
            fields['network']]['MTU'])
        fields['currently_attached'] = False
        return self._add('VIF', **fields)

    def VIF_destroy(self, vif):
        record = self.get('VIF', vif)
        if record['currently_attached']:
            raise XapiError('OPERATION_NOT_ALLOWED',
                            'VIF is currently attached')
        self._remove('VIF', vif)

    # -- VDI ---------------------------------------------------------------

    def _sr_free(self, sr):
        return self.objects['SR'][sr]['physical_size'] - self._live_value(
            'SR', 'physical_utilisation', sr, None)

    def VDI_create(self, record):
        fields = self._create('VDI', record)
        if fields['SR'] == NULL:
            raise XapiError('HANDLE_INVALID', 'SR', NULL)
        size = fields['virtual_size']
        if size <= 0:
            raise XapiError('VALUE_NOT_SUPPORTED', 'virtual_size', size,
                            'must be positive')
        if size > self._sr_free(fields['SR']):
            raise XapiError('SR_FULL', size, self._sr_free(fields['SR']))
        if fields['type'] not in ('user', 'system', 'suspend', 'crashdump',
                                  'ephemeral'):
            raise XapiError('FIELD_TYPE_ERROR', 'type')
        fields['managed'] = True
        vdi = self._add('VDI', **fields)
        self.objects['VDI'][vdi]['location'] = self.objects['VDI'][vdi][
            'uuid']
        with open(self.vdi_path(vdi), 'wb') as f:
            f.truncate(size)
        return vdi

    @staticmethod
    def _typed(value, kind, name):
        ok = {STR: isinstance(value, str), BOOL: isinstance(value, bool),
              MAP: isinstance(value, dict) and all(
                  isinstance(k, str) and isinstance(v, str)
                  for k, v in value.items())}[kind]
        if not ok:
            raise XapiError('FIELD_TYPE_ERROR', name)
        return value

    def VDI_introduce(self, uuid, name_label, name_description, sr, type,
                      sharable, read_only, other_config, location,
                      xenstore_data, sm_config, managed, virtual_size,
                      physical_utilisation, metadata_of_pool,
                      is_a_snapshot, snapshot_time, snapshot_of):
        """What a file-based SR's driver does: the file must be there.

        As SMAPI's FileVDI: the VDI is ``<location>.raw`` (sm_config
        type=raw) or ``<location>.vhd`` in the SR's folder; the SR
        driver, not the caller, fills in the record (other_config and
        name_label given here are not kept: set them afterwards).
        """
        for value, kind, name in (
                (uuid, STR, 'uuid'), (name_label, STR, 'name_label'),
                (name_description, STR, 'name_description'),
                (type, STR, 'type'), (sharable, BOOL, 'sharable'),
                (read_only, BOOL, 'read_only'),
                (other_config, MAP, 'other_config'),
                (location, STR, 'location'),
                (xenstore_data, MAP, 'xenstore_data'),
                (sm_config, MAP, 'sm_config'), (managed, BOOL, 'managed'),
                (is_a_snapshot, BOOL, 'is_a_snapshot')):
            self._typed(value, kind, name)
        self.get('SR', sr)
        if type not in ('user', 'system'):
            raise XapiError('FIELD_TYPE_ERROR', 'type')
        if self.objects['SR'][sr]['type'] != 'nfs':
            raise XapiError('SR_OPERATION_NOT_SUPPORTED', sr)
        folder = self.sr_dir(sr)
        if uuid in self.by_uuid['VDI']:
            raise XapiError(*VDI_EXISTS)
        kind = sm_config.get('type', 'vhd')
        if not location or '/' in location or location.startswith('.') \
                or kind not in ('raw', 'vhd'):
            raise XapiError(*VDI_UNAVAILABLE)
        path = os.path.join(folder, location + '.' + kind)
        if not os.path.isfile(path):
            raise XapiError(*VDI_UNAVAILABLE)
        size = os.path.getsize(path)
        return self._add('VDI', uuid=uuid or str(uuidlib.uuid4()), SR=sr,
                         type=type, location=location, managed=True,
                         sm_config={'type': kind}, virtual_size=size,
                         read_only=read_only, sharable=sharable)

    def VDI_forget(self, vdi):
        """The record goes; the file stays (xapi's VDI.forget)."""
        self.get('VDI', vdi)
        if self._backrefs('VBD', 'VDI', vdi):
            raise XapiError('VDI_IN_USE', vdi, 'forget')
        self._remove('VDI', vdi)

    def SR_introduce(self, uuid, name_label, name_description, type,
                     content_type, shared, sm_config):
        for value, kind, name in (
                (uuid, STR, 'uuid'), (name_label, STR, 'name_label'),
                (name_description, STR, 'name_description'),
                (type, STR, 'type'), (content_type, STR, 'content_type'),
                (shared, BOOL, 'shared'), (sm_config, MAP, 'sm_config')):
            self._typed(value, kind, name)
        if type != 'nfs':
            raise XapiError('SR_UNKNOWN_DRIVER', type)
        if uuid in self.by_uuid['SR']:
            raise XapiError('SR_UUID_EXISTS', uuid)
        return self._add('SR', uuid=uuid or str(uuidlib.uuid4()),
                         name_label=name_label, type=type,
                         name_description=name_description,
                         content_type=content_type, shared=shared,
                         sm_config=sm_config)

    def SR_forget(self, sr):
        """The SR's records go (its VDIs' too); no file is touched."""
        self.get('SR', sr)
        if any(self.objects['PBD'][p]['currently_attached']
               for p in self._backrefs('PBD', 'SR', sr)):
            raise XapiError('SR_HAS_PBD', sr)
        for vdi in self._backrefs('VDI', 'SR', sr):
            if self._backrefs('VBD', 'VDI', vdi):
                raise XapiError('VDI_IN_USE', vdi, 'forget')
        for vdi in self._backrefs('VDI', 'SR', sr):
            self._remove('VDI', vdi)
        for pbd in self._backrefs('PBD', 'SR', sr):
            self._remove('PBD', pbd)
        self._remove('SR', sr)

    def PBD_create(self, record):
        fields = self._create('PBD', record)
        if NULL in (fields['host'], fields['SR']):
            raise XapiError('HANDLE_INVALID', 'host/SR', NULL)
        fields['currently_attached'] = False
        return self._add('PBD', **fields)

    def PBD_plug(self, pbd):
        record = self.get('PBD', pbd)
        if record['currently_attached']:
            return
        sr = self.objects['SR'][record['SR']]
        config = record['device_config']
        if sr['type'] == 'nfs':
            server, path = config.get('server'), config.get('serverpath')
            # Only this machine's folders are "exported" here; NFSSR
            # mounts <serverpath>/<SR uuid>, which must exist.
            if server not in ('127.0.0.1', 'localhost') or not path or \
                    not os.path.isabs(path) or not os.path.isdir(
                        os.path.join(path, sr['uuid'])):
                raise XapiError(*NFS_MOUNT_ERROR)
        record['currently_attached'] = True

    def PBD_unplug(self, pbd):
        record = self.get('PBD', pbd)
        for vdi in self._backrefs('VDI', 'SR', record['SR']):
            if self.vdi_in_use(vdi):
                raise XapiError('SR_HAS_ATTACHED_VDIS', record['SR'])
        record['currently_attached'] = False

    def PBD_destroy(self, pbd):
        if self.get('PBD', pbd)['currently_attached']:
            raise XapiError('OPERATION_NOT_ALLOWED', 'PBD is plugged')
        self._remove('PBD', pbd)

    def VBD_plug(self, vbd):
        record = self.get('VBD', vbd)
        vm = self._vm(record['VM'])
        if vm['power_state'] != RUNNING:
            raise XapiError('VM_BAD_POWER_STATE', record['VM'], 'running',
                            vm['power_state'].lower())
        if record['currently_attached']:
            raise XapiError('DEVICE_ALREADY_ATTACHED', vbd)
        record['currently_attached'] = True

    def VBD_unplug(self, vbd):
        record = self.get('VBD', vbd)
        vm = self._vm(record['VM'])
        if vm['power_state'] != RUNNING:
            raise XapiError('VM_BAD_POWER_STATE', record['VM'], 'running',
                            vm['power_state'].lower())
        if not record['currently_attached']:
            raise XapiError('DEVICE_ALREADY_DETACHED', vbd)
        record['currently_attached'] = False

    def vdi_in_use(self, vdi):
        return any(self.objects['VBD'][r]['currently_attached']
                   for r in self._backrefs('VBD', 'VDI', vdi))

    def VDI_destroy(self, vdi):
        self.get('VDI', vdi)
        if self.vdi_in_use(vdi):
            raise XapiError('VDI_IN_USE', vdi, 'destroy')
        path = self.vdi_path(vdi)
        for r in self._backrefs('VBD', 'VDI', vdi):
            self._remove('VBD', r)
        self._remove('VDI', vdi)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def VDI_snapshot(self, vdi, driver_params):
        source = self.get('VDI', vdi)
        if not isinstance(driver_params, dict):
            raise XapiError('FIELD_TYPE_ERROR', 'driver_params')
        snap = self._add(
            'VDI', name_label=source['name_label'], SR=source['SR'],
            virtual_size=source['virtual_size'], type=source['type'],
            read_only=True, managed=True, is_a_snapshot=True,
            snapshot_of=vdi)
        # Sparse, like the thin copy a real SR makes.
        subprocess.run(('cp', '--sparse=always', self.vdi_path(vdi),
                        self.vdi_path(snap)), check=True)
        return snap
