"""Nova's harness with a vSphere compute (vcsim) and a KVM compute (libvirtd).

Both computes run xhv.XHVDriver in one process: ``vmw1`` with the vmware
backend against this test's vcsim, ``kvm1`` with the libvirt backend on the
real libvirtd.  Each serves its exchange endpoint on an ephemeral
127.0.0.1 port; the source finds the destination's URL in the
destination's compute node stats, as in production.
"""

import copy
import json
import os
import re
import subprocess
import tempfile

import fixtures
from nova import context as nova_context
from nova import objects
import urllib3

from tests.fixtures import hyperv as hyperv_fixture
from tests.fixtures import vcsim as vcsim_fixture
from tests.functional import nova_base
from tests.functional.vmware import test_nova as vmware_nova

SECRET = 'xhv-test-exchange-secret'
VMW = 'vmw1'
KVM = 'kvm1'
FAKE = 'fake1'
HYPERV = 'hv1'


def same_guest_data(path_a, fmt_a, path_b, fmt_b):
    """qemu-img compare, sharing locks with a running guest."""
    result = subprocess.run(('qemu-img', 'compare', '-U', '-f', fmt_a, '-F',
                             fmt_b, path_a, path_b), capture_output=True,
                            text=True)
    if result.returncode not in (0, 1):
        raise AssertionError('qemu-img compare failed: %s' % result.stderr)
    return result.returncode == 0


