"""Real Cinder services in a child process, for tests of another process.

``python -m tests.functional.cinder.server <state dir>`` runs cinder-api
(Cinder's own WSGI service, ``auth_strategy = noauth``, on a free port),
cinder-scheduler and one cinder-volume per backend -- Cinder's own
``Service`` objects, as ``cinder-volume`` builds them -- in one process,
messaging over ``fake:/`` (oslo.messaging's in-process driver: one
process needs no broker), the database in sqlite.  Backends: ``nfsraw``
(raw volumes) and ``nfsqcow2`` (``nfs_qcow2_volumes``), XHV around Cinder's
NFS driver, both on one share whose export is ``<state>/export``.

Nova's functional harness cannot share a process with Cinder (both use
oslo's global configuration), hence the child.  Stand-ins: the share is
bind-mounted (this kernel has no NFS client) at the mount point the NFS
driver computes, before the volume services start, so os-brick finds it
mounted and never runs ``mount.nfs`` (as ``tools/xhv-aio`` does);
Keystone is ``noauth`` plus ``trust_service_tokens``; privileged calls
run in-process (root).  The test process reads ``<state>/ready`` (the API
port) and stops the child with SIGTERM; the child unmounts its share.
"""

import json
import os
import signal
import subprocess
import sys

from cinder import monkey_patch  # noqa: I202
monkey_patch.patch()

from oslo_config import cfg  # noqa: E402
from oslo_log import log as logging  # noqa: E402

BACKENDS = {'nfsraw': False, 'nfsqcow2': True}
HOST = 'xhv-cinder'


def write_conf(state):
    export = os.path.join(state, 'export')
    os.makedirs(export, exist_ok=True)
    # Volume files must be readable by libvirt's qemu user and vcsim.
    os.chmod(export, 0o777)
    shares = os.path.join(state, 'nfs_shares')
    with open(shares, 'w') as f:
        f.write('127.0.0.1:%s\n' % export)
    lines = [
        '[DEFAULT]',
        'host = %s' % HOST,
        'my_ip = 127.0.0.1',
        'state_path = %s' % state,
        'transport_url = fake:/',
        'auth_strategy = noauth',
        'api_paste_config = %s' % os.path.join(sys.prefix, 'etc', 'cinder',
                                               'api-paste.ini'),
        'osapi_volume_listen = 127.0.0.1',
        'osapi_volume_listen_port = 0',
        'osapi_volume_workers = 1',
        'enabled_backends = %s' % ','.join(BACKENDS),
        'default_volume_type = nfsraw',
        'report_interval = 2',
        'periodic_interval = 5',
        'image_conversion_dir = %s' % os.path.join(state, 'conversion'),
        'log_file = %s' % os.path.join(state, 'cinder.log'),
        'debug = false',
        'resource_query_filters_file = %s' % os.path.join(
            sys.prefix, 'etc', 'cinder', 'resource_filters.json'),
        '[database]',
        'connection = sqlite:///%s' % os.path.join(state, 'cinder.sqlite'),
        '[oslo_concurrency]',
        'lock_path = %s' % os.path.join(state, 'locks'),
        '[oslo_messaging_notifications]',
        'driver = noop',
    ]
    for backend, qcow2 in BACKENDS.items():
        lines += [
            '[%s]' % backend,
            'volume_backend_name = %s' % backend,
            'volume_driver = cinder_xhv.driver.XHVVolumeDriver',
            'xhv_inner_volume_driver = nfs',
            'nfs_shares_config = %s' % shares,
            'nfs_mount_point_base = %s' % os.path.join(state, 'mnt'),
            'nfs_qcow2_volumes = %s' % qcow2,
            'nfs_sparsed_volumes = true',
            'nfs_snapshot_support = true',
            'nas_secure_file_operations = false',
            'nas_secure_file_permissions = false',
        ]
    path = os.path.join(state, 'cinder.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path, '127.0.0.1:%s' % export, export


def mount_share(state, share, export):
    """Stand-in for the NFS mount: a bind mount where os-brick expects it."""
    from os_brick.remotefs import remotefs
    client = remotefs.RemoteFsClient(
        'nfs', None, nfs_mount_point_base=os.path.join(state, 'mnt'))
    point = client.get_mount_point(share)
    os.makedirs(point, exist_ok=True)
    subprocess.run(['mount', '--bind', export, point], check=True,
                   capture_output=True)
    return point


def trust_service_tokens():
    """Stand-in for keystonemiddleware's service-token check.

    With Keystone, Nova sends its service token (``X-Service-Token``) and
    keystonemiddleware gives the request the service user's roles, which
    Cinder requires to delete an attachment that is still connected
    (bug #2004555).  noauth knows no tokens: a request carrying one gets
    the ``service`` role.
    """
    from cinder.api.middleware import auth

    real = auth._set_request_context

    def set_request_context(req, **kwargs):
        if req.headers.get('X-Service-Token'):
            kwargs.setdefault('service_roles', ['service'])
        return real(req, **kwargs)

    auth._set_request_context = set_request_context


def main(state):
    conf_file, share, export = write_conf(state)
    from cinder.common import config  # noqa: F401  registers options
    cfg.CONF(['--config-file', conf_file], project='cinder')
    logging.setup(cfg.CONF, 'cinder')
    from cinder import objects
    objects.register_all()
    from cinder.db import migration
    migration.db_sync()
    from cinder import context
    from cinder.volume import volume_types
    admin = context.get_admin_context()
    for backend in BACKENDS:
        # One volume type per backend, named after it.
        try:
            volume_types.get_volume_type_by_name(admin, backend)
        except Exception:
            volume_types.create(admin, backend,
                                {'volume_backend_name': backend})
    # Privileged calls run in this (root) process, as in the in-process
    # tests (tests/functional/cinder/standins.py).
    import cinder.privsep
    import os_brick.privileged
    for privileged in (cinder.privsep.sys_admin_pctxt,
                       os_brick.privileged.default):
        privileged.set_client_mode(False)
    point = mount_share(state, share, export)
    trust_service_tokens()
    from cinder import rpc
    from cinder import service
    rpc.init(cfg.CONF)
    services = []
    try:
        for backend in BACKENDS:
            svc = service.Service.create(
                host='%s@%s' % (HOST, backend), binary='cinder-volume',
                service_name=backend, coordination=True, cluster=None)
            svc.start()
            services.append(svc)
        scheduler = service.Service.create(binary='cinder-scheduler')
        scheduler.start()
        services.append(scheduler)
        api = service.WSGIService('osapi_volume')
        api.start()
        services.append(api)
        ready = os.path.join(state, 'ready')
        with open(ready + '.tmp', 'w') as f:
            json.dump({'port': api.port, 'share': share, 'export': export,
                       'mount': point, 'pid': os.getpid()}, f)
        os.rename(ready + '.tmp', ready)
        import eventlet
        stop = eventlet.event.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.send())
        stop.wait()
    finally:
        for svc in reversed(services):
            try:
                svc.stop()
            except Exception:  # noqa: S110  best effort at exit
                pass
        subprocess.run(['umount', '-l', point], capture_output=True)


if __name__ == '__main__':
    main(os.path.abspath(sys.argv[1]))
