"""XHVDriver: loading one backend, clear errors, capability forwarding."""

import importlib.metadata
import logging
from unittest import mock

import fixtures
from nova import exception
from oslo_config import fixture as config_fixture
import testtools

from nova_xhv.backends.libvirt import backend as libvirt_backend
import nova_xhv.conf
from nova_xhv import driver as xhv_driver
from tests.unit.driver import fake_backends

FAKE_MODULE = 'tests.unit.driver.fake_backends'
STOCK_LIBVIRT = {'libvirt': 'nova_xhv.backends.libvirt.backend:LibvirtBackend'}
FAKE_ENTRY_POINTS = {
    'recording': FAKE_MODULE + ':RecordingBackend',
    'not-a-backend': FAKE_MODULE + ':NotABackend',
    'broken': FAKE_MODULE + ':BrokenBackend',
    # Same name as a real extra, so the hint can name it.
    'vmware': 'tests.unit.driver.missing_dependency_backend:Backend',
    'thirdparty': 'tests.unit.driver.missing_dependency_backend:Backend',
}


class DriverTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(nova_xhv.conf.CONF))
        # Everything logged, by any logger: the operator must see one line.
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.use_entry_points(FAKE_ENTRY_POINTS)

    def use_entry_points(self, backends):
        """Let stevedore see exactly ``backends`` ({name: 'module:Class'})."""
        entry_points = [
            importlib.metadata.EntryPoint(
                name=name, value=value, group=xhv_driver.BACKEND_NAMESPACE)
            for name, value in backends.items()]
        self.useFixture(fixtures.MockPatch(
            'stevedore.extension.ExtensionManager.list_entry_points',
            return_value=entry_points))

    def load(self, name):
        self.conf.config(backend=name, group='xhv')
        return xhv_driver.XHVDriver(mock.sentinel.virtapi)

    def error_lines(self):
        return [line for line in self.log.output.splitlines()
                if 'runs the' not in line and 'XHV policy' not in line]

    def assert_one_clear_error(self, name, *fragments):
        error = self.assertRaises(xhv_driver.BackendError, self.load, name)
        message = str(error)
        self.assertIn('[xhv] backend', message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        self.assertNotIn('\n', message)
        self.assertEqual([message], self.error_lines())
        return message


class TestLoading(DriverTestCase):

    def test_loads_the_configured_backend_with_virtapi(self):
        driver = self.load('recording')
        self.assertIsInstance(driver.backend, fake_backends.RecordingBackend)
        self.assertIs(mock.sentinel.virtapi, driver.backend.virtapi)
        self.assertIs(mock.sentinel.virtapi, driver.virtapi)
        self.assertFalse(driver.backend.read_only)
        self.assertEqual('ready on h1', driver.init_host('h1'))

    def test_default_backend_is_stock_libvirt(self):
        self.use_entry_points(STOCK_LIBVIRT)
        driver = xhv_driver.XHVDriver(mock.sentinel.virtapi)
        self.assertEqual('libvirt', driver.backend_name)
        self.assertIsInstance(driver.backend, libvirt_backend.LibvirtBackend)
        self.assertEqual('kvm', driver.backend.family)
        self.assertEqual('qcow2', driver.backend.native_format)

    def test_unknown_name(self):
        message = self.assert_one_clear_error('nope', "'nope'", 'Unknown')
        # The installed backends are listed for the operator.
        self.assertIn('libvirt', message)

    def test_missing_dependency_names_the_extra(self):
        self.assert_one_clear_error(
            'vmware', 'xhv_client_library_that_is_not_installed',
            'pip install openstack-xhv[vmware]')

    def test_missing_dependency_without_an_extra(self):
        message = self.assert_one_clear_error(
            'thirdparty', 'xhv_client_library_that_is_not_installed',
            'install the package that provides it')
        self.assertNotIn('pip install', message)

    def test_backend_constructor_failure(self):
        self.assert_one_clear_error(
            'broken', 'RuntimeError', 'cannot parse [xhv_test] endpoint')

    def test_not_a_backend(self):
        self.assert_one_clear_error('not-a-backend', 'NotABackend',
                                    'nova_xhv.backends.base.Backend')

    def test_init_host_failure_names_the_option(self):
        driver = self.load('recording')
        driver.backend.init_host_error = exception.HypervisorUnavailable()
        error = self.assertRaises(xhv_driver.BackendError, driver.init_host,
                                  'h1')
        message = str(error)
        self.assertIn('[xhv] backend', message)
        self.assertIn("'recording'", message)
        self.assertIn('HypervisorUnavailable', message)
        self.assertIn('h1', message)
        self.assertIsInstance(error.__cause__,
                              exception.HypervisorUnavailable)
        self.assertEqual([message], self.error_lines())


class TestCapabilities(DriverTestCase):

    def test_capabilities_are_the_backends(self):
        driver = self.load('recording')
        self.assertIs(driver.backend.capabilities, driver.capabilities)
        # Later changes by the backend show through.
        driver.backend.capabilities = {'supports_image_type_vmdk': True}
        self.assertEqual({'supports_image_type_vmdk': True},
                         driver.capabilities)
        self.assertTrue(driver.rebalances_nodes)

    def test_traits_come_from_the_backend_capabilities(self):
        driver = self.load('recording')
        traits = driver.capabilities_as_traits()
        self.assertIs(True, traits['COMPUTE_IMAGE_TYPE_RAW'])
        self.assertNotIn('COMPUTE_IMAGE_TYPE_QCOW2', traits)

    def test_libvirt_capabilities_are_the_stock_drivers(self):
        backend = libvirt_backend.LibvirtBackend(mock.sentinel.virtapi)
        self.assertIs(backend.stock_driver.capabilities,
                      backend.capabilities)
        self.assertTrue(backend.capabilities['supports_image_type_qcow2'])


class TestLibvirtConnectionFailure(DriverTestCase):
    """A real libvirt client that cannot reach libvirtd."""

    def test_init_host_names_the_option(self):
        self.use_entry_points(STOCK_LIBVIRT)
        # No event threads in a unit test; nova-compute sets up the
        # notifier that reports the broken connection.
        self.useFixture(fixtures.MockPatch(
            'nova.virt.libvirt.host.Host._init_events'))
        self.useFixture(fixtures.MockPatch('nova.rpc.get_notifier'))
        self.useFixture(fixtures.MockPatch(
            'nova.compute.utils.notify_about_libvirt_connect_error'))
        socket = self.useFixture(fixtures.TempDir()).path + '/no-libvirtd'
        self.conf.config(connection_uri='qemu:///system?socket=' + socket,
                         group='libvirt')
        driver = self.load('libvirt')
        error = self.assertRaises(xhv_driver.BackendError, driver.init_host,
                                  'cmp1')
        message = str(error)
        self.assertIn("XHV backend 'libvirt' ([xhv] backend) could not start "
                      "on host cmp1", message)
        self.assertIn('HypervisorUnavailable', message)
        self.assertIn('Check that its hypervisor is running', message)
        self.assertIn(message, self.log.output)


class TestBrokenBackendModule(DriverTestCase):

    def test_an_import_error_inside_xhv_is_not_a_missing_package(self):
        self.use_entry_points({'vmware': 'nova_xhv.backends.no_such_module:B'})
        message = self.assert_one_clear_error(
            'vmware', 'failed to load', 'ModuleNotFoundError',
            'nova_xhv.backends.no_such_module')
        self.assertNotIn('pip install', message)
