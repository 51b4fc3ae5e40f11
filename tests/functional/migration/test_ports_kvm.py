"""vSphere -> KVM with a port: the guest on KVM gets its port's lease.

Nova's harness with a vSphere compute (vcsim) and a KVM compute
(libvirtd); the server runs XHV's Linux test guest
(tests/fixtures/linux_guest).  The KVM compute's network is real: Open
vSwitch + OVN in userspace (tests/fixtures/ovn.py), its chassis named
``kvm1``; Nova's libvirt driver plugs the port with os-vif into that OVS
(``ovs_create_tap``: a tap carrying the port id as ``iface-id``) and the
guest asks OVN's built-in DHCP for its address.

Neutron is the harness's NeutronFixture: the binding of ``vmw1`` is made
by XHV's ML2 driver (test_ports.XHVBindingNeutron); for ``kvm1`` it hands
out what Neutron's OVN driver binds (vif_type ovs, the OVN bridge,
netdev datapath, create the tap), and the test writes the port's logical
switch port and DHCP options into OVN's northbound database as Neutron's
OVN driver would (tests/functional/neutron/test_ovn_lease.py runs that
driver for real).
"""

import os
import shutil
import subprocess
import time

import fixtures
from nova import conf as nova_conf
from nova.tests import fixtures as nova_fixtures
import os_vif
from vif_plug_ovs import ovs as vif_ovs
from vif_plug_ovs import privsep as ovs_privsep

from tests.fixtures import linux_guest
from tests.fixtures import ovn as ovn_fixture
from tests.functional.migration import base
from tests.functional.migration import test_ports
from tests.functional import nova_base

SUBNET = nova_fixtures.NeutronFixture.subnet_1


