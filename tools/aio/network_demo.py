"""The demo's network steps: a server keeps its port across vSphere -> KVM.

Every step an ``openstack --os-cloud xhv-aio`` call: a VLAN network on
physical network ``public`` and its subnet; XHV's Linux test guest
(tests/fixtures/linux_guest) uploaded as a streamOptimized vmdk and booted
on the vSphere compute with a port on that network (XHV's ML2 driver binds
it: ``vif_type=dvs``, port group xhv-public-<VLAN>); ``server migrate
--host`` the KVM compute and confirm (Nova rebinds the port: OVN, os-vif
plugs it into the all-in-one's Open vSwitch); then the guest's serial
console (``console log show``) must name a NIC with the port's MAC and the
DHCP lease of the port's fixed IP, answered by OVN.  The port's id, MAC,
IP and binding are printed before and after the move, as lines the smoke
test reads::

    port before: id=<id> mac=<mac> ip=<ip> host=aio-vmware vif_type=dvs ...
"""

import os
import re
import subprocess
import sys
import tempfile
import time

import demo as demo_mod  # its StepFailed, at call time (demo imports us)
import services

PREFIX = services.DEMO_PREFIX
NETWORK = PREFIX + 'net'
SUBNET = PREFIX + 'subnet'
VLAN = 101
CIDR = '10.77.0.0/24'
IMAGE = PREFIX + 'linux'
FLAVOR = 'xhv-linux'  # the guest's kernel needs more than xhv-tiny's 64 MB
SERVER = PREFIX + 'net-server'
LEASE_TIMEOUT = 300  # TCG boots the guest to a lease in ~10 s when idle
PORT_LINE = re.compile(
    r'port (before|after): id=(\S+) mac=(\S+) ip=(\S+) host=(\S+) '
    r'vif_type=(\S+)')


def _linux_guest():
    sys.path.insert(0, services.TOP)
    from tests.fixtures import linux_guest
    return linux_guest


