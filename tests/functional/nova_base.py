"""Nova's own functional harness with XHV computes on REAL hypervisors.

``XHVFunctionalTestCase`` builds on nova's
``integrated_helpers.ProviderUsageBaseTestCase`` (from the nova 34 wheel):
Placement, Glance, Neutron and Cinder fixtures, the API, conductor and
scheduler run in-process; computes are started with ``start_compute(host)``
and run ``compute_driver = xhv.XHVDriver`` with ``[xhv] backend =
<xhv_backend>`` unless told otherwise.  Fixes every backend needs are here:
pytest 8 and nova's ``_clear_attrs``, external locks in a temporary
``lock_path``, ``shutdown_timeout = 0``, privileged calls run in-process,
the real ``psutil.net_if_addrs`` / ``os.uname`` the harness poisons, and
the api-paste.ini of the installed Nova.

Hooks a backend's test base overrides (all optional):

``xhv_backend``
    The ``[xhv] backend`` name computes use.
``set_up_backend()``
    Start or configure the hypervisor (called at the end of ``setUp``;
    register cleanups with ``addCleanup``).  The per-host node identity is
    the hypervisor's business: several computes share one process here,
    so a test bed must give each host its own node name and uuid
    (``node_uuid_for(host)`` hands out one stable uuid per host per test).
``before_compute_start(host)``
    Runs right before each compute service of ``host`` starts, with
    ``CONF.host`` not yet switched; e.g. point the backend at this host's
    hypervisor endpoint.
``console_output(server)``
    Text the guest wrote to its console; default: the console-output API.
``hypervisor_guest_exists(server)``
    Whether the hypervisor still has the guest; used by
    ``assert_guest_gone``.  Default: not implemented.

``LibvirtFunctionalTestCase`` is the KVM test bed: real libvirtd (started
by tools/start-services), the [libvirt] virt_type and CPU settings that
really start a guest here (nova_xhv.guest_probe; printed once per run),
a private instances path readable by libvirt's qemu user, per-test domain
names, and removal of exactly the domains the test made.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import warnings

import fixtures
from nova import context as nova_context
from nova.tests import fixtures as nova_fixtures
from nova.tests.functional import integrated_helpers
import psutil

import nova_xhv.conf  # noqa: F401  registers [xhv] options
from tests.fixtures.wait import wait_for  # noqa: F401  (for harness tests)

# Last on the path: tools/aio is no package, its other modules shadow none.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), 'tools', 'aio'))
import own_domains  # noqa: E402

# The harness poisons these; the real libvirt driver needs them (init_host
# checks my_ip against the interfaces; get_arch reads uname).
_REAL_NET_IF_ADDRS = psutil.net_if_addrs
_REAL_UNAME = os.uname

XHV_DRIVER = 'xhv.XHVDriver'
STOCK_LIBVIRT_DRIVER = 'libvirt.LibvirtDriver'
# Where KVM tests keep instance folders; every parent must be searchable by
# libvirt's qemu user.
LIBVIRT_TEST_ROOT = os.environ.get('XHV_LIBVIRT_TEST_ROOT', '/tmp')


class XHVFunctionalTestCase(integrated_helpers.ProviderUsageBaseTestCase):
    """Nova's functional harness with XHV computes (see module doc)."""

    compute_driver = XHV_DRIVER
    xhv_backend = None
    microversion = 'latest'
    # Image caches and instance folders take external (file) locks.
    REQUIRES_LOCKING = True
    # An api-paste.ini of the test's own (None: the installed Nova's).
    api_paste_config = None
    # Polls (0.5 s apart) for a server to reach a state: Nova's default of
    # 10 suits its fake driver; real guests and disks on a loaded machine
    # (CI runs two lanes of tests on two cores) need more.
    SERVER_WAIT_POLLS = 240

    def _wait_for_server_parameter(self, server, expected_params,
                                   max_retries=10, **kwargs):
        return super()._wait_for_server_parameter(
            server, expected_params,
            max(max_retries, self.SERVER_WAIT_POLLS), **kwargs)

    def setUp(self):
        # Before the harness builds the API from it (as nova's own base
        # sets compute_driver); ConfFixture clears overrides at cleanup.
        self.flags(api_paste_config=self.api_paste_config or os.path.join(
            sys.prefix, 'etc', 'nova', 'api-paste.ini'), group='wsgi')
        super().setUp()
        if self.xhv_backend:
            self.flags(backend=self.xhv_backend, group='xhv')
        # Tiny test guests ignore ACPI: do not wait for a clean shutdown.
        self.flags(shutdown_timeout=0)
        self.useFixture(nova_fixtures.PrivsepFixture())
        self.stub_out('psutil.net_if_addrs', _REAL_NET_IF_ADDRS)
        self.stub_out('os.uname', _REAL_UNAME)
        self.ctxt = nova_context.get_admin_context()
        self._node_uuids = {}
        self.set_up_backend()

    def _clear_attrs(self):
        # nova's TestCase deletes instance attributes at cleanup, which
        # pytest 8 still needs for its report; there is no memory to save
        # in a short functional run.
        pass

    # -- hooks -------------------------------------------------------------

    def set_up_backend(self):
        pass

    def before_compute_start(self, host):
        pass

    def console_output(self, server):
        return self.api.post_server_action(
            server['id'], {'os-getConsoleOutput': {}})['output']

    def hypervisor_guest_exists(self, server):
        raise NotImplementedError()

    # -- helpers -----------------------------------------------------------

    def node_uuid_for(self, host):
        """One node uuid per host, stable across restarts in a test."""
        return self._node_uuids.setdefault(host, str(uuid.uuid4()))

    def start_compute(self, host, compute_driver=XHV_DRIVER, backend=None):
        """Start nova-compute for ``host`` with the given driver.

        Config is process-global and the driver reads it while the
        service starts, so it is set right before each start.
        """
        self._configure_compute(host, compute_driver, backend)
        return self._start_compute(host)

    def restart_compute(self, host, compute_driver=XHV_DRIVER, backend=None):
        """Stop ``host``'s compute and start a new service object for it.

        The new service builds a new driver from the current config; the
        hypervisor keeps its guests.
        """
        self._configure_compute(host, compute_driver, backend)
        compute = self.restart_compute_service(
            self.computes[host], keep_hypervisor_state=False)
        self.computes[host] = compute
        return compute

    def _configure_compute(self, host, compute_driver, backend):
        self.flags(compute_driver=compute_driver)
        if backend or self.xhv_backend:
            self.flags(backend=backend or self.xhv_backend, group='xhv')
        self.before_compute_start(host)

    def compute_node(self, host):
        nodes = self.admin_api.api_get(
            '/os-hypervisors/detail').body['hypervisors']
        matches = [n for n in nodes if n['service']['host'] == host]
        self.assertEqual(1, len(matches), nodes)
        return matches[0]

    def wait_for_console_marker(self, server, marker, timeout=60):
        """Wait until ``marker`` appears in the guest's console output."""
        if isinstance(marker, bytes):
            marker = marker.decode()
        return wait_for(lambda: marker in (self.console_output(server) or ''),
                        timeout, what='%r in the console of %s'
                        % (marker, server['id']))

    def assert_guest_gone(self, server, timeout=30):
        wait_for(lambda: not self.hypervisor_guest_exists(server), timeout,
                 what='guest of %s to leave the hypervisor' % server['id'])


