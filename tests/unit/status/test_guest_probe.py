"""nova_xhv.guest_probe without libvirt: the XML, the order, cache, override.

The probe against real libvirtd: tests/functional/status/test_probe.py.
"""

import subprocess
from unittest import mock
from xml.etree import ElementTree

import pytest

from nova_xhv import guest_probe as gp
from tests.fixtures import disks

BAD = gp.CpuConfig('kvm', 'custom', ('NoSuchCpu',))


def canonical_cpu(xml):
    root = ElementTree.fromstring(xml)
    features = sorted((f.get('name'), f.get('policy'))
                      for f in root.findall('feature'))
    for f in root.findall('feature'):
        root.remove(f)
    return (ElementTree.canonicalize(ElementTree.tostring(root),
                                     strip_text=True), features)


@pytest.mark.parametrize('config', gp.CANDIDATES + (
    gp.CpuConfig('kvm', 'custom', ('haswell',), ('+pcid', '-hle')),
    gp.CpuConfig('qemu', 'none'),
))
def test_cpu_xml_is_what_novas_driver_writes(config):
    from nova import conf as nova_conf
    from nova.virt.libvirt import driver as nova_driver

    conf = nova_conf.CONF
    overrides = {'virt_type': config.virt_type, 'cpu_mode': config.cpu_mode,
                 'cpu_models': list(config.cpu_models),
                 'cpu_model_extra_flags': list(config.cpu_model_extra_flags)}
    for name, value in overrides.items():
        conf.set_override(name, value, group='libvirt')
    try:
        drv = nova_driver.LibvirtDriver.__new__(nova_driver.LibvirtDriver)
        drv.cpu_models_mapping = {}
        drv._get_cpu_info = lambda: {'arch': 'x86_64'}
        drv._host = mock.Mock()
        drv._host.get_cpu_model_names.return_value = ['Haswell', 'EPYC']
        cpu = drv._get_guest_cpu_model_config(arch='x86_64')
    finally:
        for name in overrides:
            conf.clear_override(name, group='libvirt')
    if config.cpu_mode != 'none':
        cpu.sockets = cpu.cores = cpu.threads = 1
    ours = gp.cpu_xml(config, arch='x86_64')
    if config.cpu_models:  # Nova maps the case-insensitive name
        ours = ours.replace('<model>haswell<', '<model>Haswell<')
    assert canonical_cpu(ours) == canonical_cpu(cpu.to_xml())


def test_amd_candidate_disables_arch_capabilities():
    xml = gp.cpu_xml(gp.CANDIDATES[1], arch='x86_64')
    assert "mode='host-model'" in xml
    assert "<feature policy='disable' name='arch-capabilities'/>" in xml
    domain = gp.domain_xml(gp.CANDIDATES[3], 'xhv-probe-x', '/d.qcow2',
                           'qcow2', '/c.log')
    root = ElementTree.fromstring(domain)
    assert root.get('type') == 'qemu'
    assert root.find('devices/serial/source').get('path') == '/c.log'


def test_boot_sector_is_the_test_fixtures():
    assert gp.boot_sector() == disks.boot_sector()
    assert gp.boot_sector(b'OTHER') == disks.boot_sector(b'OTHER')
    with pytest.raises(ValueError):
        gp.boot_sector(b'x' * 500)


def test_environment_override():
    assert gp.from_environment({}) is None
    assert gp.from_environment({'XHV_LIBVIRT_VIRT_TYPE': 'qemu'}) == (
        gp.CpuConfig('qemu'))
    forced = gp.from_environment({
        'XHV_LIBVIRT_CPU_MODE': 'host-model',
        'XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS': '-arch-capabilities, +pcid'})
    assert forced == gp.CpuConfig('kvm', 'host-model', (),
                                  ('-arch-capabilities', '+pcid'))
    assert gp.from_environment(gp.environment(gp.CANDIDATES[2])) == (
        gp.CANDIDATES[2])


def test_override_wins_without_probing():
    with mock.patch.object(gp, 'try_config') as tried:
        choice = gp.choose(environ={'XHV_LIBVIRT_VIRT_TYPE': 'qemu'})
    tried.assert_not_called()
    assert choice.source == 'environment'
    assert choice.config == gp.CpuConfig('qemu')
    assert 'XHV_LIBVIRT_VIRT_TYPE' in choice.line()


def test_probe_keeps_the_first_candidate_that_starts():
    errors = {gp.CANDIDATES[0]: 'failed to set MSR 0x10a to 0x69'}
    seen = []

    def try_config(config, disk, *args):
        seen.append(config)
        with open(disk, 'rb') as f:
            assert f.read(512) == gp.boot_sector()
        return errors.get(config)

    with mock.patch.object(gp, 'try_config', side_effect=try_config):
        choice = gp.probe()
    assert seen == list(gp.CANDIDATES[:2])
    assert choice.config == gp.CANDIDATES[1]
    assert 'virt_type=kvm cpu_mode=(default) failed: failed to set MSR' in (
        choice.line())
    assert len(choice.line().splitlines()) == 1


