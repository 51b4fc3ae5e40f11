"""The all-in-one's cinder.conf, read by Cinder's own code (no services).

``tools/xhv-aio`` bind-mounts the share's local directory where it expects
Cinder's NFS driver to look for the mount.  Here the rendered cinder.conf
is loaded with Cinder's option registry and its backend section handed to
the volume driver the way Cinder's VolumeManager does it
(``import_object(volume_driver, configuration=..., host=...)``); the real
XHVVolumeDriver builds the real NfsDriver, and the mount point that driver
computes must be the one xhv-aio mounts.  Runs in a child process: Cinder
and Nova both register options on oslo.config's global CONF.
"""

import json
import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
AIO = os.path.join(TOP, 'tools', 'aio')

RENDER = '''
import json, sys
sys.path.insert(0, %(aio)r)
import block_storage, services
cloud = services.Cloud(%(state)r, sys.prefix)
storage = block_storage.BlockStorage(cloud)
storage.write_configs()
print(json.dumps({'conf': storage.conf(), 'share': storage.share,
                  'mount_point': storage.mount_point()}))
'''

LOAD = '''
import json, sys
from oslo_config import cfg
from oslo_utils import importutils
from cinder import objects
objects.register_all()
from cinder.volume import configuration
from cinder.volume import manager
conf_file, host = sys.argv[1:3]
cfg.CONF(['--config-file', conf_file], project='cinder')
backend = cfg.CONF.enabled_backends[0]
config = configuration.Configuration(manager.volume_backend_opts,
                                     config_group=backend)
driver = importutils.import_object(
    config.volume_driver, configuration=config, host=host + '@' + backend,
    cluster_name=None, is_vol_db_empty=True, active_backend_id=None)
inner = driver.inner_driver
inner._load_shares_config(config.nfs_shares_config)
shares = list(inner.shares)
print(json.dumps({
    'backend': backend, 'driver': type(driver).__module__ + '.' +
    type(driver).__name__, 'inner': type(inner).__name__,
    'stored_format': driver.stored_format, 'shares': shares,
    'mount_points': [inner._get_mount_point_for_share(s) for s in shares],
    'default_volume_type': cfg.CONF.default_volume_type,
    'volume_backend_name': config.volume_backend_name}))
'''


def _json(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          cwd=TOP)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cinder_finds_the_share_where_xhv_aio_mounts_it():
    with tempfile.TemporaryDirectory(prefix='xhv-aio-conf-') as state:
        rendered = _json([sys.executable, '-c',
                          RENDER % {'aio': AIO, 'state': state}])
        assert rendered['conf'].startswith(state)
        loaded = _json([sys.executable, '-c', LOAD, rendered['conf'],
                        'aio-cinder'])
    assert loaded['driver'] == 'cinder_xhv.driver.XHVVolumeDriver', loaded
    assert loaded['inner'] == 'NfsDriver', loaded
    assert loaded['stored_format'] == 'raw', loaded
    assert loaded['shares'] == [rendered['share']], loaded
    # The path xhv-aio bind-mounts is the path Cinder's driver mounts at.
    assert loaded['mount_points'] == [rendered['mount_point']], (
        loaded, rendered)
    assert rendered['mount_point'].startswith(state)
    assert loaded['default_volume_type'] == loaded['backend'] == \
        loaded['volume_backend_name'] == 'xhv-nfs', loaded
