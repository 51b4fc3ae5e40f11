"""XHVVolumeDriver forwards every manager-facing method of Cinder 29."""

# Cinder's test base applies Cinder's eventlet monkey patching first.
from tests.unit.cinder import cinder_test as test  # noqa: I202

import inspect
import os
import re

from glanceclient.common import http as glance_http
import glanceclient.exc
from oslo_config import cfg

from cinder import exception
from cinder.volume import configuration
from cinder.volume import driver as base
from cinder.volume.drivers import lvm
from cinder.volume.drivers import nfs
from cinder.volume.drivers.vmware import vmdk
from cinder.volume import manager as volume_manager

from cinder_xhv import attach
from cinder_xhv import driver as xhv_driver
from cinder_xhv import images
from cinder_xhv import inner as inner_drivers
from cinder_xhv import opts as xhv_opts

CONF = cfg.CONF
BASE_CLASSES = (base.BaseVD, base.CloneableImageVD, base.MigrateVD,
                base.ManageableVD, base.ManageableSnapshotsVD,
                base.VolumeDriver)
CINDER_DIR = os.path.dirname(os.path.dirname(base.__file__))
# Modules that call the volume driver on the manager's behalf.
CALLER_SOURCES = ('volume/manager.py', 'volume/flows/manager/create_volume.py',
                  'volume/flows/manager/manage_existing.py',
                  'volume/flows/manager/manage_existing_snapshot.py',
                  'volume/volume_utils.py', 'utils.py', 'backup/manager.py',
                  'manager.py')
# Class-level facts the manager reads rather than calls.
NOT_CALLS = {'SUPPORTED', 'SUPPORTS_ACTIVE_ACTIVE', 'VERSION',
             'REPLICATION_FEATURE_CHECKERS', 'configuration', 'capabilities',
             'host', 'cluster_name', 'initialized', 'supported', 'db',
             'volume_opts'}
# Static/class helpers that need no instance state to forward.
STATIC = {'get_driver_options', 'validate_connector_has_setting',
          'clean_volume_file_locks', 'clean_snapshot_file_locks'}
# Methods where XHV does more than forward (covered by the functional
# tests); every other one must be a plain forward.
AUGMENTED = {'create_volume', 'create_volume_from_snapshot',
             'create_cloned_volume', 'create_volume_from_backup',
             'delete_volume', 'initialize_connection', 'terminate_connection',
             'clone_image', 'copy_image_to_volume', 'copy_volume_to_image',
             'migrate_volume', 'before_volume_copy', 'after_volume_copy',
             'update_migrated_volume', 'init_capabilities',
             'get_volume_stats', 'check_for_setup_error', 'set_initialized',
             'get_version', 'supports_replication_feature'}


def base_methods():
    """Public callables of Cinder 29's driver base classes."""
    names = set()
    for cls in BASE_CLASSES:
        for name, value in vars(cls).items():
            if name.startswith('_') or isinstance(value, property):
                continue
            if isinstance(value, (staticmethod, classmethod)) or \
                    callable(value):
                names.add(name)
    return names


def called_by_cinder():
    """Every ``driver.<name>`` the manager-side code uses."""
    names = set()
    pattern = re.compile(r'\bdriver\.(_?[a-z][a-z0-9_]*)\b')
    for relative in CALLER_SOURCES:
        with open(os.path.join(CINDER_DIR, relative)) as f:
            names.update(pattern.findall(f.read()))
    return names - NOT_CALLS


def manager_facing():
    return (base_methods() | called_by_cinder()) - STATIC


class _Recorder(base.VolumeDriver):
    """An inner driver that records every call and returns a marker."""

    calls = []

    def _update_volume_stats(self):
        self._stats = {'storage_protocol': 'iSCSI',
                       'volume_backend_name': 'rec',
                       'pools': [{'pool_name': 'p1'}, {'pool_name': 'p2'}]}


class _Plain(base.VolumeDriver):
    """An inner driver with only Cinder's base-class behaviour."""

    def _update_volume_stats(self):
        self._stats = {'storage_protocol': 'nfs'}


