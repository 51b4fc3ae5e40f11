"""RegionTwo's configs (tools/aio/region_two.py), read by Nova's own code.

No service starts: the configs are rendered into a temp state folder and
loaded with Nova's and XHV's option registries in a child process (Nova
registers options on oslo.config's global CONF), the way nova-compute
loads them.  RegionTwo's compute must be a STOCK libvirt compute apart
from RegionOne's (own names, path, host, vhost, databases); RegionOne's
cloud compute must reach RegionTwo only through the private clouds.yaml.
The whole start is covered by the all-in-one smoke test.
"""

import json
import os
import stat
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
AIO = os.path.join(TOP, 'tools', 'aio')

RENDER = '''
import json, sys
sys.path.insert(0, %(aio)r)
import region_two, services
cloud = services.Cloud(%(state)r, sys.prefix)
# What xhv-guest-probe would choose (it boots a guest: not here).
cloud._libvirt_cpu = ('qemu', 'cpu_mode = custom\\ncpu_models = qemu64')
cloud.write_configs()  # RegionOne's, which the cloud compute reads too
r2 = region_two.RegionTwo(cloud)
r2.write_configs()
print(json.dumps({
    'control': r2.conf('nova', 'nova.conf'),
    'compute': [r2.conf('nova-compute', 'nova.conf'),
                r2.conf('nova-compute', 'nova-compute.conf')],
    'cloud': [cloud.conf('nova', 'nova-compute.conf'),
              cloud.conf('nova', 'nova-compute-cloud.conf')],
    'clouds_yaml': r2.clouds_yaml, 'instances': r2.instances,
    'etc': r2.etc, 'db_secret': r2.secrets['db']}))
'''

LOAD = '''
import json, sys
import nova.conf
import nova_xhv.conf  # noqa: F401  ([xhv], [xhv_cloud])
from oslo_messaging import transport
CONF = nova.conf.CONF
CONF.register_opts(transport._transport_opts)  # as the services' rpc does
files = sys.argv[1:]
CONF([a for f in files for a in ('--config-file', f)], project='nova')
out = {'host': CONF.host, 'compute_driver': CONF.compute_driver,
       'instance_name_template': CONF.instance_name_template,
       'instances_path': CONF.instances_path,
       'transport_url': CONF.transport_url,
       'virt_type': CONF.libvirt.virt_type,
       'cpu_mode': CONF.libvirt.cpu_mode,
       'glance_region': CONF.glance.region_name,
       'placement_region': CONF.placement.region_name,
       'neutron_region': CONF.neutron.region_name,
       'database': CONF.database.connection,
       'api_database': CONF.api_database.connection,
       'backend': CONF.xhv.backend, 'cloud': CONF.xhv_cloud.cloud,
       'clouds_yaml': CONF.xhv_cloud.clouds_yaml,
       'exchange_port': CONF.xhv.exchange_port}
print(json.dumps(out))
'''


def _json(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          cwd=TOP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_region_two_stock_compute_and_cloud_compute_configs():
    with tempfile.TemporaryDirectory(prefix='xhv-aio-r2-') as state:
        rendered = _json([sys.executable, '-c',
                          RENDER % {'aio': AIO, 'state': state}])
        compute = _json([sys.executable, '-c', LOAD] + rendered['compute'])
        control = _json([sys.executable, '-c', LOAD, rendered['control']])
        cloud = _json([sys.executable, '-c', LOAD] + rendered['cloud'])
        modes = {}
        for root, _, names in os.walk(rendered['etc']):
            for name in names:
                if name.endswith(('.conf', '.ini', '.json')) and \
                        'paste' not in name:
                    path = os.path.join(root, name)
                    modes[path] = stat.S_IMODE(os.stat(path).st_mode)
    # RegionTwo's compute: stock libvirt, apart from RegionOne's KVM.
    assert compute['compute_driver'] == 'libvirt.LibvirtDriver', compute
    assert compute['host'] == 'r2-kvm', compute
    assert compute['instance_name_template'] == 'xhv-r2-%08x', compute
    assert compute['instances_path'] == rendered['instances'], compute
    assert compute['instances_path'].startswith(state)
    assert (compute['virt_type'], compute['cpu_mode']) == ('qemu',
                                                           'custom')
    assert compute['transport_url'].endswith('/region-two'), compute
    assert compute['database'] is None  # computes go through conductor
    for conf in (compute, control):
        assert {conf['glance_region'], conf['placement_region'],
                conf['neutron_region']} == {'RegionTwo'}, conf
    # Its control plane: the r2_ databases, its own DB user.
    assert control['database'] == (
        'mysql+pymysql://region_two:%s@127.0.0.1/r2_nova?charset=utf8'
        % rendered['db_secret'])
    assert '/r2_nova_api?' in control['api_database']
    # RegionOne's cloud compute: XHV's cloud backend on the private entry.
    assert cloud['compute_driver'] == 'xhv.XHVDriver', cloud
    assert (cloud['host'], cloud['backend'], cloud['cloud']) == (
        'aio-cloud', 'cloud', 'xhv-aio-region-two'), cloud
    assert cloud['clouds_yaml'] == rendered['clouds_yaml'], cloud
    assert cloud['exchange_port'] == 8803
    assert not cloud['transport_url'].endswith('/region-two'), cloud
    # Every file with a secret: root only.
    assert modes and set(modes.values()) == {0o600}, modes
