"""Fixtures of the probe and xhv-status tests against real libvirtd/vcsim.

Tests here start libvirt domains: run them under the machine's KVM lock
(flock /tmp/xhv-kvm.lock), like the other KVM tests.
"""

import re
import subprocess

import pytest

from nova_xhv import guest_probe
from tests.fixtures.vcsim import vcsim  # noqa: F401  (pytest fixture)


@pytest.fixture(scope='session')
def host_cpu():
    """The CPU configuration that starts a guest here (probe, cached)."""
    return guest_probe.choose(environ={}).config


def cpu_model_the_host_lacks(virt_type):
    """A CPU model a guest of ``virt_type`` cannot use on this host.

    Under KVM one that libvirt's domcapabilities reports usable='no' (the
    host CPU lacks some of its features); TCG emulates every model it
    knows, so there an unknown one.
    """
    if virt_type != 'kvm':
        return 'xhv-no-such-cpu-model'
    caps = subprocess.run(
        ['virsh', '-c', guest_probe.DEFAULT_URI, 'domcapabilities',
         '--virttype', 'kvm'], capture_output=True, text=True, check=True)
    lacking = re.findall(r"<model usable='no'[^>]*>([^<]+)</model>",
                         caps.stdout)
    assert lacking, 'every CPU model is usable here: ' + caps.stdout[-500:]
    return lacking[0]


@pytest.fixture(scope='session')
def lacking_cpu(host_cpu):
    """A [libvirt] configuration that cannot start a guest on this host."""
    return guest_probe.CpuConfig(
        host_cpu.virt_type, 'custom',
        (cpu_model_the_host_lacks(host_cpu.virt_type),))
