"""The remote cloud's Nova in a child process: API, conductor, scheduler
and one compute.

``python -m tests.functional.cloud.remote_nova <state dir>`` reads
``<state>/nova.conf`` (written by tests/fixtures/remote_cloud.py), starts
nova-conductor, nova-scheduler and nova-compute as Nova's own ``Service``
objects and nova-api's WSGI application (Keystone auth, the paste
pipeline Nova ships) on a free port, all in one process, messaging over
``fake:/`` (oslo.messaging's in-process driver: one process needs no
broker).  The API listens on the port given as the second argument.
The compute runs ``FileDriver``: Nova's ``fake.FakeDriver`` that also
keeps each server's disk as a file, fetched from the remote Glance at
spawn and uploaded back by snapshot, so data really travel
through the remote cloud's APIs.  Writes ``<state>/nova-ready`` (the API
port); stops on SIGTERM.
"""

import json
import os
import shutil
import signal
import socketserver
import sys
import threading
from wsgiref import simple_server

from tests.fixtures import sqlite_writers

os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')

HOST = 'remote-compute'  # tests.fixtures.remote_cloud.REMOTE_COMPUTE


def file_driver_module(state):
    """nova.virt.xhvtestfile: FakeDriver with disks as files."""
    import types

    from nova.compute import task_states
    from nova.image import glance
    from nova.virt import fake
    from oslo_log import log as logging

    LOG = logging.getLogger('nova.virt.xhvtestfile')

    disks = os.path.join(state, 'disks')
    os.makedirs(disks, exist_ok=True)

    class FileDriver(fake.FakeDriver):

        def spawn(self, context, instance, image_meta, injected_files,
                  admin_password, allocations, network_info=None,
                  block_device_info=None, power_on=True, accel_info=None):
            path = os.path.join(disks, instance.uuid)
            glance.API().download(context, image_meta.id, dest_path=path)
            super().spawn(context, instance, image_meta, injected_files,
                          admin_password, allocations, network_info,
                          block_device_info, power_on, accel_info)

        def snapshot(self, context, instance, image_id, update_task_state):
            try:
                self._snapshot(context, instance, image_id,
                               update_task_state)
            except Exception:
                LOG.exception('snapshot of %s failed', instance.uuid)
                raise

        def _snapshot(self, context, instance, image_id, update_task_state):
            super().snapshot(context, instance, image_id, update_task_state)
            path = os.path.join(disks, instance.uuid)
            with open(path, 'rb') as data:
                # What the disk is (its image may be gone already).
                fmt = 'qcow2' if data.read(4) == b'QFI\xfb' else 'raw'
            meta = {'disk_format': fmt, 'container_format': 'bare'}
            with open(path, 'rb') as data:
                glance.API().update(context, image_id, meta, data=data)

        def destroy(self, context, instance, network_info,
                    block_device_info=None, destroy_disks=True,
                    destroy_secrets=True):
            super().destroy(context, instance, network_info,
                            block_device_info, destroy_disks,
                            destroy_secrets)
            if destroy_disks:
                try:
                    os.unlink(os.path.join(disks, instance.uuid))
                except FileNotFoundError:
                    pass

    assert task_states  # the base class reports the task states
    module = types.ModuleType('nova.virt.xhvtestfile')
    module.FileDriver = FileDriver
    sys.modules[module.__name__] = module
    return module


class _ThreadingServer(socketserver.ThreadingMixIn,
                       simple_server.WSGIServer):
    daemon_threads = True


class _Quiet(simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main(state, port):
    conf_file = os.path.join(state, 'nova.conf')
    sqlite_writers.serialize()
    from nova import config
    from nova import objects
    from oslo_config import cfg
    from oslo_log import log as logging
    config.parse_args(['remote_nova', '--config-file', conf_file])
    logging.setup(cfg.CONF, 'nova')
    objects.register_all()
    file_driver_module(state)
    from nova import service
    services = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    httpd = None
    try:
        for binary in ('nova-conductor', 'nova-scheduler'):
            svc = service.Service.create(binary=binary)
            svc.start()
            services.append(svc)
        compute = service.Service.create(binary='nova-compute', host=HOST)
        compute.start()
        services.append(compute)
        from nova.api.openstack import wsgi_app
        from paste import deploy
        wsgi_app._setup_service(cfg.CONF.host, 'osapi_compute')
        app = deploy.loadapp('config:%s' % cfg.CONF.wsgi.api_paste_config,
                             name='osapi_compute')
        httpd = simple_server.make_server('127.0.0.1', port, app,
                                          server_class=_ThreadingServer,
                                          handler_class=_Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        ready = os.path.join(state, 'nova-ready')
        with open(ready + '.tmp', 'w') as f:
            json.dump({'port': httpd.server_address[1],
                       'pid': os.getpid()}, f)
        os.rename(ready + '.tmp', ready)
        stop.wait()
    finally:
        if httpd is not None:
            httpd.shutdown()
        for svc in reversed(services):
            try:
                svc.stop()
            except Exception:  # noqa: S110  best effort at exit
                pass
        shutil.rmtree(os.path.join(state, 'disks'), ignore_errors=True)


if __name__ == '__main__':
    main(os.path.abspath(sys.argv[1]), int(sys.argv[2]))
