"""The connection to the remote cloud: one clouds.yaml entry, TLS verified.

The entry's secrets (password, application credential secret) stay in
openstacksdk's CloudRegion: nothing here logs or copies them.  An entry
that turns TLS verification off is refused unless ``[xhv_cloud]
insecure`` says a lab wants it.
"""

import uuid

from nova_xhv.backends.cloud import errors

APP_NAME = 'nova-xhv-cloud'
#: Remote server (and snapshot) metadata: the home instance it stands for.
HOME_UUID = 'xhv_home_uuid'


def _import_sdk():
    try:
        import openstack.config
        import openstack.connection
    except ImportError as exc:
        raise ImportError('the XHV cloud backend needs openstacksdk (pip '
                          'install openstack-xhv[cloud])',
                          name='openstack') from exc
    return openstack


def connect(conf):
    """An openstack.connection.Connection for ``[xhv_cloud]`` ``conf``."""
    openstack = _import_sdk()
    name = conf.cloud
    if not name:
        raise errors.RemoteConfigError(
            cloud='(none)', reason='[xhv_cloud] cloud names no clouds.yaml '
                                   'entry')
    files = [conf.clouds_yaml] if conf.clouds_yaml else None
    with errors.remote_call(name, 'reading clouds.yaml'):
        config = openstack.config.OpenStackConfig(
            config_files=files, load_envvars=False, app_name=APP_NAME)
        extra = {'api_timeout': conf.api_timeout}
        if conf.region:
            extra['region_name'] = conf.region
        if conf.ca_file:
            extra['cacert'] = conf.ca_file
        region = config.get_one(cloud=name, **extra)
    if region.config.get('verify') is False and not conf.insecure:
        raise errors.RemoteConfigError(
            cloud=name, reason='its clouds.yaml entry turns TLS verification '
                               'off (verify: false); set [xhv_cloud] '
                               'insecure = true only for a lab')
    return openstack.connection.Connection(config=region,
                                           app_name=APP_NAME)


def identity(conn, cloud):
    """(auth URL, region, project id): who this compute is, remotely."""
    with errors.remote_call(cloud, 'authenticating'):
        project = conn.current_project_id
    auth_url = conn.config.get_auth_args().get('auth_url') or ''
    return auth_url, conn.config.get_region_name() or '', project


def node_uuid(auth_url, region, project):
    """A stable uuid for the node of one project in one region."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, '%s|%s|%s' % (
        auth_url.rstrip('/'), region, project)))


class Part:
    """A piece of the backend that talks to the remote cloud.

    It reads the backend's connection, cloud name and options when it
    works (the connection exists only after ``init_host``).
    """

    def __init__(self, backend):
        self.backend = backend

    @property
    def conn(self):
        return self.backend.conn

    @property
    def cloud(self):
        return self.backend.cloud

    @property
    def conf(self):
        return self.backend.conf

    def call(self, call):
        return errors.remote_call(self.cloud, call)
