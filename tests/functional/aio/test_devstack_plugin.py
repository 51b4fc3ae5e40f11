"""devstack/plugin.sh run phase by phase against scratch config files.

A full devstack cannot run here; devstack's iniset/iniget/inidelete,
pip_install and die are replaced by the small stand-ins in
devstack_standins.sh, and each test checks what the plugin writes into a
nova.conf, a nova-cpu.conf and a cinder.conf, and that unstack and clean
put them back.
"""

import configparser
import os
import shutil
import subprocess

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
PLUGIN = os.path.join(TOP, 'devstack', 'plugin.sh')
SETTINGS = os.path.join(TOP, 'devstack', 'settings')
STANDINS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'devstack_standins.sh')
PROBE_STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'guest_probe_standin.sh')

NOVA_CONF = """[DEFAULT]
compute_driver = libvirt.LibvirtDriver
my_ip = 10.0.0.5

[libvirt]
virt_type = kvm
"""
CINDER_CONF = """[DEFAULT]
enabled_backends = lvmdriver-1

[lvmdriver-1]
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
volume_group = stack-volumes-lvmdriver-1
volume_backend_name = lvmdriver-1
"""


def read(path):
    cp = configparser.RawConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(path)
    # Sections without the [DEFAULT] values configparser mixes into them.
    defaults = dict(cp.defaults())
    result = {'DEFAULT': defaults}
    for section in cp.sections():
        result[section] = {k: v for k, v in cp.items(section, raw=True)
                           if k not in defaults}
    return result


def options(path):
    """Every (section, option, value) set in a file; empty sections drop."""
    return {(s, k, v) for s, opts in read(path).items()
            for k, v in opts.items()}


@pytest.fixture
def bed(tmp_path):
    for name, text in (('nova.conf', NOVA_CONF),
                       ('nova-cpu.conf', NOVA_CONF),
                       ('cinder.conf', CINDER_CONF)):
        (tmp_path / name).write_text(text)
    return tmp_path


def run_phase(bed, *phase, **settings):
    env = {'PATH': os.environ['PATH'], 'DEST': str(bed),
           'XHV_DIR': TOP, 'NOVA_CONF': str(bed / 'nova.conf'),
           'NOVA_CPU_CONF': str(bed / 'nova-cpu.conf'),
           'CINDER_CONF': str(bed / 'cinder.conf'),
           'STANDIN_LOG': str(bed / 'calls.log'),
           'XHV_GUEST_PROBE': PROBE_STANDIN}
    env.update(settings)
    script = 'set -eu; source "%s"; source "%s"; source "%s" %s' % (
        STANDINS, SETTINGS, PLUGIN, ' '.join(phase))
    return subprocess.run(['bash', '-c', script], env=env,
                          capture_output=True, text=True, timeout=60)


def calls(bed):
    try:
        return (bed / 'calls.log').read_text().splitlines()
    except FileNotFoundError:
        return []


VMWARE = {'XHV_BACKEND': 'vmware', 'XHV_VMWARE_HOST': 'vc.example.org',
          'XHV_VMWARE_USERNAME': 'nova@vsphere.local',
          'XHV_VMWARE_PASSWORD': 's3cret', 'XHV_VMWARE_CLUSTER': 'Cluster1',
          'XHV_EXCHANGE_SECRET': 'shared-secret'}


