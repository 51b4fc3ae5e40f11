"""Bring the OpenStack services of the all-in-one up and take them down."""

import os
import subprocess
import time

import yaml

import block_storage
import families
import network
import region_two
import services
from services import log
import xhv_policy

NOVA_SERVICES = ('nova-conductor', 'nova-scheduler')
# Stop order: computes first (they hold instances), infrastructure last.
STOP_ORDER = (['nova-compute-%s' % b for b in services.BACKENDS] +
              list(reversed(block_storage.SERVICES)) +
              ['nova-scheduler', 'nova-conductor', 'nova-api', 'neutron',
               'placement', 'glance', 'keystone'] + list(families.SERVICES) +
              ['vcsim', 'rabbitmq',
               'epmd', 'mariadb', 'libvirtd', 'virtlogd'])
CLOUD_NAME = 'xhv-aio'
# A Nova service that logs this at start stays alive but never gets ready.
NOVA_FATAL = r'[^\n]*(ERROR nova \[|CRITICAL )[^\n]*'


# glanceclient (cinder-volume's upload to image, Nova's snapshots) streams
# a body of unknown size as HTTP chunks of 1 MiB; uWSGI's chunked reader
# refuses any chunk bigger than --chunked-input-limit (default 1 MiB, and
# a chunk needs 2 bytes more for its CRLF), so without a higher limit every
# upload over 1 MiB fails with "unable to receive chunked part" (issue 25).
# devstack never sees it because Apache re-chunks the body in front of
# uWSGI; here clients talk to uWSGI directly.  socket-timeout 30 is
# devstack's value for slow chunked uploads.
GLANCE_UWSGI_OPTIONS = ['--http-chunked-input', '--http-raw-body',
                        '--http-auto-chunked',
                        '--chunked-input-limit', str(16 * 1024 * 1024),
                        '--socket-timeout', '30']


def clouds_yaml_path():
    return os.path.expanduser('~/.config/openstack/clouds.yaml')


def write_clouds_yaml(password):
    path = clouds_yaml_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        data = {}
    data.setdefault('clouds', {})[CLOUD_NAME] = {
        'auth': {'auth_url': 'http://127.0.0.1:5000/v3',
                 'username': 'admin', 'password': password,
                 'project_name': 'admin', 'user_domain_name': 'Default',
                 'project_domain_name': 'Default'},
        'region_name': 'RegionOne', 'identity_api_version': 3,
        'interface': 'public'}
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        yaml.safe_dump(data, f, default_flow_style=False)
    os.replace(path + '.tmp', path)


def connect():
    import openstack
    return openstack.connect(cloud=CLOUD_NAME)