def virsh(*args, check=True):
    result = subprocess.run(('virsh', '-c', 'qemu:///system') + args,
                            capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError('virsh %s failed: %s'
                             % (' '.join(args), result.stderr.strip()))
    return result.stdout


def libvirt_domains():
    """{name: uuid} of every domain libvirtd holds, running or not."""
    names = [n for n in virsh('list', '--all', '--name').split() if n]
    return {n: virsh('domuuid', n, check=False).strip() for n in names}


_CPU_CHOICE = []


def choose_cpu_config():
    """The [libvirt] CPU settings that start the test disk on this host.

    nova_xhv.guest_probe starts a throwaway guest with each candidate (or
    takes XHV_LIBVIRT_VIRT_TYPE / XHV_LIBVIRT_CPU_* from the environment);
    the choice and why are printed once per run, past pytest's capture.
    """
    if not _CPU_CHOICE:
        from nova_xhv import guest_probe

        try:
            choice = guest_probe.choose()
        except guest_probe.ProbeError as error:
            raise AssertionError('no libvirt CPU configuration starts a '
                                 'guest on this host: %s' % error)
        print(choice.line(), file=sys.__stderr__)
        if choice.config.virt_type != 'kvm':
            warnings.warn(choice.line())
        _CPU_CHOICE.append(choice.config)
    return _CPU_CHOICE[0]


class LibvirtFunctionalTestCase(XHVFunctionalTestCase):
    """Real libvirtd and KVM/TCG behind XHV's libvirt backend."""

    xhv_backend = 'libvirt'

    def set_up_backend(self):
        from nova.virt.libvirt import host as libvirt_host

        if shutil.which('virsh') is None:
            self.fail('virsh is missing: install libvirt-clients '
                      '(tools/install-deps)')
        try:
            libvirt_domains()
        except AssertionError as error:
            self.fail('libvirtd is not answering on qemu:///system; run '
                      'tools/start-services first (%s)' % error)
        cpu = choose_cpu_config()
        self.virt_type = cpu.virt_type
        self.flags(group='libvirt', **cpu.nova_options())

        # Instance folders and _base must be reachable by libvirt's qemu
        # user: not under the harness's private (0700) temporary folders.
        self.instances_path = tempfile.mkdtemp(prefix='xhv-instances-',
                                               dir=LIBVIRT_TEST_ROOT)
        os.chmod(self.instances_path, 0o755)
        self.addCleanup(shutil.rmtree, self.instances_path,
                        ignore_errors=True)
        self.flags(instances_path=self.instances_path)
        self.base_path = os.path.join(self.instances_path, '_base')
        # Domains of this test only: a unique prefix, removed at cleanup
        # (before their disks, after the compute services stopped).
        self.domain_prefix = 'xhv-%s' % uuid.uuid4().hex[:8]
        self.flags(instance_name_template=self.domain_prefix + '-%08x')
        self.addCleanup(self._remove_test_domains)
        # libvirtd is shared (the all-in-one cloud, other beds): this
        # test's computes count only its domains, else a new KVM compute
        # refuses to start while libvirtd holds any
        # (ComputeManager._sanity_check_new_host).
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.list_instance_domains',
            own_domains.keep_named(
                libvirt_host.Host.list_instance_domains,
                self.domain_prefix + '-')))

        # The harness replaces the libvirt event loop with an exit; events
        # are not needed here (power states are polled by the tests).
        self.stub_out('nova.virt.libvirt.host.Host._init_events',
                      lambda _self: None)
        # Several computes on one libvirtd: each Host answers with the node
        # name and uuid of the service that built it.
        test = self
        real_init = libvirt_host.Host.__init__

        def host_init(host_self, *args, **kwargs):
            real_init(host_self, *args, **kwargs)
            host_self.xhv_test_node = test.flags_host()

        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.__init__', host_init))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.get_hostname',
            lambda host_self: host_self.xhv_test_node))
        self.useFixture(fixtures.MonkeyPatch(
            'nova.virt.libvirt.host.Host.get_node_uuid',
            lambda host_self: test.node_uuid_for(host_self.xhv_test_node)))

    @staticmethod
    def flags_host():
        from nova import conf
        return conf.CONF.host

    def _remove_test_domains(self):
        for name in libvirt_domains():
            if name.startswith(self.domain_prefix + '-'):
                virsh('destroy', name, check=False)
                virsh('undefine', name, '--nvram', check=False)
        left = [n for n in libvirt_domains()
                if n.startswith(self.domain_prefix + '-')]
        if left:
            raise AssertionError('could not remove test domains %s' % left)

    def domain_name(self, server):
        return self._show_server_admin(server)['OS-EXT-SRV-ATTR:instance_name']

    def _show_server_admin(self, server):
        return self.admin_api.get_server(server['id'])

    def hypervisor_guest_exists(self, server):
        return server['id'] in libvirt_domains().values()

    def domain_state(self, server):
        return virsh('domstate', server['id'], check=False).strip()

    def instance_dir(self, server):
        server_uuid = server if isinstance(server, str) else server['id']
        return os.path.join(self.instances_path, server_uuid)

    def base_files(self):
        if not os.path.isdir(self.base_path):
            return set()
        return set(os.listdir(self.base_path))