class NetworkDemo(object):
    def __init__(self, demo):
        self.demo = demo
        self.cli = demo.cli
        self.before = None

    def network_create(self):
        """network create (a VLAN on public) and subnet create."""
        for old in self.cli('network', 'list', '--name', NETWORK,
                            parse=True):
            # An earlier demo's: prepare deleted its servers and Nova
            # their ports.
            self.cli('network', 'delete', old['ID'])
        net = self.cli('network', 'create', '--share',
                       '--provider-network-type', 'vlan',
                       '--provider-physical-network', 'public',
                       '--provider-segment', str(VLAN), NETWORK, parse=True)
        subnet = self.cli('subnet', 'create', '--network', NETWORK,
                          '--subnet-range', CIDR, SUBNET, parse=True)
        print('network %s: %s VLAN %s on %s; subnet %s %s, DHCP %s' % (
            NETWORK, net['id'], net['provider:segmentation_id'],
            net['provider:physical_network'], SUBNET, subnet['cidr'],
            subnet['enable_dhcp']))
        return net

    def image_create(self):
        """XHV's Linux test guest as a streamOptimized vmdk image."""
        disk = _linux_guest().guest_disk()
        for image in self.cli('image', 'list', '--name', IMAGE, parse=True):
            self.cli('image', 'delete', image['ID'])
        flavors = {f['Name'] for f in self.cli('flavor', 'list', '--all',
                                               parse=True)}
        if FLAVOR not in flavors:
            self.cli('flavor', 'create', '--ram', '256', '--disk', '1',
                     '--vcpus', '1', FLAVOR)
        with tempfile.TemporaryDirectory(prefix='xhv-aio-') as tmp:
            vmdk = os.path.join(tmp, 'linux.vmdk')
            subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk',
                            '-o', 'subformat=streamOptimized', disk, vmdk],
                           check=True)
            return self.cli('image', 'create', '--disk-format', 'vmdk',
                            '--container-format', 'bare', '--file', vmdk,
                            '--property', 'vmware_disktype=streamOptimized',
                            '--property', 'vmware_adaptertype=lsiLogic',
                            IMAGE, parse=True)

    def port(self, when):
        """The server's one port, printed as a ``port <when>:`` line."""
        ports = self.cli('port', 'list', '--server', SERVER, parse=True)
        if len(ports) != 1:
            raise demo_mod.StepFailed(
                '%s has %d ports: %s' % (SERVER, len(ports), ports))
        port = self.cli('port', 'show', ports[0]['ID'], parse=True)
        ips = [ip['ip_address'] for ip in port['fixed_ips']]
        print('port %s: id=%s mac=%s ip=%s host=%s vif_type=%s status=%s'
              % (when, port['id'], port['mac_address'], ','.join(ips),
                 port['binding_host_id'], port['binding_vif_type'],
                 port['status']))
        return port

    def server_create(self):
        server = self.cli('server', 'create', '--image', IMAGE, '--flavor',
                          FLAVOR, '--network', NETWORK,
                          '--availability-zone',
                          'nova:' + self.demo.vmware, '--wait', SERVER,
                          parse=True)
        with open(self.demo.record, 'a') as f:
            f.write(server['id'] + '\n')
        self.demo.wait_server(SERVER, 'ACTIVE', self.demo.vmware)
        self.before = self.port('before')
        self._expect(self.before, self.demo.vmware, 'dvs')
        return server

    def _expect(self, port, host, vif_type):
        if (port['binding_host_id'], port['binding_vif_type']) != (
                host, vif_type):
            raise demo_mod.StepFailed(
                'port %s is bound to %s with vif_type %s, not to %s with %s'
                % (port['id'], port['binding_host_id'],
                   port['binding_vif_type'], host, vif_type))

    def confirm(self):
        self.cli('server', 'migrate', 'confirm', SERVER)
        self.demo.wait_server(SERVER, 'ACTIVE', self.demo.kvm)

    def lease(self):
        """console log show: the NIC with the port's MAC, its lease."""
        guest = _linux_guest()
        deadline = time.monotonic() + LEASE_TIMEOUT
        text = ''
        while time.monotonic() < deadline:
            text = self.cli('console', 'log', 'show', SERVER)
            if guest.DONE in text:
                break
            time.sleep(2)
        else:
            raise demo_mod.StepFailed(
                'no %s on the console of %s within %d s: %r' % (
                    guest.DONE, SERVER, LEASE_TIMEOUT, text[-600:]))
        for line in text.splitlines():
            if line.startswith(('XHV-NIC', 'XHV-DHCP')):
                print('console: %s' % line.strip())
        after = self.port('after')
        self._expect(after, self.demo.kvm, 'ovs')
        ip = self.before['fixed_ips'][0]['ip_address']
        mac = self.before['mac_address']
        identity = (after['id'], after['mac_address'],
                    after['fixed_ips'][0]['ip_address'])
        if identity != (self.before['id'], mac, ip):
            raise demo_mod.StepFailed(
                'the port changed in the move: %s, was %s'
                % (identity, (self.before['id'], mac, ip)))
        leases = guest.leases(text)
        if leases != {mac: ip}:
            raise demo_mod.StepFailed(
                'the guest leased %s; the port has MAC %s and IP %s'
                % (leases or 'nothing', mac, ip))
        print('the guest on %s leased %s for MAC %s: the port\'s, as on %s'
              % (self.demo.kvm, ip, mac, self.demo.vmware))
        return leases

    def steps(self, no_migration):
        demo = self.demo
        made = demo.step('network: network create (VLAN %d on public), '
                         'subnet create %s' % (VLAN, CIDR),
                         self.network_create)
        skip = made is demo_mod.StepFailed and 'no network'
        imaged = demo.step('network: image create (Linux test guest as '
                           'vmdk)', self.image_create, skip=skip)
        skip = skip or (imaged is demo_mod.StepFailed and 'no image')
        booted = demo.step('network: server create --network on %s'
                           % demo.vmware, self.server_create, skip=skip)
        skip = no_migration or skip or (booted is demo_mod.StepFailed and
                                        'the vSphere boot failed')
        moved = demo.step('network: server migrate --host %s' % demo.kvm,
                          lambda: demo.migrate(SERVER, demo.kvm), skip=skip)
        skip = skip or (moved is demo_mod.StepFailed and 'the migrate failed')
        confirmed = demo.step('network: server migrate confirm',
                              self.confirm, skip=skip)
        skip = skip or (confirmed is demo_mod.StepFailed and
                        'the confirm failed')
        demo.step('network: console log show (KVM): the port\'s MAC and '
                  'its DHCP lease', self.lease, skip=skip)