class Stack:
    def __init__(self, cloud):
        self.cloud = cloud
        self.procs = cloud.procs
        self.storage = block_storage.BlockStorage(cloud)

    def up(self, backends=None):
        backends = backends or families.selected(services.BACKENDS)
        c = self.cloud
        c.write_configs()
        self.storage.write_configs()
        xhv_policy.write_configs(c)
        c.mariadb()
        c.rabbitmq()
        network.start(c)  # OVS + OVN: neutron-server connects at start
        if 'libvirt' in backends:
            c.libvirtd()
        if 'vmware' in backends:
            c.vcsim()
        families.start(c, backends)
        self.keystone()
        self.glance_placement_neutron()
        # Cinder starts while Nova does; both are waited for below.
        self.storage.start()
        self.nova(backends)
        self.storage.wait(connect())

    def keystone(self):
        c = self.cloud
        conf = c.conf('keystone', 'keystone.conf')
        kman = ['keystone-manage', '--config-file', conf]

        def init():
            c.manage(kman + ['db_sync'])
            for what in ('fernet_setup', 'credential_setup'):
                c.manage(kman + [what, '--keystone-user', 'root',
                                 '--keystone-group', 'root'])
            url = 'http://127.0.0.1:5000/v3/'
            c.manage(kman + ['bootstrap', '--bootstrap-password',
                             c.secrets['admin'], '--bootstrap-region-id',
                             'RegionOne', '--bootstrap-admin-url', url,
                             '--bootstrap-internal-url', url,
                             '--bootstrap-public-url', url])
        c.once('keystone-init', [conf], init)
        c.wsgi('keystone')
        c.wait_wsgi('keystone', '/v3')
        write_clouds_yaml(c.secrets['admin'])
        c.once('keystone-catalog', [conf, c.conf('secrets.json')],
               self.catalog)

    def catalog(self):
        """Service project, service users and endpoints (idempotent)."""
        conn = connect()
        ident = conn.identity
        project = (ident.find_project('service', domain_id='default') or
                   ident.create_project(name='service',
                                        domain_id='default'))
        roles = {r.name: r for r in ident.roles()}
        for name in ('admin', 'service'):
            if name not in roles:
                roles[name] = ident.create_role(name=name)
        for name, svc_type, url in services.CATALOG_ALIASES:
            self._endpoints(ident, name, svc_type, url)
        for name, svc_type, url in services.CATALOG:
            pw = self.cloud.secrets['svc_' + name]
            user = ident.find_user(name, domain_id='default')
            if user is None:
                user = ident.create_user(name=name, password=pw,
                                         domain_id='default')
            else:
                ident.update_user(user, password=pw)
            for role in ('admin', 'service'):
                ident.assign_project_role_to_user(project, user,
                                                  roles[role])
            self._endpoints(ident, name, svc_type, url)

    @staticmethod
    def _endpoints(ident, name, svc_type, url):
        svc = next((s for s in ident.services() if s.type == svc_type),
                   None) or ident.create_service(name=name, type=svc_type)
        have = {(e.interface, e.url)
                for e in ident.endpoints(service_id=svc.id)}
        for interface in ('public', 'internal'):
            if (interface, url) not in have:
                ident.create_endpoint(service_id=svc.id, url=url,
                                      interface=interface,
                                      region_id='RegionOne')

    def glance_placement_neutron(self):
        c = self.cloud
        gconf = c.conf('glance', 'glance-api.conf')
        c.once('glance-db-sync', [gconf], lambda: c.manage(
            ['glance-manage', '--config-file', gconf, 'db_sync']))
        c.wsgi('glance', GLANCE_UWSGI_OPTIONS)
        pconf = c.conf('placement', 'placement.conf')
        c.once('placement-db-sync', [pconf], lambda: c.manage(
            ['placement-manage', '--config-file', pconf, 'db', 'sync']))
        c.wsgi('placement')
        nconf = [c.conf('neutron', 'neutron.conf'),
                 c.conf('neutron', 'plugins', 'ml2', 'ml2_conf.ini')]
        c.once('neutron-db-sync', nconf, lambda: c.manage(
            ['neutron-db-manage', '--config-file', nconf[0],
             '--config-file', nconf[1], 'upgrade', 'heads']))
        c.wsgi('neutron')
        c.wait_wsgi('glance', '/')
        c.wait_wsgi('placement', '/')
        c.wait_wsgi('neutron', '/')
        # neutron 29 answers the first port query of a fresh process with
        # a 500 (Port.port_forwardings exists only once SQLAlchemy has
        # configured its mappers, which any other query does first) and
        # Nova's first call is a port query: list networks first.
        conn = connect()
        self.procs.wait_for('neutron', lambda: (
            list(conn.network.networks()) is not None and
            list(conn.network.ports()) is not None), 60,
            'answering port queries')

    def nova(self, backends):
        c = self.cloud
        conf = c.conf('nova', 'nova.conf')
        cell0 = ('mysql+pymysql://nova:%s@127.0.0.1/nova_cell0?charset=utf8'
                 % c.secrets['db_nova'])
        nman = ['nova-manage', '--config-file', conf]
        c.nova_db_init('nova-db-sync', conf, cell0)
        c.wsgi('nova-api')
        for name in NOVA_SERVICES:
            self.procs.start(name, [os.path.join(c.bin, name),
                                    '--config-file', conf],
                             config_files=[conf], code=c.xhv_code())
        for backend in backends:
            # KVM: nova-compute counting only the cloud's own domains
            # (tools/aio/own_domains.py): libvirtd may serve test beds too.
            binary = ([os.path.join(c.bin, 'python'), os.path.join(
                os.path.dirname(os.path.abspath(__file__)), 'own_domains.py')]
                if backend == 'libvirt' else
                [os.path.join(c.bin, 'nova-compute')])
            self.procs.start('nova-compute-%s' % backend, binary + [
                '--config-file',
                c.conf('nova', 'nova-compute.conf'),
                '--config-file', c.conf('nova', 'nova-compute-%s.conf'
                                        % backend)],
                config_files=c.config_files('nova-compute-%s' % backend),
                code=c.xhv_code(), env=(self.storage.kvm_compute_env()
                                        if backend == 'libvirt' else None))
        c.wait_wsgi('nova-api', '/')
        conn = connect()
        # (our process, Nova binary, host it reports; None: any host)
        wanted = [(name, name, None) for name in NOVA_SERVICES]
        wanted += [('nova-compute-%s' % b, 'nova-compute',
                    services.HOSTS[b]) for b in backends]
        for name, binary, host in wanted:
            self.procs.wait_for(name, lambda: any(
                s.binary == binary and s.state == 'up' and
                (host is None or s.host == host)
                for s in conn.compute.services()), 180, 'up in Nova',
                fatal=NOVA_FATAL)
        # Map the new computes to cell1, then wait for their nodes.
        c.manage(nman + ['cell_v2', 'discover_hosts'])
        for b in backends:
            host = services.HOSTS[b]
            self.procs.wait_for('nova-compute-%s' % b, lambda: any(
                h.service_details and
                h.service_details.get('host') == host
                for h in conn.compute.hypervisors(details=True)), 120,
                'listed as a hypervisor')

    # -- down -------------------------------------------------------------

    def delete_servers(self, timeout=120):
        """Delete every server through Nova so its domain/VM goes too."""
        if not (self.procs.pid('nova-api') and self.procs.pid('keystone')):
            return []
        try:
            conn = connect()
            servers = list(conn.compute.servers(all_projects=True))
        except Exception as exc:  # noqa: B902 - cloud half up: report
            log('could not list servers (%s)' % exc)
            return []
        for s in servers:
            log('deleting server %s (%s)' % (s.name, s.id))
            try:
                if s.status == 'VERIFY_RESIZE':
                    conn.compute.revert_server_resize(s)
                    conn.compute.wait_for_server(s, status='ACTIVE',
                                                 wait=120)
                conn.compute.delete_server(s, force=False)
            except Exception as exc:  # noqa: B902
                log('delete %s failed: %s' % (s.id, exc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not list(conn.compute.servers(all_projects=True)):
                break
            time.sleep(1)
        return [s.id for s in servers]

    def delete_demo_storage(self):
        """The demo's volumes and images (their data outlives down)."""
        prefix = services.DEMO_PREFIX
        if not self.procs.pid('keystone'):
            return
        try:
            conn = connect()
            if self.procs.pid('cinder-api') and self.procs.pid(
                    'cinder-volume'):
                block_storage.delete_volumes(conn, prefix)
            if self.procs.pid('glance'):
                for image in list(conn.image.images()):
                    if (image.name or '').startswith(prefix):
                        log('deleting image %s (%s)' % (image.name,
                                                        image.id))
                        conn.image.delete_image(image)
        except Exception as exc:  # noqa: B902 - cloud half up: report
            log('could not delete the demo\'s volumes and images (%s)'
                % exc)

    def our_instance_uuids(self):
        """Instances Nova's DB places on the KVM compute (any state)."""
        if not self.procs.pid('mariadb'):
            return []
        try:
            out = self.cloud.sql(
                "SELECT uuid FROM nova.instances WHERE host='%s' OR "
                "node IN (SELECT hypervisor_hostname FROM "
                "nova.compute_nodes WHERE host='%s');"
                % ((services.HOSTS['libvirt'],) * 2))
        except Exception:  # noqa: B902 - no DB yet
            return []
        return out.split()

    def down(self):
        self.cloud.socket = os.path.join(self.cloud.state, 'run', 'mysqld',
                                         'mysqld.sock')
        self.delete_servers()
        self.delete_demo_storage()
        uuids = set(self.our_instance_uuids())
        uuids |= set(self._recorded_uuids())
        # RegionTwo (if up) and its domains go while libvirtd still runs.
        stopped, removed = region_two.down(self.cloud)
        order = STOP_ORDER + [n for n in self.procs.names()
                              if n not in STOP_ORDER]
        computes = [n for n in order if n.startswith('nova-compute-')]
        for name in computes:
            if self.procs.stop(name):
                stopped.append(name)
        # Before libvirtd goes (when it is ours): a later KVM nova-compute
        # refuses to start while libvirtd holds any domain.
        removed += remove_domains(uuids)
        stopped += network.stop(self.cloud)
        # cinder-volume goes before its share is unmounted.
        cinder_stopped, unmounted = self.storage.stop()
        stopped += cinder_stopped
        for point in unmounted:
            log('unmounted the xhv-nfs share at %s' % point)
        for name in order:
            if name not in computes and self.procs.stop(name):
                stopped.append(name)
        return stopped, removed

    def _recorded_uuids(self):
        path = os.path.join(self.cloud.state, 'demo-servers')
        try:
            with open(path) as f:
                return f.read().split()
        except FileNotFoundError:
            return []


def remove_domains(uuids):
    """Destroy and undefine the libvirt domains with these uuids."""
    removed = []
    for uuid in uuids:
        info = subprocess.run(['virsh', '-c', 'qemu:///system', 'dominfo',
                               uuid], capture_output=True, text=True)
        if info.returncode:
            continue
        subprocess.run(['virsh', '-c', 'qemu:///system', 'destroy', uuid],
                       capture_output=True)
        subprocess.run(['virsh', '-c', 'qemu:///system', 'undefine',
                        '--nvram', uuid], capture_output=True)
        removed.append(uuid)
    return removed


def status(cloud):
    rows = []
    for name in STOP_ORDER + [n for n in cloud.procs.names()
                              if n not in STOP_ORDER]:
        pid = cloud.procs.pid(name)
        if pid or os.path.exists(cloud.procs.pidfile(name)):
            rows.append((name, str(pid) if pid else '-',
                         'running' if pid else 'DEAD',
                         cloud.procs.log_path(name)))
    return rows