def test_syntax():
    for path in (PLUGIN, SETTINGS, STANDINS):
        proc = subprocess.run(['bash', '-n', path], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr


def test_shellcheck():
    shellcheck = shutil.which('shellcheck')
    if shellcheck is None:
        pytest.fail('shellcheck is missing: apt-get install shellcheck '
                    '(tools/install-deps installs it)')
    proc = subprocess.run([shellcheck, '-x', PLUGIN, SETTINGS, STANDINS],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_install_uses_pip_install_with_backend_extra(bed):
    proc = run_phase(bed, 'stack', 'install', **VMWARE)
    assert proc.returncode == 0, proc.stderr
    assert 'pip_install %s[vmware]' % TOP in calls(bed)


def test_post_config_vmware_writes_nova_and_cinder(bed):
    proc = run_phase(bed, 'stack', 'post-config', **VMWARE)
    assert proc.returncode == 0, proc.stderr
    for name in ('nova.conf', 'nova-cpu.conf'):
        conf = read(bed / name)
        assert conf['DEFAULT']['compute_driver'] == 'xhv.XHVDriver'
        assert conf['xhv']['backend'] == 'vmware'
        assert conf['xhv']['exchange_secret'] == 'shared-secret'
        assert conf['xhv_vmware'] == {
            'host': 'vc.example.org', 'port': '443',
            'username': 'nova@vsphere.local', 'password': 's3cret',
            'cluster_name': 'Cluster1', 'insecure': 'False'}
        assert conf['libvirt']['virt_type'] == 'kvm'  # untouched
    cinder = read(bed / 'cinder.conf')['lvmdriver-1']
    assert cinder['volume_driver'] == 'cinder_xhv.driver.XHVVolumeDriver'
    assert cinder['xhv_inner_volume_driver'] == (
        'cinder.volume.drivers.lvm.LVMVolumeDriver')
    assert cinder['volume_group'] == 'stack-volumes-lvmdriver-1'


HYPERV = {'XHV_BACKEND': 'hyperv', 'XHV_HYPERV_HOST': 'hv01.example.org',
          'XHV_HYPERV_USERNAME': 'EXAMPLE\\nova',
          'XHV_HYPERV_PASSWORD': 's3cret',
          'XHV_HYPERV_VSWITCH_MAPPINGS': 'physnet1:External'}


def test_hyperv_installs_its_extra_and_writes_its_options(bed):
    before = options(bed / 'nova.conf')
    proc = run_phase(bed, 'stack', 'install', **HYPERV)
    assert proc.returncode == 0, proc.stderr
    assert 'pip_install %s[hyperv]' % TOP in calls(bed)
    proc = run_phase(bed, 'stack', 'post-config', **HYPERV)
    assert proc.returncode == 0, proc.stderr
    for name in ('nova.conf', 'nova-cpu.conf'):
        conf = read(bed / name)
        assert conf['xhv']['backend'] == 'hyperv'
        assert conf['xhv_hyperv'] == {
            'host': 'hv01.example.org', 'username': 'EXAMPLE\\nova',
            'password': 's3cret', 'vm_path': 'C:\\ClusterStorage\\XHV',
            'smb_share': 'XHV', 'vswitch_mappings': 'physnet1:External'}
    assert run_phase(bed, 'unstack', **HYPERV).returncode == 0
    assert options(bed / 'nova.conf') == before


def test_post_config_twice_keeps_the_inner_driver(bed):
    for _ in range(2):
        proc = run_phase(bed, 'stack', 'post-config')
        assert proc.returncode == 0, proc.stderr
    cinder = read(bed / 'cinder.conf')['lvmdriver-1']
    assert cinder['xhv_inner_volume_driver'] == (
        'cinder.volume.drivers.lvm.LVMVolumeDriver')
    nova = read(bed / 'nova.conf')
    assert nova['xhv']['devstack_previous_compute_driver'] == (
        'libvirt.LibvirtDriver')
    assert nova['xhv']['backend'] == 'libvirt'


@pytest.mark.parametrize('phase', ['unstack', 'clean'])
def test_unstack_and_clean_restore_the_files(bed, phase):
    before = {n: options(bed / n) for n in ('nova.conf', 'nova-cpu.conf',
                                            'cinder.conf')}
    settings = dict(VMWARE, XHV_EXTRA_OPTS='xhv:cross_family_disk_bus=ide')
    assert run_phase(bed, 'stack', 'post-config',
                     **settings).returncode == 0
    assert read(bed / 'nova.conf')['xhv']['cross_family_disk_bus'] == 'ide'
    assert options(bed / 'nova.conf') != before['nova.conf']
    proc = run_phase(bed, phase, **settings)
    assert proc.returncode == 0, proc.stderr
    for name, opts in before.items():
        assert options(bed / name) == opts, name
    if phase == 'clean':
        assert 'pip_uninstall openstack-xhv' in calls(bed)


def test_unstack_without_previous_driver_removes_it(bed):
    (bed / 'nova.conf').write_text('[DEFAULT]\nmy_ip = 10.0.0.5\n')
    (bed / 'nova-cpu.conf').write_text('[DEFAULT]\nmy_ip = 10.0.0.5\n')
    assert run_phase(bed, 'stack', 'post-config').returncode == 0
    assert read(bed / 'nova.conf')['DEFAULT']['compute_driver'] == (
        'xhv.XHVDriver')
    assert run_phase(bed, 'unstack').returncode == 0
    assert 'compute_driver' not in read(bed / 'nova.conf')['DEFAULT']


@pytest.mark.parametrize('settings, message', [
    ({'XHV_BACKEND': 'bhyve'}, 'XHV_BACKEND=bhyve: use one of'),
    ({'XHV_BACKEND': 'vmware'}, 'needs XHV_VMWARE_HOST'),
    ({'XHV_BACKEND': 'hyperv'}, 'needs XHV_HYPERV_HOST'),
])
def test_pre_install_refuses_bad_settings(bed, settings, message):
    proc = run_phase(bed, 'stack', 'pre-install', **settings)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_pre_install_refuses_a_backend_this_xhv_lacks(bed, tmp_path):
    fake = tmp_path / 'xhv'
    fake.mkdir()
    (fake / 'setup.cfg').write_text(
        '[entry_points]\nnova_xhv.backends =\n'
        '    libvirt = nova_xhv.backends.libvirt:LibvirtBackend\n')
    proc = run_phase(bed, 'stack', 'pre-install', XHV_BACKEND='xenapi',
                     XHV_DIR=str(fake))
    assert proc.returncode != 0
    assert 'has no such backend yet' in proc.stderr
    assert run_phase(bed, 'stack', 'pre-install',
                     XHV_DIR=str(fake)).returncode == 0


def test_missing_cinder_driver_is_a_clear_error(bed):
    (bed / 'cinder.conf').write_text('[lvmdriver-1]\nvolume_group = x\n')
    proc = run_phase(bed, 'stack', 'post-config')
    assert proc.returncode != 0
    assert 'no volume_driver in [lvmdriver-1]' in proc.stderr


GLANCE_UWSGI = """[uwsgi]
module = glance.wsgi.api:application
http-socket = 127.0.0.1:60999
http-chunked-input = true
"""


@pytest.mark.parametrize('existing, expected', [
    (None, '16777216'), ('1048576', '16777216'), ('33554432', '33554432')])
def test_post_config_raises_glance_chunked_input_limit(bed, existing,
                                                       expected):
    conf = bed / 'glance-uwsgi.ini'
    text = GLANCE_UWSGI
    if existing:
        text += 'chunked-input-limit = %s\n' % existing
    conf.write_text(text)
    proc = run_phase(bed, 'stack', 'post-config',
                     GLANCE_UWSGI_CONF=str(conf))
    assert proc.returncode == 0, proc.stderr
    uwsgi = read(conf)['uwsgi']
    assert uwsgi['chunked-input-limit'] == expected
    assert uwsgi['http-socket'] == '127.0.0.1:60999'  # untouched


def test_post_config_without_glance_uwsgi_leaves_glance_alone(bed):
    proc = run_phase(bed, 'stack', 'post-config',
                     GLANCE_UWSGI_CONF=str(bed / 'absent.ini'))
    assert proc.returncode == 0, proc.stderr
    assert not (bed / 'absent.ini').exists()
    conf = bed / 'glance-uwsgi.ini'
    conf.write_text(GLANCE_UWSGI)
    proc = run_phase(bed, 'stack', 'post-config', GLANCE_UWSGI_CONF=str(conf),
                     XHV_GLANCE_CHUNKED_INPUT_LIMIT='')
    assert proc.returncode == 0, proc.stderr
    assert 'chunked-input-limit' not in read(conf)['uwsgi']


AMD_CHOICE = ("XHV_LIBVIRT_VIRT_TYPE=kvm\nXHV_LIBVIRT_CPU_MODE=host-model\n"
              "XHV_LIBVIRT_CPU_MODELS=''\n"
              "XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS=-arch-capabilities")


def test_post_config_writes_the_probed_cpu_settings_and_unstack_removes(bed):
    before = {n: options(bed / n) for n in ('nova.conf', 'nova-cpu.conf')}
    for _ in range(2):  # a repeated stack.sh probes again
        proc = run_phase(bed, 'stack', 'post-config',
                         STANDIN_PROBE_OUTPUT=AMD_CHOICE)
        assert proc.returncode == 0, proc.stderr
    assert calls(bed).count('xhv-guest-probe --output shell') == 2
    for name in ('nova.conf', 'nova-cpu.conf'):
        libvirt = read(bed / name)['libvirt']
        assert libvirt == {'virt_type': 'kvm', 'cpu_mode': 'host-model',
                           'cpu_model_extra_flags': '-arch-capabilities'}
    assert run_phase(bed, 'unstack').returncode == 0
    for name, opts in before.items():
        assert options(bed / name) == opts, name


def test_post_config_probe_may_choose_tcg(bed):
    proc = run_phase(bed, 'stack', 'post-config',
                     STANDIN_PROBE_OUTPUT='XHV_LIBVIRT_VIRT_TYPE=qemu')
    assert proc.returncode == 0, proc.stderr
    assert read(bed / 'nova-cpu.conf')['libvirt'] == {'virt_type': 'qemu'}


@pytest.mark.parametrize('conf_lines, settings', [
    ('cpu_mode = host-passthrough\n', {}),
    ('cpu_model_extra_flags = -pcid\n', {}),
    ('', {'LIBVIRT_CPU_MODE': 'custom'}),
    ('', {'XHV_PROBE_LIBVIRT_CPU': 'False'}),
    ('', {'XHV_BACKEND': 'vmware', **VMWARE}),
])
def test_operator_cpu_settings_are_not_probed(bed, conf_lines, settings):
    for name in ('nova.conf', 'nova-cpu.conf'):
        (bed / name).write_text(NOVA_CONF + conf_lines)
    before = read(bed / 'nova-cpu.conf')['libvirt']
    proc = run_phase(bed, 'stack', 'post-config',
                     STANDIN_PROBE_OUTPUT=AMD_CHOICE, **settings)
    assert proc.returncode == 0, proc.stderr
    assert not [c for c in calls(bed) if c.startswith('xhv-guest-probe')]
    assert read(bed / 'nova-cpu.conf')['libvirt'] == before


def test_failed_probe_leaves_libvirt_settings_alone(bed):
    proc = run_phase(bed, 'stack', 'post-config',
                     STANDIN_PROBE_OUTPUT='fail')
    assert proc.returncode == 0, proc.stderr
    assert 'found no [libvirt] setting' in proc.stdout
    assert read(bed / 'nova-cpu.conf')['libvirt'] == {'virt_type': 'kvm'}


XENAPI = {'XHV_BACKEND': 'xenapi',
          'XHV_XENAPI_URL': 'https://xen-master.example.org',
          'XHV_XENAPI_PASSWORD': 'xen-s3cret',
          'XHV_XENAPI_NETWORK_MAP': 'public:xenbr0'}


def test_xenapi_installs_its_extra_and_writes_its_options(bed):
    before = options(bed / 'nova.conf')
    proc = run_phase(bed, 'stack', 'install', **XENAPI)
    assert proc.returncode == 0, proc.stderr
    assert 'pip_install %s[xenapi]' % TOP in calls(bed)
    proc = run_phase(bed, 'stack', 'post-config', **XENAPI)
    assert proc.returncode == 0, proc.stderr
    for name in ('nova.conf', 'nova-cpu.conf'):
        conf = read(bed / name)
        assert conf['xhv']['backend'] == 'xenapi'
        assert conf['xhv_xenapi'] == {
            'url': 'https://xen-master.example.org', 'username': 'root',
            'password': 'xen-s3cret', 'insecure': 'False',
            'network_map': 'public:xenbr0'}
    assert run_phase(bed, 'unstack', **XENAPI).returncode == 0
    assert options(bed / 'nova.conf') == before


def test_xenapi_needs_its_url_and_password(bed):
    proc = run_phase(bed, 'stack', 'pre-install', XHV_BACKEND='xenapi')
    assert proc.returncode != 0
    assert 'needs XHV_XENAPI_URL' in proc.stdout + proc.stderr