def _kvm_runs_linux(disk):
    """Does this host's KVM start the Linux guest (else TCG)?"""
    log = os.path.join(os.path.dirname(disk), 'kvm-probe.log')
    if not os.path.exists('/dev/kvm'):
        return False
    proc = subprocess.Popen(
        ['qemu-system-x86_64', '-accel', 'kvm', '-m', '256', '-display',
         'none', '-no-user-config', '-nodefaults', '-serial', 'file:' + log,
         '-drive', 'file=%s,format=raw,if=ide,snapshot=on' % disk,
         '-nic', 'none'], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(log) and b'XHV-GUEST-UP' in open(
                    log, 'rb').read():
                return True
            time.sleep(0.2)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if os.path.exists(log):
            os.unlink(log)


class TestVsphereToKVMKeepsTheLease(test_ports.PortChecks,
                                    base.CrossHypervisorTestCase):

    def set_up_backend(self):
        super().set_up_backend()
        self.guest_disk = linux_guest.guest_disk()
        if not _kvm_runs_linux(self.guest_disk):
            self.flags(group='libvirt', virt_type='qemu', cpu_mode='none')
        self.ovn = ovn_fixture.OVNBed(base.KVM).start()
        self.addCleanup(self.ovn.stop)
        # os-vif builds its OVS plugin (and its ovsdb connection) once per
        # process: a fresh one, registered now, talks to this bed's OVS.
        self.useFixture(fixtures.MonkeyPatch('os_vif._EXT_MANAGER', None))
        # ovsdbapp keeps the first connection on the class, for ever.
        self.useFixture(fixtures.MonkeyPatch(
            'vif_plug_ovs.ovsdb.impl_idl.NeutronOvsdbIdl._ovsdb_connection',
            None))
        nova_conf.CONF.register_opts(vif_ovs.OvsPlugin.CONFIG_OPTS,
                                     group='os_vif_ovs')
        self.flags(group='os_vif_ovs',
                   ovsdb_connection=self.ovn.ovs_db)
        os_vif.initialize()  # what nova-compute's main does
        # os-vif's own privsep context, in-process like Nova's here.
        ovs_privsep.vif_plug.set_client_mode(False)
        self.addCleanup(ovs_privsep.vif_plug.set_client_mode, True)

    def setUp(self):
        super().setUp()
        self.binding = test_ports.XHVBindingNeutron(self.neutron, others={
            base.KVM: ('ovs', {
                'port_filter': True, 'connectivity': 'l2',
                'ovs_create_tap': True, 'bridge_name': self.ovn.bridge,
                'datapath_type': 'netdev'})})
        self.flags(group='xhv_vmware', create_port_groups=True)
        self.start_vmware()
        self.start_kvm()

    def _ovn_port(self, port):
        nb = ['ovn-nbctl', '--db=' + self.ovn.nb, '--timeout=20']
        run = self.ovn._run
        run(*nb, 'ls-add', 'net-1')
        options = run(*nb, 'dhcp-options-create', SUBNET['cidr']).strip()
        if not options:
            options = run(*nb, '--bare', '--columns=_uuid', 'find',
                          'DHCP_Options',
                          'cidr="%s"' % SUBNET['cidr']).strip()
        run(*nb, 'dhcp-options-set-options', options, 'lease_time=3600',
            'router=%s' % SUBNET['gateway_ip'],
            'server_id=%s' % SUBNET['gateway_ip'],
            'server_mac=fa:16:3e:00:00:01', 'mtu=1400')
        ip = port['fixed_ips'][0]['ip_address']
        run(*nb, 'lsp-add', 'net-1', port['id'])
        run(*nb, 'lsp-set-addresses', port['id'],
            '%s %s' % (port['mac_address'], ip))
        run(*nb, 'lsp-set-dhcpv4-options', port['id'], options)
        return ip

    def test_the_moved_guest_leases_the_ip_of_its_port(self):
        image_id, _raw = self.make_vmware_image(
            name='linux-guest',
            make_disk=lambda raw: shutil.copyfile(self.guest_disk, raw))
        server = self._boot(
            base.VMW, image_id)
        port, = self._ports(server)
        ip = self._ovn_port(port)

        server = self._migrate_server(server, host=base.KVM)
        moved, = self._ports(server)
        self.assertEqual((port['id'], port['mac_address'], base.KVM, 'ovs'),
                         (moved['id'], moved['mac_address'],
                          moved['binding:host_id'],
                          moved['binding:vif_type']))
        console = nova_base.wait_for(
            lambda: (linux_guest.DONE in self.console_output(server)
                     and self.console_output(server)),
            180, 1, 'the guest to finish DHCP')
        self.assertEqual({port['mac_address']: ip},
                         linux_guest.leases(console), console[-1500:])

        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        back, = self._ports(server)
        self.assertEqual((base.VMW, 'dvs'), (back['binding:host_id'],
                                             back['binding:vif_type']))
        self._delete_server(server)

    def test_kvm_to_vsphere_plugs_the_same_mac_on_the_segment_port_group(
            self):
        image_id, _raw = self.make_kvm_image(
            name='linux-guest-kvm',
            make_disk=lambda raw: shutil.copyfile(self.guest_disk, raw))
        server = self._boot(
            base.KVM, image_id)
        port, = self._ports(server)
        self.assertEqual((base.KVM, 'ovs'), (port['binding:host_id'],
                                             port['binding:vif_type']))
        kvm = self.computes[base.KVM].manager.driver.backend
        self.assertEqual([port['mac_address']], [
            mac for _id, mac in kvm.plugged_ports(self.instance(server))])

        server = self._migrate_server(server, host=base.VMW)
        self._assert_on_vsphere(server, self._ports(server)[0])

        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.KVM, server['OS-EXT-SRV-ATTR:host'])
        back, = self._ports(server)
        self.assertEqual((base.KVM, 'ovs'), (back['binding:host_id'],
                                             back['binding:vif_type']))
        self.assertEqual([port['mac_address']], [
            mac for _id, mac in kvm.plugged_ports(self.instance(server))])
        self._delete_server(server)
