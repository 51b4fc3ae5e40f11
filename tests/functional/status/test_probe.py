"""The guest probe against real libvirtd (under /tmp/xhv-kvm.lock)."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from nova_xhv import guest_probe as gp


def probe_domains():
    names = subprocess.run(
        ['virsh', '-c', gp.DEFAULT_URI, 'list', '--all', '--name'],
        capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if n.startswith(gp.DOMAIN_PREFIX)]


@pytest.fixture
def own_domains(monkeypatch):
    """The probes of this test name their domains apart.

    Other beds may probe on the same libvirtd meanwhile (tools/run-tests
    runs two lanes at once); probe_domains() then sees this test's only.
    """
    monkeypatch.setattr(gp, 'DOMAIN_PREFIX', '%st%s-' % (
        gp.DOMAIN_PREFIX, os.urandom(3).hex()))


def test_a_failing_first_candidate_is_skipped(lacking_cpu, own_domains):
    # A disk of the caller's: libvirt's qemu user must reach it (pytest's
    # tmp_path is private).
    folder = tempfile.mkdtemp(prefix='xhv-probe-test-', dir='/tmp')
    os.chmod(folder, 0o755)
    disk = os.path.join(folder, 'boot.raw')
    with open(disk, 'wb') as f:
        f.write(gp.boot_sector())
        f.truncate(1024 * 1024)
    os.chmod(disk, 0o644)
    try:
        with open(disk, 'rb') as f:
            before = hashlib.sha256(f.read()).hexdigest()
        choice = gp.probe(candidates=(lacking_cpu,) + gp.CANDIDATES,
                          disk=disk)
        with open(disk, 'rb') as f:
            after = hashlib.sha256(f.read()).hexdigest()
    finally:
        shutil.rmtree(folder)
    # The failing one, then each candidate in order up to the chosen one.
    assert choice.config in gp.CANDIDATES
    tried = [lacking_cpu] + list(
        gp.CANDIDATES[:gp.CANDIDATES.index(choice.config)])
    assert [f['config'] for f in choice.failures] == [
        c.describe() for c in tried]
    assert choice.failures[0]['error']
    assert lacking_cpu.describe() + ' failed: ' in choice.line()
    # Throwaway: nothing left in libvirt, the caller's disk untouched.
    assert probe_domains() == []
    assert after == before


def test_cache_and_override(lacking_cpu, host_cpu, monkeypatch,
                            own_domains):
    # A cache of this test's own (the probe's work folders go there too,
    # so libvirt's qemu user must reach it).
    cache = tempfile.mkdtemp(prefix='xhv-probe-cache-', dir='/tmp')
    os.chmod(cache, 0o755)
    monkeypatch.setattr(gp, 'CACHE_DIRS', (cache,))
    try:
        _check_cache_and_override(lacking_cpu, host_cpu, monkeypatch)
    finally:
        shutil.rmtree(cache)


def _check_cache_and_override(lacking_cpu, host_cpu, monkeypatch):
    tried = []
    real_try = gp.try_config

    def spy(config, *args, **kwargs):
        tried.append(config)
        return real_try(config, *args, **kwargs)

    monkeypatch.setattr(gp, 'try_config', spy)
    candidates = (lacking_cpu, host_cpu)
    first = gp.choose(candidates=candidates, environ={})
    assert (first.source, first.config) == ('probe', host_cpu)
    assert tried == [lacking_cpu, host_cpu]
    second = gp.choose(candidates=candidates, environ={})
    assert (second.source, second.config) == ('cache', host_cpu)
    assert len(tried) == 2
    # Another marker is another guest: probed again.
    gp.choose(candidates=candidates, marker=b'XHV-OTHER', environ={})
    assert len(tried) == 4
    forced = gp.choose(candidates=candidates,
                       environ={'XHV_LIBVIRT_VIRT_TYPE': 'qemu'})
    assert (forced.source, forced.config) == ('environment',
                                              gp.CpuConfig('qemu'))
    assert len(tried) == 4
    assert probe_domains() == []


def test_cli_prints_one_line(tmp_path):
    run = subprocess.run([sys.executable, '-m', 'nova_xhv.guest_probe'],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith('xhv: libvirt CPU: ')