def _recording(name):
    def method(self, *args, **kwargs):
        _Recorder.calls.append((name, args, kwargs))
        return ('from-inner', name)
    method.__name__ = name
    return method


for _name in manager_facing() - AUGMENTED:
    setattr(_Recorder, _name, _recording(_name))


class ForwardingTest(test.TestCase):

    def _driver(self, inner='tests.unit.cinder.test_driver._Recorder',
                **overrides):
        group = 'xhvunit'
        config = configuration.Configuration(
            volume_manager.volume_backend_opts, config_group=group)
        config.append_config_values(xhv_opts.xhv_volume_opts)
        self.override_config('xhv_inner_volume_driver', inner, group=group)
        for key, value in overrides.items():
            self.override_config(key, value, group=group)
        _Recorder.calls = []
        return xhv_driver.XHVVolumeDriver(configuration=config, host='h@b',
                                          cluster_name=None,
                                          is_vol_db_empty=True,
                                          active_backend_id=None)

    def test_enumeration_sees_the_manager_calls(self):
        names = manager_facing()
        # A broken enumeration would pass vacuously: pin known members.
        for expected in ('create_volume', 'copy_volume_to_image',
                         'initialize_connection', 'migrate_volume',
                         'revert_to_snapshot', 'get_backup_device',
                         '_attach_volume', '_detach_volume',
                         '_create_temp_volume_from_snapshot',
                         'failover_host', 'create_group_from_src'):
            self.assertIn(expected, names)
        self.assertGreater(len(names), 70)

    def test_every_manager_facing_method_is_defined_explicitly(self):
        missing = sorted(name for name in manager_facing()
                         if name not in vars(xhv_driver.XHVVolumeDriver))
        self.assertEqual([], missing,
                         'forward these explicitly in XHVVolumeDriver')

    def test_signatures_match_cinder(self):
        for name in sorted(manager_facing()):
            reference = getattr(base.VolumeDriver, name, None)
            if reference is None or name == 'supports_replication_feature':
                continue
            ours = inspect.signature(
                getattr(xhv_driver.XHVVolumeDriver, name))
            theirs = inspect.signature(reference)
            self.assertEqual(list(theirs.parameters),
                             list(ours.parameters), name)

    def test_plain_methods_reach_the_inner_driver(self):
        drv = self._driver()
        checked = 0
        for name in sorted(manager_facing() - AUGMENTED):
            signature = inspect.signature(getattr(base.VolumeDriver, name))
            params = [p for p in signature.parameters.values()
                      if p.name != 'self' and p.kind in
                      (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            args = tuple('%s-%s' % (name, p.name) for p in params)
            _Recorder.calls = []
            result = getattr(drv, name)(*args)
            self.assertEqual(('from-inner', name), result, name)
            self.assertEqual(1, len(_Recorder.calls), name)
            called, c_args, c_kwargs = _Recorder.calls[0]
            self.assertEqual(name, called)
            bound = signature.bind(None, *c_args, **c_kwargs)
            bound.apply_defaults()
            expected = signature.bind(None, *args)
            expected.apply_defaults()
            self.assertEqual(expected.arguments, bound.arguments, name)
            checked += 1
        self.assertGreater(checked, 50)

    def test_capabilities_add_xhv_keys_everywhere(self):
        drv = self._driver()
        stats = drv.get_volume_stats(refresh=True)
        # What the installed families declare for this protocol and format.
        self.assertEqual(attach.attach_families('iSCSI', 'raw'),
                         stats['xhv_attach_families'])
        self.assertIn('kvm', stats['xhv_attach_families'])
        self.assertEqual('raw', stats['xhv_volume_format'])
        self.assertEqual('rec', stats['volume_backend_name'])
        for pool in stats['pools']:
            self.assertEqual('raw', pool['xhv_volume_format'])
            self.assertIn('vmdk', pool['xhv_image_formats'])
        drv.init_capabilities()
        self.assertEqual('raw', drv.capabilities['xhv_volume_format'])

    def test_configured_families_and_format_win(self):
        drv = self._driver(xhv_attach_families=['vmware'],
                           xhv_volume_format='vmdk')
        stats = drv.get_volume_stats(refresh=True)
        self.assertEqual(['vmware'], stats['xhv_attach_families'])
        self.assertEqual('vmdk', stats['xhv_volume_format'])

    def test_replication_follows_the_inner_driver(self):
        plain = self._driver(inner='tests.unit.cinder.test_driver._Plain')
        # XHV itself defines failover_host (to forward it): only the inner
        # driver's own support may count.
        self.assertFalse(plain.supports_replication_feature('v2.1'))
        self.assertFalse(plain.supports_replication_feature('a/a'))
        self.assertFalse(plain.SUPPORTS_ACTIVE_ACTIVE)
        replicating = self._driver()
        self.assertTrue(replicating.supports_replication_feature('v2.1'))
        self.assertTrue(replicating.supports_replication_feature('a/a'))

    def test_vendor_extras_reach_the_inner_driver(self):
        drv = self._driver()
        drv.inner_driver.vendor_extra = 'x'
        self.assertEqual('x', drv.vendor_extra)
        self.assertRaises(AttributeError, getattr, drv, 'no_such_thing')


class InnerDriverTest(test.TestCase):

    def test_short_names(self):
        self.assertIs(nfs.NfsDriver, inner_drivers.resolve('nfs'))
        self.assertIs(lvm.LVMVolumeDriver, inner_drivers.resolve('lvm'))
        self.assertIs(vmdk.VMwareVcVmdkDriver, inner_drivers.resolve('vmdk'))

    def test_dotted_paths(self):
        self.assertIs(nfs.NfsDriver, inner_drivers.resolve(
            'cinder.volume.drivers.nfs.NfsDriver'))
        self.assertIs(nfs.NfsDriver, inner_drivers.resolve(
            'cinder.volume.drivers.nfs:NfsDriver'))

    def test_unknown_name_lists_known_ones(self):
        err = self.assertRaises(exception.VolumeDriverException,
                                inner_drivers.resolve, 'nfz')
        self.assertIn('nfz', str(err))
        self.assertIn('lvm, nfs, vmdk', str(err))
        err = self.assertRaises(exception.VolumeDriverException,
                                inner_drivers.resolve,
                                'cinder.volume.drivers.nfs.NoSuch')
        self.assertIn('NoSuch', str(err))

    def test_refuses_to_wrap_itself(self):
        err = self.assertRaises(
            exception.VolumeDriverException, inner_drivers.build,
            'cinder_xhv.driver.XHVVolumeDriver',
            xhv_driver.XHVVolumeDriver)
        self.assertIn('XHV driver itself', str(err))

    def test_missing_name(self):
        self.assertRaises(exception.InvalidConfigurationValue,
                          inner_drivers.resolve, None)


class OptsTest(test.TestCase):

    def test_list_opts(self):
        groups = dict((getattr(g, 'name', g), opts)
                      for g, opts in xhv_opts.list_opts())
        names = {o.name for o in groups['backend_defaults']}
        self.assertEqual({'xhv_inner_volume_driver', 'xhv_attach_families',
                          'xhv_volume_format', 'xhv_vmdk_adapter_type'},
                         names)
        # The translation engine's [xhv] options are listed too.
        self.assertIn('max_virtual_size_gib',
                      {o.name for o in groups['xhv']})
        for opts in groups.values():
            for opt in opts:
                self.assertGreater(len(opt.help or ''), 20, opt.name)

    def test_attach_families_come_from_the_families_facts(self):
        # Every family opens raw NFS files in place (Hyper-V as a fixed
        # VHD, Xen as a raw VDI); qcow2 ones only KVM.
        self.assertEqual(['hyperv', 'kvm', 'vmware', 'xen'],
                         attach.attach_families('nfs', 'raw'))
        self.assertEqual(['kvm'], attach.attach_families('NFS', 'qcow2'))
        self.assertEqual([], attach.attach_families('nfs', 'vhdx'))
        # Block volumes are raw whatever the backend stores.
        self.assertEqual(['kvm'], attach.attach_families('iSCSI', 'qcow2'))
        self.assertEqual(['kvm'], attach.attach_families('FC'))
        # Nova's own VMware driver attaches Cinder's VMDK volumes; no XHV
        # family declares them.
        self.assertEqual([], attach.attach_families('vmdk'))
        self.assertEqual([], attach.attach_families('unknown'))


class GlanceFailureHintTest(test.TestCase):
    """The upload log names uWSGI's limit only for Glance's 5xx answers."""

    def test_server_errors_name_the_limit(self):
        hint = images.glance_failure_hint(
            glanceclient.exc.HTTPInternalServerError('boom'))
        self.assertIn('chunked-input-limit', hint)
        self.assertIn(str(glance_http.CHUNKSIZE), hint)
        self.assertEqual(glance_http.CHUNKSIZE, images.upload_chunk_size())
        for err in (glanceclient.exc.HTTPForbidden('no'),
                    glanceclient.exc.HTTPConflict('busy'),
                    exception.ImageNotFound(image_id='x'), OSError('disk')):
            self.assertEqual('', images.glance_failure_hint(err), err)


class ConnectorFamilyTest(test.TestCase):
    """initialize_connection's answer for the family in the connector."""

    class Volume(object):
        id = 'vol-1'

    def nfs_info(self, fmt):
        return {'driver_volume_type': 'nfs',
                'data': {'export': 'h:/e', 'name': 'volume-vol-1',
                         'format': fmt}}

    def test_stock_connectors_get_the_inner_answer_unchanged(self):
        info = self.nfs_info('qcow2')
        self.assertEqual(self.nfs_info('qcow2'), attach.for_connector(
            self.Volume(), {'host': 'h', 'instance': 'vm-1'}, info,
            None))

    def test_family_gets_annotated_info_for_what_it_opens(self):
        info = attach.for_connector(self.Volume(), {'xhv_family': 'vmware'},
                                    self.nfs_info('raw'), 'raw')
        self.assertEqual('vmware', info['data']['xhv_family'])
        self.assertEqual('raw', info['data']['format'])
        info = attach.for_connector(self.Volume(), {'xhv_family': 'kvm'},
                                    self.nfs_info('qcow2'), 'qcow2')
        self.assertEqual('kvm', info['data']['xhv_family'])
        for name in ('hyperv', 'xen'):
            info = attach.for_connector(self.Volume(), {'xhv_family': name},
                                        self.nfs_info('raw'), 'raw')
            self.assertEqual((name, 'raw'), (info['data']['xhv_family'],
                                             info['data']['format']))
            error = self.assertRaises(
                exception.VolumeBackendAPIException, attach.for_connector,
                self.Volume(), {'xhv_family': name}, self.nfs_info('qcow2'),
                'qcow2')
            self.assertIn('which the %s family does not attach' % name,
                          str(error))

    def test_refuses_what_the_family_cannot_open_with_the_reason(self):
        error = self.assertRaises(
            exception.VolumeBackendAPIException, attach.for_connector,
            self.Volume(), {'xhv_family': 'vmware'}, self.nfs_info('qcow2'),
            'qcow2')
        self.assertIn('stored as qcow2', str(error))
        self.assertIn('Families that do: kvm', str(error))
        self.assertIn('Retype', str(error))
        error = self.assertRaises(
            exception.VolumeBackendAPIException, attach.for_connector,
            self.Volume(), {'xhv_family': 'vmware'},
            {'driver_volume_type': 'iscsi', 'data': {}}, None)
        self.assertIn('iscsi', str(error))

    def test_unknown_family_is_a_bad_connector(self):
        self.assertRaises(exception.InvalidConnectorException,
                          attach.for_connector, self.Volume(),
                          {'xhv_family': 'nonesuch'}, self.nfs_info('raw'),
                          'raw')
