"""RegionTwo: a second region of the all-in-one, the cloud backend's remote.

``tools/xhv-aio up --with-region-two`` (or XHV_AIO_REGION_TWO=1) starts,
after the rest of the cloud, a second OpenStack region on the SAME
Keystone, MariaDB and RabbitMQ: its own databases (``r2_*``), its own
RabbitMQ vhost (``region-two``), its own Glance, Placement, neutron-server
(ML2 with flat networks and no mechanism driver: the demo's servers have
no ports, so nothing needs plugging), nova-api/conductor/scheduler and ONE
stock libvirt nova-compute (``compute_driver = libvirt.LibvirtDriver``,
host ``r2-kvm``) on the shared libvirtd, with its own instance names
(``xhv-r2-%08x``) and instances path and the virt_type/CPU settings the
KVM compute got from xhv-guest-probe.  Its services reuse RegionOne's
service users (one Keystone); its endpoints are registered for RegionTwo.

XHV reaches it as the project ``region-two`` through an application
credential written into a private clouds.yaml (0600, never an argv or an
environment): RegionOne's ``aio-cloud`` nova-compute runs ``[xhv] backend
= cloud`` against that entry.  ``down`` deletes what is left in RegionTwo,
stops its services and removes its ``xhv-r2-`` libvirt domains.
"""

import os
import shutil
import subprocess
import time

import yaml

import services
from services import log

REGION = 'RegionTwo'
ENABLE_ENV = 'XHV_AIO_REGION_TWO'
HOST = 'r2-kvm'             # RegionTwo's stock libvirt nova-compute
CLOUD_HOST = 'aio-cloud'    # RegionOne's XHV cloud compute
CLOUD_COMPUTE = 'nova-compute-cloud'
ENTRY = 'xhv-aio-region-two'
PROJECT = 'region-two'
USER = 'region-two'
VHOST = 'region-two'
DB_USER = 'region_two'
DATABASES = ('r2_glance', 'r2_placement', 'r2_neutron', 'r2_nova_api',
             'r2_nova_cell0', 'r2_nova')
PORTS = {'r2-glance': 9392, 'r2-placement': 8878, 'r2-neutron': 9796,
         'r2-nova-api': 8874}
EXCHANGE_PORT = 8803        # the cloud compute's disk exchange
INSTANCE_NAME_PREFIX = 'xhv-r2-'
NOVA_CONTROL = ('r2-nova-conductor', 'r2-nova-scheduler')
COMPUTE = 'r2-nova-compute'
# Stop order: the computes first, the APIs last.
SERVICES = (COMPUTE, 'r2-nova-scheduler', 'r2-nova-conductor',
            'r2-nova-api', 'r2-neutron', 'r2-placement', 'r2-glance')
CATALOG = (('glance', 'image', 'http://127.0.0.1:9392'),
           ('placement', 'placement', 'http://127.0.0.1:8878'),
           ('neutron', 'network', 'http://127.0.0.1:9796'),
           ('nova', 'compute', 'http://127.0.0.1:8874/v2.1'),
           ('keystone', 'identity', 'http://127.0.0.1:5000/v3/'))
WSGI = {'r2-glance': ('glance.wsgi.api:application', 'OS_GLANCE_CONFIG_DIR',
                      'glance'),
        'r2-placement': ('placement.wsgi.api:application',
                         'OS_PLACEMENT_CONFIG_DIR', 'placement'),
        'r2-neutron': ('neutron.wsgi.api:application',
                       'OS_NEUTRON_CONFIG_DIR', 'neutron'),
        'r2-nova-api': ('nova.wsgi.osapi_compute:application',
                        'OS_NOVA_CONFIG_DIR', 'nova')}
FLAVOR = ('xhv-tiny', 64, 1, 1)  # the demo's flavor: name, MiB, GiB, vCPUs


def enabled(flag=False):
    return flag or os.environ.get(ENABLE_ENV, '') not in ('', '0')