def qemu_img_info(path, fmt):
    out = subprocess.run(('qemu-img', 'info', '--output=json', '-U', '-f',
                          fmt, path), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


class CrossHypervisorTestCase(vmware_nova.VMwareFunctionalTestCase,
                              nova_base.LibvirtFunctionalTestCase):
    """vcsim + libvirtd computes behind XHV."""

    xhv_backend = None
    # The exchange over HTTPS with a private CA, as operators run it; a
    # test case sets False to exercise plain HTTP (isolated networks).
    exchange_tls = True
    # False: a case that starts no KVM compute skips the libvirtd bed (it
    # then needs no /tmp/xhv-kvm.lock and no idle libvirtd).
    uses_kvm = True

    def set_up_backend(self):
        # The harness's wsgi-intercept replaces urllib3's HTTPS connection
        # class with one that breaks every real HTTPS request made through
        # requests (cert_reqs); its fixtures only intercept plain HTTP.
        self.useFixture(fixtures.MonkeyPatch(
            'urllib3.connectionpool.HTTPSConnectionPool.ConnectionCls',
            urllib3.connection.HTTPSConnection))
        if self.uses_kvm:
            nova_base.LibvirtFunctionalTestCase.set_up_backend(self)
        vmware_nova.VMwareFunctionalTestCase.set_up_backend(self)
        self.state_dir = tempfile.mkdtemp(prefix='xhv-moves-',
                                          dir=self.workdir)
        options = dict(
            exchange_secret=SECRET, exchange_bind_host='127.0.0.1',
            exchange_port=0, exchange_advertise_host='127.0.0.1',
            exchange_use_tls=self.exchange_tls,
            migration_state_dir=self.state_dir,
            migration_poll_interval=0.1,
            migration_stage_timeout=120)
        if self.exchange_tls:
            # What an operator gets by default: HTTPS, peers verified
            # against a private CA (not in the system trust store), under
            # eventlet as Nova's functional harness runs.
            tls_dir = tempfile.mkdtemp(prefix='xhv-exchange-tls-',
                                       dir=self.workdir)
            self.exchange_ca, cert, key = \
                vcsim_fixture.make_ca_and_server_cert(tls_dir)
            options.update(exchange_cert_file=cert, exchange_key_file=key,
                           exchange_ca_file=self.exchange_ca)
        for name, value in options.items():
            self.flags(group='xhv', **{name: value})
        # The fake family's test bed: a folder.
        self.fake_dir = tempfile.mkdtemp(prefix='xhv-fake-', dir=self.workdir)
        self.flags(group='xhv_fake', disk_dir=self.fake_dir)

    def start_vmware(self, host=VMW):
        return self.start_compute(host, backend='vmware')

    def start_kvm(self, host=KVM):
        return self.start_compute(host, backend='libvirt')

    def start_fake(self, host=FAKE):
        return self.start_compute(host, backend='fake')

    def start_hyperv(self, host=HYPERV, volume_export=None,
                     map_volume_export=True):
        """A Hyper-V compute on this test's simulated host (+ Samba).

        ``volume_export``: a folder standing for an NFS export of this
        machine (127.0.0.1:<folder>) that Samba also shares to the host,
        as a dual-protocol filer would, for volumes;
        ``map_volume_export`` False: the compute's ``volume_shares`` does
        not name it (a misconfigured compute).
        """
        if getattr(self, 'hyperv', None) is None:
            self.hyperv = hyperv_fixture.HyperVSimulator(
                volume_dir=volume_export)
            info = self.hyperv.start()
            self.addCleanup(self.hyperv.stop)
            for name, value in dict(
                    host=info.host, port=info.port, username=info.username,
                    password=info.password, ca_file=info.ca_file,
                    vm_path=info.storage_path, smb_share=info.share,
                    smb_port=info.smb_port,
                    volume_shares=['127.0.0.1:%s=%s' % (
                        info.volume_dir, info.volume_unc)]
                    if map_volume_export else [],
                    staging_dir=os.path.join(self.workdir, 'hyperv')).items():
                self.flags(group='xhv_hyperv', **{name: value})
            # Several computes share this process: the host gets its own
            # node uuid (Nova's default is one per process).
            self.stub_out('nova_xhv.backends.hyperv.backend.HyperVBackend.'
                          'node_uuid',
                          lambda backend: self.node_uuid_for(host))
        return self.start_compute(host, backend='hyperv')

    def hyperv_disk(self, server):
        return os.path.join(self.hyperv.info.storage_dir, server['id'],
                            'disk-0.vhdx')

    def fake_disk(self, server, host=FAKE):
        return os.path.join(self.fake_dir, host, server['id'], 'disk-0.vhdx')

    def hypervisor_guest_exists(self, server):
        return (vmware_nova.VMwareFunctionalTestCase.hypervisor_guest_exists(
            self, server)
            or nova_base.LibvirtFunctionalTestCase.hypervisor_guest_exists(
                self, server)
            or os.path.exists(os.path.dirname(self.fake_disk(server)))
            or (getattr(self, 'hyperv', None) is not None
                and server['id'] in self.hyperv.vms()))

    def console_output(self, server):
        path = os.path.join(self.instance_dir(server), 'console.log')
        if not os.path.exists(path):
            return ''
        with open(path, 'rb') as f:
            return f.read().decode('latin-1')

    # -- helpers -----------------------------------------------------------

    def make_vmware_image(self, properties=None, **kwargs):
        """The tiny bootable disk as a streamOptimized vmdk in Glance."""
        props = {'vmware_disktype': 'streamOptimized',
                 'vmware_adaptertype': 'lsiLogic'}
        props.update(properties or {})
        return self.make_image('vmdk', props, **kwargs)

    def make_kvm_image(self, properties=None, **kwargs):
        """The tiny bootable disk as a qcow2 in Glance."""
        kwargs.setdefault('name', 'kvm-guest')
        return self.make_image('qcow2', properties, **kwargs)

    def boot_on(self, host, image_id):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(image_uuid=image_id, flavor_id=flavor,
                                     networks='none', host=host)
        self.assertEqual(host, server['OS-EXT-SRV-ATTR:host'])
        return server

    def instance(self, server):
        ctxt = self.cell_context()
        return objects.Instance.get_by_uuid(
            ctxt, server['id'], expected_attrs=['system_metadata'])

    def cell_context(self):
        ctxt = copy.copy(self.ctxt)
        nova_context.set_target_cell(ctxt, self.cell_mappings['cell1'])
        return ctxt

    def exchange_url(self, host):
        return self.computes[host].manager.driver.moves.server.url

    def kvm_disk(self, server):
        return os.path.join(self.instance_dir(server), 'disk')

    def kvm_disk_bus(self, server):
        xml = nova_base.virsh('dumpxml', server['id'])
        return re.findall(r"<target dev='(\w+)' bus='(\w+)'", xml)

    def staged_leftovers(self, host):
        folder = os.path.join(self.state_dir, host)
        if not os.path.isdir(folder):
            return []
        return sorted(os.listdir(folder))

    def vmware_vm_names(self):
        view = self.si.content.viewManager.CreateContainerView(
            self.si.content.rootFolder,
            [vmware_nova.vim.VirtualMachine], True)
        try:
            return sorted(vm.name for vm in view.view)
        finally:
            view.Destroy()

    def action_events(self, server, action='migrate'):
        actions = self.api.get_instance_actions(server['id'])
        found = [a for a in actions if a['action'] == action]
        if not found:
            return []
        detail = self.api.get_instance_action_details(
            server['id'], found[0]['request_id'])
        return [e['event'] for e in detail.get('events', [])]