def test_probe_failure_names_every_candidate():
    with mock.patch.object(gp, 'try_config', return_value='boom'):
        with pytest.raises(gp.ProbeError) as caught:
            gp.probe(candidates=(BAD, gp.CpuConfig('qemu')))
    assert 'cpu_models=NoSuchCpu: boom' in str(caught.value)
    assert 'virt_type=qemu cpu_mode=(default): boom' in str(caught.value)


def test_cache_answers_until_the_key_changes(tmp_path):
    keys = iter(['k1', 'k1', 'k2'])
    with mock.patch.object(gp, 'CACHE_DIRS', (str(tmp_path),)), \
            mock.patch.object(gp, 'cache_key',
                              side_effect=lambda *a: next(keys)), \
            mock.patch.object(gp, 'try_config',
                              side_effect=[None, None]) as tried:
        first = gp.choose(environ={})
        second = gp.choose(environ={})
        third = gp.choose(environ={})
    assert tried.call_count == 2
    assert (first.source, second.source, third.source) == (
        'probe', 'cache', 'probe')
    assert second.config == first.config
    assert 'cached for this boot' in second.line()


def test_cache_key_changes_with_boot_versions_and_disk(tmp_path):
    disk = tmp_path / 'd.raw'
    disk.write_bytes(gp.boot_sector())
    conn = mock.Mock()
    conn.getVersion.return_value = 7002022
    conn.getLibVersion.return_value = 9000000
    fake = mock.Mock(open=mock.Mock(return_value=conn))
    with mock.patch.object(gp, '_libvirt', return_value=fake):
        base = gp.cache_key(str(disk), gp.BOOT_MARKER, gp.CANDIDATES)
        assert base == gp.cache_key(str(disk), gp.BOOT_MARKER, gp.CANDIDATES)
        with mock.patch.object(gp, '_boot_id', return_value='other-boot'):
            assert gp.cache_key(str(disk), gp.BOOT_MARKER,
                                gp.CANDIDATES) != base
        conn.getVersion.return_value = 8002000
        assert gp.cache_key(str(disk), gp.BOOT_MARKER,
                            gp.CANDIDATES) != base
        conn.getVersion.return_value = 7002022
        disk.write_bytes(gp.boot_sector(b'OTHER'))
        assert gp.cache_key(str(disk), gp.BOOT_MARKER,
                            gp.CANDIDATES) != base


def test_cli_shell_output_evaluates_to_the_override(capsys):
    choice = gp.Choice(gp.CANDIDATES[1], 'why', 'probe')
    with mock.patch.object(gp, 'choose', return_value=choice):
        assert gp.main(['--output', 'shell']) == 0
    out, err = capsys.readouterr()
    assert err.startswith('xhv: libvirt CPU: virt_type=kvm')
    shown = subprocess.run(
        ['bash', '-c', out + '\necho "$XHV_LIBVIRT_CPU_MODE|'
         '$XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS|$XHV_LIBVIRT_VIRT_TYPE"'],
        capture_output=True, text=True, check=True).stdout
    assert shown == 'host-model|-arch-capabilities|kvm\n'


def test_cli_fails_when_nothing_starts(capsys):
    with mock.patch.object(gp, 'choose',
                           side_effect=gp.ProbeError('nothing starts')):
        assert gp.main([]) == 1
    assert 'nothing starts' in capsys.readouterr().err


def test_wait_for_marker_reports_a_crash_and_a_hang(tmp_path):
    console = tmp_path / 'console.log'
    console.write_bytes(b'')
    libvirt = mock.Mock(VIR_DOMAIN_RUNNING=1, libvirtError=Exception)
    dom = mock.Mock()
    dom.state.return_value = (5, 1)  # shut off, crashed
    with mock.patch.object(gp, '_qemu_error',
                           return_value='error: failed to set MSR 0x10a'):
        assert gp._wait_for_marker(libvirt, dom, 'n', str(console),
                                   b'XHV', 5) == (
            'error: failed to set MSR 0x10a')
    dom.state.return_value = (1, 1)
    assert 'within 0.2s' in gp._wait_for_marker(
        libvirt, dom, 'n', str(console), b'XHV', 0.2)
    console.write_bytes(b'SeaBIOS\r\nXHV-BOOT-OK\r\n')
    assert gp._wait_for_marker(libvirt, dom, 'n', str(console),
                               b'XHV-BOOT-OK', 5) is None


def test_first_line():
    assert gp._first_line('\n  one\ntwo') == 'one'