def is_up(cloud):
    """True when this all-in-one runs RegionTwo (the demo adds its steps)."""
    return bool(cloud.procs.pid(COMPUTE) and cloud.procs.pid(CLOUD_COMPUTE))


def _private(path, text):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)
    return path


def _ini(sections):
    out = []
    for name, options in sections:
        out.append('[%s]' % name)
        out += ['%s = %s' % kv for kv in options]
        out.append('')
    return '\n'.join(out)


class RegionTwo:
    def __init__(self, cloud):
        self.cloud = cloud
        self.procs = cloud.procs
        self.etc = os.path.join(cloud.etc, 'region-two')
        self.lib = os.path.join(cloud.lib, 'region-two')
        self.instances = os.path.join(self.lib, 'nova-%s' % HOST,
                                      'instances')
        self.clouds_yaml = os.path.join(self.etc, 'clouds.yaml')
        self.secrets = self._secrets()

    # -- configuration ----------------------------------------------------

    def _secrets(self):
        return services.load_secrets(os.path.join(self.etc, 'secrets.json'),
                                     ('db', 'user'))

    def conf(self, *parts):
        return os.path.join(self.etc, *parts)

    def _db(self, name):
        return ('mysql+pymysql://%s:%s@127.0.0.1/%s?charset=utf8'
                % (DB_USER, self.secrets['db'], name))

    def _transport(self):
        return ('rabbit://openstack:%s@127.0.0.1:5672/%s'
                % (self.cloud.secrets['rabbit'], VHOST))

    def _authtoken(self, user):
        return [('www_authenticate_uri', 'http://127.0.0.1:5000'),
                ('auth_url', 'http://127.0.0.1:5000'),
                ('auth_type', 'password'),
                ('project_domain_name', 'Default'),
                ('user_domain_name', 'Default'),
                ('project_name', 'service'), ('username', user),
                ('password', self.cloud.secrets['svc_' + user]),
                ('service_token_roles_required', 'true')]

    def _service_auth(self, user):
        return [('auth_url', 'http://127.0.0.1:5000/v3'),
                ('auth_type', 'password'),
                ('project_domain_name', 'Default'),
                ('user_domain_name', 'Default'),
                ('project_name', 'service'), ('username', user),
                ('password', self.cloud.secrets['svc_' + user]),
                ('region_name', REGION)]

    def write_configs(self):
        c = self.cloud
        lib = self.lib
        for d in ('glance/images', 'glance/staging', 'glance/tasks',
                  'glance/locks', 'neutron/locks', 'nova/locks'):
            os.makedirs(os.path.join(lib, d), exist_ok=True)
        os.makedirs(self.instances, exist_ok=True)
        os.makedirs(self.conf('glance'), exist_ok=True)
        shutil.copy(os.path.join(c.venv, 'etc/glance/glance-api-paste.ini'),
                    self.conf('glance', 'glance-api-paste.ini'))
        _private(self.conf('glance', 'glance-api.conf'), _ini([
            ('DEFAULT', [('use_stderr', 'true'),
                         ('enabled_backends', 'local:file'),
                         ('disk_formats', 'raw,qcow2,vmdk,vhd,vhdx,iso')]),
            ('database', [('connection', self._db('r2_glance'))]),
            ('glance_store', [('default_backend', 'local')]),
            ('local', [('filesystem_store_datadir', lib + '/glance/images')]),
            ('os_glance_staging_store', [('filesystem_store_datadir',
                                          lib + '/glance/staging')]),
            ('os_glance_tasks_store', [('filesystem_store_datadir',
                                        lib + '/glance/tasks')]),
            ('paste_deploy', [('flavor', 'keystone'), (
                'config_file', self.conf('glance', 'glance-api-paste.ini'))]),
            ('keystone_authtoken', self._authtoken('glance')),
            ('oslo_concurrency', [('lock_path', lib + '/glance/locks')])]))
        _private(self.conf('placement', 'placement.conf'), _ini([
            ('DEFAULT', [('use_stderr', 'true')]),
            ('api', [('auth_strategy', 'keystone')]),
            ('placement_database', [('connection',
                                     self._db('r2_placement'))]),
            ('keystone_authtoken', self._authtoken('placement'))]))
        # No mechanism driver: RegionTwo's servers boot without ports
        # (the cloud backend asks for networks "none" when the home server
        # has none), so nothing is ever bound or plugged.
        _private(self.conf('neutron', 'neutron.conf'), _ini([
            ('DEFAULT', [('use_stderr', 'true'), ('bind_host', '127.0.0.1'),
                         # neutron 29's port queries read a relation
                         # only the router plugin's models define.
                         ('core_plugin', 'ml2'),
                         ('service_plugins', 'router'),
                         ('auth_strategy', 'keystone'),
                         ('transport_url', self._transport()),
                         ('api_paste_config',
                          c.venv + '/etc/neutron/api-paste.ini'),
                         ('notify_nova_on_port_status_changes', 'false'),
                         ('notify_nova_on_port_data_changes', 'false')]),
            ('database', [('connection', self._db('r2_neutron'))]),
            ('keystone_authtoken', self._authtoken('neutron')),
            ('oslo_concurrency', [('lock_path', lib + '/neutron/locks')])]))
        _private(self.conf('neutron', 'ml2_conf.ini'), _ini([
            ('ml2', [('type_drivers', 'flat'),
                     ('tenant_network_types', ''),
                     ('mechanism_drivers', ''),
                     ('extension_drivers', 'port_security')]),
            ('ml2_type_flat', [('flat_networks', '*')])]))
        os.makedirs(self.conf('nova'), exist_ok=True)
        shutil.copy(os.path.join(c.venv, 'etc/nova/api-paste.ini'),
                    self.conf('nova', 'api-paste.ini'))
        compute_conf = self.conf('nova-compute', 'nova-compute.conf')
        helper = ('%s/bin/privsep-helper --config-file %s --config-file %s'
                  % (c.venv, self.conf('nova-compute', 'nova.conf'),
                     compute_conf))
        common = [
            ('DEFAULT', [('my_ip', '127.0.0.1'), ('use_stderr', 'true'),
                         ('state_path', lib + '/nova'),
                         ('transport_url', self._transport()),
                         # Apart from RegionOne's xhv-aio-* domains and
                         # anybody's instance-*: down removes xhv-r2-*.
                         ('instance_name_template',
                          INSTANCE_NAME_PREFIX + '%08x'),
                         ('shutdown_timeout', '0'),
                         ('report_interval', '5'),
                         ('service_down_time', '30'),
                         ('graceful_shutdown_timeout', '5')]),
            ('api', [('auth_strategy', 'keystone')]),
            ('wsgi', [('api_paste_config',
                       self.conf('nova', 'api-paste.ini'))]),
            ('keystone_authtoken', self._authtoken('nova')),
            ('service_user', [('send_service_user_token', 'true')] +
             self._service_auth('nova')[:-1]),
            ('placement', self._service_auth('placement')),
            ('neutron', self._service_auth('neutron')),
            ('glance', [('region_name', REGION)]),
            ('cinder', [('os_region_name', REGION)]),
            ('conductor', [('workers', '1')]),
            ('scheduler', [('workers', '1'),
                           ('discover_hosts_in_cells_interval', '-1')]),
            ('filter_scheduler', [('enabled_filters',
                                   'ComputeFilter,ImagePropertiesFilter')]),
            ('oslo_concurrency', [('lock_path', lib + '/nova/locks')]),
            ('oslo_messaging_notifications', [('driver', 'noop')]),
            ('nova_sys_admin', [('helper_command', helper)]),
            ('vnc', [('enabled', 'false')])]
        _private(self.conf('nova', 'nova.conf'), _ini(common + [
            ('api_database', [('connection', self._db('r2_nova_api'))]),
            ('database', [('connection', self._db('r2_nova'))])]))
        _private(self.conf('nova-compute', 'nova.conf'), _ini(common))
        virt_type, cpu_lines = c.libvirt_cpu()
        state = os.path.join(lib, 'nova-%s' % HOST)
        _private(compute_conf, _ini([
            ('DEFAULT', [('host', HOST),
                         ('compute_driver', 'libvirt.LibvirtDriver'),
                         ('state_path', state),
                         ('instances_path', self.instances)]),
            ('libvirt', [('virt_type', virt_type),
                         ('connection_uri', 'qemu:///system')])]) +
            cpu_lines + '\n')
        # RegionOne's XHV compute standing for RegionTwo's project.
        os.makedirs(os.path.join(c.lib, 'nova-%s' % CLOUD_HOST),
                    exist_ok=True)
        _private(c.conf('nova', '%s.conf' % CLOUD_COMPUTE), _ini([
            ('DEFAULT', [('host', CLOUD_HOST),
                         ('compute_driver', 'xhv.XHVDriver'),
                         ('state_path', os.path.join(
                             c.lib, 'nova-%s' % CLOUD_HOST))]),
            ('xhv', [('backend', 'cloud'),
                     ('exchange_secret', c.secrets['exchange']),
                     ('exchange_bind_host', '127.0.0.1'),
                     ('exchange_port', str(EXCHANGE_PORT)),
                     ('exchange_use_tls', 'false')]),
            ('xhv_cloud', [('cloud', ENTRY),
                           ('clouds_yaml', self.clouds_yaml)])]))

    # -- start ------------------------------------------------------------

    def up(self):
        c = self.cloud
        start = time.monotonic()
        self.write_configs()
        self.databases()
        self.vhost()
        self.admin_entry()
        conn = self.catalog()
        self.init_databases()
        for name in ('r2-glance', 'r2-placement', 'r2-neutron'):
            self.wsgi(name)
        for name in ('r2-glance', 'r2-placement', 'r2-neutron'):
            self.wait_wsgi(name)
        # As RegionOne's (stack.py): a fresh neutron-server answers its
        # first port query with a 500 until another query configured the
        # mappers; Nova's first call is a port query.
        admin = self.admin()
        self.procs.wait_for('r2-neutron', lambda: (
            list(admin.network.networks()) is not None and
            list(admin.network.ports()) is not None), 60,
            'answering port queries')
        self.nova()
        self.credential(conn)
        self.cloud_compute()
        log('RegionTwo up in %.1f s' % (time.monotonic() - start))
        return c

    def databases(self):
        pw = self.secrets['db']
        sql = ["CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY "
               "'%s';" % (DB_USER, pw),
               "ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
               % (DB_USER, pw)]
        for db in DATABASES:
            sql.append('CREATE DATABASE IF NOT EXISTS %s CHARACTER SET '
                       'utf8mb4;' % db)
            sql.append("GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                       % (db, DB_USER))
        self.cloud.sql('\n'.join(sql))

    def vhost(self):
        ctl = ['rabbitmqctl', '-q', '-n', 'rabbit@localhost']
        services.run(ctl + ['add_vhost', VHOST], check=False)
        services.run(ctl + ['set_permissions', '-p', VHOST, 'openstack',
                            '.*', '.*', '.*'])

    def catalog(self):
        """RegionTwo's region, endpoints, project and user (idempotent)."""
        import stack
        conn = stack.connect()
        ident = conn.identity
        if ident.find_region(REGION) is None:
            ident.create_region(id=REGION)
        for name, svc_type, url in CATALOG:
            svc = next((s for s in ident.services() if s.type == svc_type),
                       None) or ident.create_service(name=name,
                                                     type=svc_type)
            have = {(e.interface, e.region_id)
                    for e in ident.endpoints(service_id=svc.id)}
            for interface in ('public', 'internal'):
                if (interface, REGION) not in have:
                    ident.create_endpoint(service_id=svc.id, url=url,
                                          interface=interface,
                                          region_id=REGION)
        project = (ident.find_project(PROJECT, domain_id='default') or
                   ident.create_project(name=PROJECT, domain_id='default'))
        user = ident.find_user(USER, domain_id='default')
        # Made once with its password (both live in this state folder): a
        # password update on every up would revoke the user's tokens, and
        # Keystone's revocation (by the second) the one we get next too.
        if user is None:
            user = ident.create_user(name=USER, domain_id='default',
                                     password=self.secrets['user'],
                                     default_project_id=project.id)
        member = ident.find_role('member')
        ident.assign_project_role_to_user(project, user, member)
        self.project_id = project.id
        return conn

    def _sync(self, name, conf, argv):
        c = self.cloud
        c.once(name, [conf], lambda: c.manage(argv))

    def init_databases(self):
        """db syncs, run in parallel (each waits on MariaDB, not CPU)."""
        c = self.cloud
        gconf = self.conf('glance', 'glance-api.conf')
        pconf = self.conf('placement', 'placement.conf')
        nconf = [self.conf('neutron', 'neutron.conf'),
                 self.conf('neutron', 'ml2_conf.ini')]
        jobs = [('r2-glance-db-sync', [gconf],
                 ['glance-manage', '--config-file', gconf, 'db_sync']),
                ('r2-placement-db-sync', [pconf],
                 ['placement-manage', '--config-file', pconf, 'db', 'sync']),
                ('r2-neutron-db-sync', nconf,
                 ['neutron-db-manage', '--config-file', nconf[0],
                  '--config-file', nconf[1], 'upgrade', 'heads'])]
        running = []
        done = os.path.join(c.state, 'done')
        os.makedirs(done, exist_ok=True)
        for name, inputs, argv in jobs:
            marker = os.path.join(done, name)
            digest = _digest(inputs)
            try:
                with open(marker) as f:
                    if f.read() == digest:
                        continue
            except FileNotFoundError:
                pass
            log(name)
            proc = subprocess.Popen(
                [os.path.join(c.bin, argv[0])] + argv[1:],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((name, marker, digest, proc))
        failed = []
        for name, marker, digest, proc in running:
            out = proc.communicate()[0]
            if proc.returncode:
                failed.append('%s (exit %d): %s' % (name, proc.returncode,
                                                    out[-2000:]))
                continue
            with open(marker, 'w') as f:
                f.write(digest)
        if failed:
            import procs
            raise procs.ServiceFailed('\n'.join(failed))

    def wsgi(self, name):
        c = self.cloud
        module, env_name, project = WSGI[name]
        folder = self.conf(project)
        argv = [os.path.join(c.bin, 'uwsgi'),
                '--http-socket', '127.0.0.1:%d' % PORTS[name],
                '--module', module, '--virtualenv', c.venv,
                '--master', '--processes', '1', '--threads', '4',
                '--enable-threads', '--lazy-apps', '--need-app',
                '--die-on-term', '--buffer-size', '65535',
                '--hook-master-start',
                'unix_signal:15 gracefully_kill_them_all',
                '--add-header', 'Connection: close']
        if name == 'r2-neutron':
            argv += ['--env', 'OS_NEUTRON_CONFIG_FILES=%s;%s' % (
                self.conf('neutron', 'neutron.conf'),
                self.conf('neutron', 'ml2_conf.ini'))]
        else:
            argv += ['--env', '%s=%s' % (env_name, folder)]
        if name == 'r2-glance':
            import stack
            argv += stack.GLANCE_UWSGI_OPTIONS
        files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                 if f.endswith(('.conf', '.ini'))]
        self.procs.start(name, argv, config_files=files)

    def wait_wsgi(self, name):
        url = 'http://127.0.0.1:%d/' % PORTS[name]
        self.procs.wait_for(name, lambda: services.http_answers(url), 120,
                            'answering %s' % url)

    def nova(self):
        import stack
        c = self.cloud
        conf = self.conf('nova', 'nova.conf')
        nman = ['nova-manage', '--config-file', conf]
        c.nova_db_init('r2-nova-db-sync', conf, self._db('r2_nova_cell0'))
        self.wsgi('r2-nova-api')
        for name in NOVA_CONTROL:
            self.procs.start(name, [os.path.join(
                c.bin, name[3:]), '--config-file', conf],
                config_files=[conf])
        compute_files = [self.conf('nova-compute', 'nova.conf'),
                         self.conf('nova-compute', 'nova-compute.conf')]
        # Through tools/aio/own_domains.py, as RegionOne's KVM compute:
        # the shared libvirtd also holds RegionOne's (and test beds')
        # domains, which a stock compute would take for its own.
        own_domains = os.path.join(os.path.dirname(os.path.abspath(
            __file__)), 'own_domains.py')
        self.procs.start(COMPUTE, [os.path.join(c.bin, 'python'),
                                   own_domains] +
                         sum([['--config-file', f] for f in compute_files],
                             []), config_files=compute_files)
        self.wait_wsgi('r2-nova-api')
        conn = self.admin()
        wanted = [(n, n[3:], None) for n in NOVA_CONTROL]
        wanted.append((COMPUTE, 'nova-compute', HOST))
        for name, binary, host in wanted:
            self.procs.wait_for(name, lambda: any(
                s.binary == binary and s.state == 'up' and
                (host is None or s.host == host)
                for s in conn.compute.services()), 180, 'up in Nova',
                fatal=stack.NOVA_FATAL)
        c.manage(nman + ['cell_v2', 'discover_hosts'])
        self.procs.wait_for(COMPUTE, lambda: any(
            h.service_details and h.service_details.get('host') == HOST
            for h in conn.compute.hypervisors(details=True)), 120,
            'listed as a hypervisor')
        name, ram, disk, vcpus = FLAVOR
        if conn.compute.find_flavor(name) is None:
            conn.compute.create_flavor(name=name, ram=ram, disk=disk,
                                       vcpus=vcpus)

    @staticmethod
    def admin_entry():
        """RegionOne's admin clouds.yaml entry also knows RegionTwo.

        (``--os-region-name RegionTwo`` works then; RegionOne stays its
        default.)
        """
        import stack
        path = stack.clouds_yaml_path()
        with open(path) as f:
            data = yaml.safe_load(f)
        entry = data['clouds'][stack.CLOUD_NAME]
        if entry.get('regions') == ['RegionOne', REGION]:
            return
        entry['regions'] = ['RegionOne', REGION]
        _private(path, yaml.safe_dump(data, default_flow_style=False))

    def admin(self):
        """RegionOne's admin entry, in RegionTwo."""
        import openstack

        import stack
        return openstack.connect(cloud=stack.CLOUD_NAME, region_name=REGION)

    def credential(self, conn):
        """An application credential of USER in PROJECT, in clouds.yaml.

        Made once; made again when the file is gone or Keystone no longer
        knows its id (a fresh database).
        """
        ident = conn.identity
        user = ident.find_user(USER, domain_id='default')
        try:
            with open(self.clouds_yaml) as f:
                entry = yaml.safe_load(f)['clouds'][ENTRY]
            cred_id = entry['auth']['application_credential_id']
            if ident.get_application_credential(user, cred_id):
                return
        except Exception:  # noqa: B902,S110 - missing or stale: make one
            pass
        import openstack
        as_user = openstack.connect(
            auth_url='http://127.0.0.1:5000/v3', username=USER,
            password=self.secrets['user'], project_name=PROJECT,
            user_domain_name='Default', project_domain_name='Default',
            region_name=REGION, load_yaml_config=False, load_envvars=False)
        old = as_user.identity.find_application_credential(user, ENTRY)
        if old is not None:
            as_user.identity.delete_application_credential(user, old)
        cred = as_user.identity.create_application_credential(
            user, name=ENTRY, description='XHV all-in-one: RegionOne\'s '
            'cloud compute')
        data = {'clouds': {ENTRY: {
            'auth_type': 'v3applicationcredential',
            'auth': {'auth_url': 'http://127.0.0.1:5000/v3',
                     'application_credential_id': cred.id,
                     'application_credential_secret': cred.secret},
            'region_name': REGION, 'identity_api_version': 3,
            'interface': 'public'}}}
        _private(self.clouds_yaml, yaml.safe_dump(data,
                                                  default_flow_style=False))
        log('application credential %s written to %s' % (cred.id,
                                                         self.clouds_yaml))

    def cloud_compute(self):
        import stack
        c = self.cloud
        files = c.config_files(CLOUD_COMPUTE) + [self.clouds_yaml]
        self.procs.start(CLOUD_COMPUTE, [
            os.path.join(c.bin, 'nova-compute'), '--config-file',
            c.conf('nova', 'nova-compute.conf'), '--config-file',
            c.conf('nova', '%s.conf' % CLOUD_COMPUTE)],
            config_files=files, code=c.xhv_code())
        conn = stack.connect()
        self.procs.wait_for(CLOUD_COMPUTE, lambda: any(
            s.binary == 'nova-compute' and s.state == 'up' and
            s.host == CLOUD_HOST for s in conn.compute.services()), 180,
            'up in Nova', fatal=stack.NOVA_FATAL)
        c.manage(['nova-manage', '--config-file', c.conf('nova', 'nova.conf'),
                  'cell_v2', 'discover_hosts'])
        self.procs.wait_for(CLOUD_COMPUTE, lambda: any(
            h.service_details and h.service_details.get('host') ==
            CLOUD_HOST for h in conn.compute.hypervisors(details=True)), 120,
            'listed as a hypervisor')

    # -- down -------------------------------------------------------------

    def delete_leftovers(self, timeout=120):
        """RegionTwo's servers and images, deleted through its APIs."""
        if not (self.procs.pid('r2-nova-api') and self.procs.pid('keystone')):
            return
        try:
            conn = self.admin()
            servers = list(conn.compute.servers(all_projects=True))
            for s in servers:
                log('deleting RegionTwo server %s (%s)' % (s.name, s.id))
                conn.compute.delete_server(s, force=False)
            deadline = time.monotonic() + timeout
            while servers and time.monotonic() < deadline:
                if not list(conn.compute.servers(all_projects=True)):
                    break
                time.sleep(1)
            if self.procs.pid('r2-glance'):
                for image in list(conn.image.images()):
                    log('deleting RegionTwo image %s (%s)' % (image.name,
                                                              image.id))
                    conn.image.delete_image(image)
        except Exception as exc:  # noqa: B902 - half up: report, go on
            log('could not clean RegionTwo (%s)' % exc)

    def down(self):
        """Stop RegionTwo and the cloud compute; remove xhv-r2 domains."""
        self.delete_leftovers()
        stopped = [n for n in (CLOUD_COMPUTE,) + SERVICES
                   if self.procs.stop(n)]
        return stopped, remove_domains()


def down(cloud):
    """RegionTwo's part of ``tools/xhv-aio down`` (nothing if never up)."""
    if not os.path.isdir(os.path.join(cloud.etc, 'region-two')):
        return [], remove_domains()
    return RegionTwo(cloud).down()


def _digest(paths):
    import hashlib
    digest = hashlib.sha256()
    for path in paths:
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def domains():
    """Names of the libvirt domains RegionTwo's compute made."""
    proc = subprocess.run(['virsh', '-c', 'qemu:///system', 'list', '--all',
                           '--name'], capture_output=True, text=True)
    return [n for n in proc.stdout.split()
            if n.startswith(INSTANCE_NAME_PREFIX)]


def remove_domains():
    removed = []
    for name in domains():
        subprocess.run(['virsh', '-c', 'qemu:///system', 'destroy', name],
                       capture_output=True)
        subprocess.run(['virsh', '-c', 'qemu:///system', 'undefine',
                        '--nvram', name], capture_output=True)
        removed.append(name)
    return removed
