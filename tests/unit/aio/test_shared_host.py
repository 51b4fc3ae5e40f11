"""What lets test beds share this machine: libvirtd and the OVS datapath.

tools/aio/own_domains.py keeps each compute to the libvirt domains it
names; tools/aio/ovn_userspace.sole_datapath lets one ovs-vswitchd at a
time hold the userspace datapath.  tools/run-tests runs two lanes of tests
at once on the strength of both.
"""

import os
import shutil
import subprocess
import sys
import threading

import pytest

from tests.fixtures.wait import wait_for

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, 'tools', 'aio'))

import ovn_userspace  # noqa: E402
import own_domains  # noqa: E402


class Domain(object):

    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


def lister(names, calls):
    def list_instance_domains(host, only_running=True):
        calls.append(only_running)
        return [Domain(n) for n in names]
    return list_instance_domains


def test_template_prefix():
    assert own_domains.template_prefix('xhv-aio-%08x') == 'xhv-aio-'
    assert own_domains.template_prefix('instance-%(uuid)s') == 'instance-'
    assert own_domains.template_prefix('%(uuid)s') == ''


def test_a_compute_counts_only_the_domains_it_names():
    calls = []
    names = ['xhv-aio-00000001', 'xhv-1a2b3c4d-00000001', 'xhv-probe-1f',
             'xhv-aio-00000002', 'xhv-aiox-00000003']
    keep = own_domains.keep_named(lister(names, calls), 'xhv-aio-')
    assert [d.name() for d in keep(object(), only_running=False)] == [
        'xhv-aio-00000001', 'xhv-aio-00000002']
    assert calls == [False]
    # The prefix may be read at each call (Nova parses its config late).
    prefix = ['xhv-1a2b3c4d-']
    keep = own_domains.keep_named(lister(names, calls), lambda: prefix[0])
    assert [d.name() for d in keep(object())] == ['xhv-1a2b3c4d-00000001']
    assert calls == [False, True]
    prefix[0] = ''
    assert len(keep(object())) == len(names)


def test_the_compute_program_is_nova_compute():
    proc = subprocess.run(
        [sys.executable, os.path.join(TOP, 'tools', 'aio', 'own_domains.py'),
         '--version'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from importlib import metadata
    assert proc.stdout.strip() == metadata.version('nova'), proc.stdout


@pytest.fixture
def datapath(tmp_path, monkeypatch):
    """sole_datapath with a lock of its own and vswitchd PIDs we choose."""
    running = []
    monkeypatch.setattr(ovn_userspace, 'DATAPATH_LOCK',
                        str(tmp_path / 'datapath.lock'))
    monkeypatch.setattr(ovn_userspace, 'DATAPATH_POLL', 0.02)
    monkeypatch.setattr(ovn_userspace, 'vswitchd_pids',
                        lambda: list(running))
    return running


def test_a_starter_waits_until_no_other_vswitchd_runs(datapath):
    datapath.append(4242)
    said = []
    # Another bed's vswitchd goes away while we wait.
    timer = threading.Timer(0.3, datapath.clear)
    timer.start()
    try:
        with ovn_userspace.sole_datapath(timeout=30, log=said.append):
            assert datapath == []
    finally:
        timer.cancel()
    assert len(said) == 1 and '4242' in said[0], said


def test_a_starter_gives_up_at_its_deadline_naming_the_holder(datapath):
    datapath.append(4242)
    with pytest.raises(RuntimeError, match='4242.*ovs-netdev'):
        with ovn_userspace.sole_datapath(timeout=0.2, log=lambda m: None):
            pytest.fail('entered while another vswitchd runs')


def test_our_own_vswitchd_does_not_count(datapath):
    datapath.append(4242)
    with ovn_userspace.sole_datapath(own=[4242], timeout=0.2):
        pass


def test_two_starters_never_both_see_the_machine_free(datapath):
    with ovn_userspace.sole_datapath(timeout=0.2):
        # The first starter has not started its vswitchd yet: a second
        # must still wait (the lock), not go ahead.
        errors = []

        def second():
            try:
                with ovn_userspace.sole_datapath(timeout=0.2,
                                                 log=lambda m: None):
                    errors.append('entered')
            except RuntimeError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(10)
    assert len(errors) == 1 and 'a starter holding' in errors[0], errors
    # Released: the next one goes ahead.
    with ovn_userspace.sole_datapath(timeout=0.2):
        pass


def test_vswitchd_pids_finds_live_processes_of_that_name(tmp_path):
    # A stand-in named ovs-vswitchd (the kernel's comm is the file name).
    fake = tmp_path / 'ovs-vswitchd'
    shutil.copy('/bin/sleep', fake)
    proc = subprocess.Popen([str(fake), '60'])
    try:
        assert proc.pid in ovn_userspace.vswitchd_pids()
        proc.kill()
        # Dead but not yet reaped: a zombie holds no datapath.
        wait_for(lambda: open('/proc/%d/stat' % proc.pid).read().split(
            ')')[-1].split()[0] == 'Z', 10, what='the zombie')
        assert proc.pid not in ovn_userspace.vswitchd_pids()
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in ovn_userspace.vswitchd_pids()
