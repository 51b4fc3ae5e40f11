"""A real Linux guest gets its Neutron port's DHCP lease from real OVN.

OVS + OVN in userspace (tests/fixtures/ovn.py), neutron-server with
``mechanism_drivers = ovn,xhv`` on that OVN (tests/fixtures/neutron.py),
and XHV's Linux test guest (tests/fixtures/linux_guest) booted by QEMU
with the port's MAC on a tap that carries the port id (``iface-id``), as
os-vif plugs a KVM guest.  The guest prints its NIC's MAC and the lease it
got from OVN's built-in DHCP; both must be Neutron's.  Then the same port
on a new tap with another NIC model -- what a move's destination plugs --
gets the same address.

KVM or TCG is chosen by starting the guest: KVM first, TCG when the kernel
does not come up under KVM within a few seconds (nested KVM on some hosts
cannot run a Linux kernel).
"""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.fixtures import linux_guest
from tests.fixtures import neutron as neutron_fixture
from tests.fixtures import ovn as ovn_fixture

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not ovn_fixture.available(),
                       reason='Open vSwitch/OVN are not installed: '
                              'tools/install-deps installs %s'
                              % ', '.join(ovn_fixture.PACKAGES)),
]

KVM_HOST = 'kvm-ovn-1'
VC_HOST = 'vc-compute-1'
KVM_TRY_SECONDS = 15
LEASE_SECONDS = 120


@pytest.fixture(scope='module')
def cloud():
    bed = ovn_fixture.OVNBed(KVM_HOST).start()
    server = neutron_fixture.NeutronServer(
        mechanism_drivers='ovn,xhv', tenant_types='geneve',
        service_plugins='ovn-router',
        ml2_xhv={'host_families': '%s:vmware' % VC_HOST,
                 'physical_network_mappings': 'vmware:public:DVS0'},
        extra_ml2='\n[ovn]\novn_nb_connection = %s\n'
                  'ovn_sb_connection = %s\novn_metadata_enabled = false\n'
                  % (bed.nb, bed.sb))
    try:
        server.start()
        yield bed, server
    finally:
        server.stop()
        bed.stop()


class Guest(object):
    """QEMU running the Linux test guest on one tap."""

    def __init__(self, disk, tap, mac, model, accel):
        self.dir = tempfile.mkdtemp(prefix='xhv-lease-')
        self.console = os.path.join(self.dir, 'console.log')
        overlay = os.path.join(self.dir, 'disk.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                        'raw', '-b', disk, overlay], check=True)
        self.proc = subprocess.Popen([
            'qemu-system-x86_64', '-accel', accel, '-m', '256',
            '-display', 'none', '-no-user-config', '-nodefaults',
            '-serial', 'file:' + self.console,
            '-drive', 'file=%s,format=qcow2,if=ide' % overlay,
            '-netdev', 'tap,id=n0,ifname=%s,script=no,downscript=no' % tap,
            '-device', '%s,netdev=n0,mac=%s' % (model, mac)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def text(self):
        try:
            with open(self.console, 'rb') as f:
                return f.read().decode('latin-1')
        except OSError:
            return ''

    def wait_for(self, marker, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if marker in self.text():
                return True
            if self.proc.poll() is not None:
                raise AssertionError('qemu exited: %s' % self.proc.stderr
                                     .read().decode()[-1000:])
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _boot_for_lease(disk, tap, mac, model):
    """Start the guest (KVM, else TCG); its console once it has a lease."""
    for accel in ('kvm', 'tcg'):
        if accel == 'kvm' and not os.path.exists('/dev/kvm'):
            continue
        guest = Guest(disk, tap, mac, model, accel)
        try:
            if accel == 'kvm' and not guest.wait_for('XHV-GUEST-UP',
                                                     KVM_TRY_SECONDS):
                continue  # the kernel does not run under this KVM
            assert guest.wait_for(linux_guest.DONE, LEASE_SECONDS), \
                guest.text()[-2000:]
            return guest.text()
        finally:
            guest.stop()
    raise AssertionError('the Linux test guest started neither under KVM '
                         'nor under TCG')


def test_a_kvm_guest_gets_the_lease_of_its_port_and_keeps_it_on_a_new_tap(
        cloud):
    bed, neutron = cloud
    disk = linux_guest.guest_disk()
    net = neutron.request('POST', '/v2.0/networks', {
        'network': {'name': 'lease-net'}})['network']
    neutron.request('POST', '/v2.0/subnets', {'subnet': {
        'network_id': net['id'], 'ip_version': 4,
        'cidr': '10.31.0.0/24'}})
    # Port security on, Neutron's default security group: OVN enforces
    # it (conntrack in the userspace datapath) and DHCP passes.
    port = neutron.port(net['id'], KVM_HOST, device_owner='compute:nova')
    assert port['port_security_enabled'] and port['security_groups']
    assert (port['binding:vif_type'], port['binding:host_id']) == \
        ('ovs', KVM_HOST)
    mac, ip = port['mac_address'], port['fixed_ips'][0]['ip_address']

    console = _boot_for_lease(disk, bed.add_tap(port['id']), mac,
                              'virtio-net-pci')
    assert linux_guest.nics(console) == {mac: 'virtio_net'}
    assert linux_guest.leases(console) == {mac: ip}

    # What a move's destination plugs: the same port on a new tap, another
    # NIC model.
    console = _boot_for_lease(disk, bed.add_tap(port['id']), mac, 'e1000')
    assert linux_guest.nics(console) == {mac: 'e1000'}
    assert linux_guest.leases(console) == {mac: ip}


def test_ovn_leaves_vsphere_hosts_to_xhv(cloud):
    _bed, neutron = cloud
    try:
        net, _subnet = neutron.network('vlan-net', network_type='vlan',
                                       segmentation_id=150,
                                       cidr='10.32.0.0/24')
        port = neutron.port(net['id'], VC_HOST, device_owner='compute:nova')
    except neutron_fixture.NeutronError:
        print(neutron.log_tail(6000))
        raise
    assert port['binding:vif_type'] == 'dvs'
    assert port['binding:vif_details']['bound_drivers'] == {'0': 'xhv'}
    assert port['binding:vif_details']['dvs_port_group_name'] == \
        'xhv-public-150'
