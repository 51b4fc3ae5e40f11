"""The all-in-one's services: configure, initialise and start each one.

Order matters and is the order of ``Cloud.up``: infrastructure (MariaDB,
epmd + RabbitMQ, libvirtd when nobody runs one, vcsim), then Keystone and
the catalog, then Glance, Placement, Neutron and Nova.  One-time steps (db
syncs, bootstrap) leave a marker in ``<state>/done`` holding a hash of the
config they ran with, so a warm ``up`` skips them.
"""

import hashlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import families
import procs

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
TEMPLATES = os.path.join(HERE, 'templates')

PORTS = {'keystone': 5000, 'glance': 9292, 'placement': 8778,
         'neutron': 9696, 'nova-api': 8774, 'vcsim': 8989,
         'mariadb': 3306, 'rabbitmq': 5672, 'cinder-api': 8776}
WSGI_MODULES = {'keystone': 'keystone.wsgi.api:application',
                'glance': 'glance.wsgi.api:application',
                'placement': 'placement.wsgi.api:application',
                'neutron': 'neutron.wsgi.api:application',
                'nova-api': 'nova.wsgi.osapi_compute:application',
                'cinder-api': 'cinder.wsgi.api:application'}
CONFIG_DIR_ENV = {'keystone': 'OS_KEYSTONE_CONFIG_DIR',
                  'glance': 'OS_GLANCE_CONFIG_DIR',
                  'placement': 'OS_PLACEMENT_CONFIG_DIR',
                  'neutron': 'OS_NEUTRON_CONFIG_DIR',
                  'nova-api': 'OS_NOVA_CONFIG_DIR'}
# (cinder-api reads no such variable: it gets --config-file as its argv.)
CATALOG = [  # (user/service name, type, url)
    ('glance', 'image', 'http://127.0.0.1:9292'),
    ('placement', 'placement', 'http://127.0.0.1:8778'),
    ('neutron', 'network', 'http://127.0.0.1:9696'),
    ('nova', 'compute', 'http://127.0.0.1:8774/v2.1'),
    ('cinder', 'block-storage', 'http://127.0.0.1:8776/v3'),
]
# Older service type names clients still look up: (service name, type, url).
CATALOG_ALIASES = [('cinderv3', 'volumev3', 'http://127.0.0.1:8776/v3')]
BACKENDS = ('libvirt', 'vmware') + families.BACKENDS
HOSTS = dict({'libvirt': 'aio-kvm', 'vmware': 'aio-vmware'},
             **families.HOSTS)
DB_USERS = {'keystone': ['keystone'], 'glance': ['glance'],
            'placement': ['placement'], 'neutron': ['neutron'],
            'nova': ['nova_api', 'nova', 'nova_cell0'],
            'cinder': ['cinder']}
CINDER_HOST = 'aio-cinder'
# Names of everything the demo creates (servers, volumes, images).
DEMO_PREFIX = 'xhv-demo-'


def log(msg):
    print('xhv-aio: %s' % msg, flush=True)


def run(argv, check=True, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and proc.returncode:
        raise procs.ServiceFailed('%s failed (exit %d):\n%s%s' % (
            ' '.join(argv[:4]), proc.returncode, proc.stdout[-3000:],
            proc.stderr[-3000:]))
    return proc


def http_answers(url, context=None, accept=(200, 300, 401)):
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:
            return r.status in accept
    except urllib.error.HTTPError as exc:
        return exc.code in accept


def load_secrets(path, names):
    """The secrets kept in ``path`` (0600 JSON), each of ``names`` made once.

    Generated on the first start and kept, so a warm ``up`` reuses the
    passwords the databases and services already hold.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}
    missing = [name for name in names if name not in data]
    for name in missing:
        data[name] = secrets.token_hex(16)
    if missing:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path + '.tmp',
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=1)
        os.replace(path + '.tmp', path)
    return data


class Cloud:
    def __init__(self, state_dir, venv):
        self.state = state_dir
        self.venv = venv
        self.bin = os.path.join(venv, 'bin')
        self.etc = os.path.join(state_dir, 'etc')
        self.lib = os.path.join(state_dir, 'lib')
        for d in (state_dir, self.etc, self.lib):
            os.makedirs(d, mode=0o755, exist_ok=True)
        os.chmod(state_dir, 0o755)  # mysql/rabbitmq/qemu users traverse it
        self.procs = procs.Processes(state_dir)
        self.secrets = self._secrets()

    # -- secrets and templates -------------------------------------------

    def _secrets(self):
        return load_secrets(
            os.path.join(self.etc, 'secrets.json'),
            ['admin', 'rabbit', 'vcsim', 'exchange'] +
            ['db_' + s for s in DB_USERS] +
            ['svc_' + s for s, _, _ in CATALOG] + list(families.SECRETS))

    def _authtoken(self, user):
        return '\n'.join([
            'www_authenticate_uri = http://127.0.0.1:5000',
            'auth_url = http://127.0.0.1:5000',
            'auth_type = password',
            'project_domain_name = Default',
            'user_domain_name = Default',
            'project_name = service',
            'username = %s' % user,
            'password = %s' % self.secrets['svc_' + user],
            'service_token_roles_required = true'])

    def libvirt_cpu(self):
        """[libvirt] virt_type and CPU lines that start a guest here.

        nova_xhv.guest_probe boots the guest the demo runs on KVM (XHV's
        Linux test guest: tools/aio/network.py) with each candidate (once
        per machine boot; XHV_LIBVIRT_* environment variables override).
        """
        if getattr(self, '_libvirt_cpu', None) is None:
            from nova_xhv import guest_probe

            import network
            choice = guest_probe.choose(**network.probe_guest())
            print(choice.line())
            lines = []
            for option, value in choice.config.nova_options().items():
                if option == 'virt_type':
                    continue
                if value:
                    if isinstance(value, list):
                        value = ','.join(value)
                    lines.append('%s = %s' % (option, value))
            if not lines:
                lines.append("# cpu_mode: Nova's default starts a guest here")
            self._libvirt_cpu = (choice.config.virt_type, '\n'.join(lines))
        return self._libvirt_cpu

    def render(self, template, dest, mode=0o640, append=(), extra=None):
        text = ''
        for name in (template,) + tuple(append):
            with open(os.path.join(TEMPLATES, name)) as f:
                text += f.read()
        values = {'STATE': self.state, 'VENV': self.venv,
                  'RABBIT_PW': self.secrets['rabbit'],
                  'VCSIM_PORT': str(PORTS['vcsim']), 'VCSIM_USER': 'xhv',
                  'VCSIM_PW': self.secrets['vcsim'],
                  'EXCHANGE_SECRET': self.secrets['exchange'],
                  'HOST_cinder': CINDER_HOST}
        if '@VIRT_TYPE@' in text:
            # Only the KVM compute's config probes (libvirtd is up then).
            values['VIRT_TYPE'], values['LIBVIRT_CPU'] = self.libvirt_cpu()
        values.update(families.config_values(self))
        values.update(extra or {})
        for svc in DB_USERS:
            values['DB_PW_' + svc] = self.secrets['db_' + svc]
        for svc, _, _ in CATALOG:
            values['SVC_PW_' + svc] = self.secrets['svc_' + svc]
            values['AUTHTOKEN_' + svc] = self._authtoken(svc)
        for backend, host in HOSTS.items():
            values['HOST_' + backend] = host
        for key, value in values.items():
            text = text.replace('@%s@' % key, value)
        if '@' in text.replace('@127', ''):
            unresolved = [w for w in text.split() if w.count('@') >= 2]
            if unresolved:
                msg = '%s: unresolved %s' % (template, unresolved)
                raise RuntimeError(msg)
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        fd = os.open(dest + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     mode)
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(dest + '.tmp', dest)
        return dest

    def write_configs(self):
        e = self.etc
        self.render('keystone.conf', os.path.join(e, 'keystone',
                                                  'keystone.conf'))
        self.render('glance-api.conf', os.path.join(e, 'glance',
                                                    'glance-api.conf'))
        shutil.copy(os.path.join(self.venv, 'etc/glance/'
                                 'glance-api-paste.ini'),
                    os.path.join(e, 'glance', 'glance-api-paste.ini'))
        self.render('placement.conf', os.path.join(e, 'placement',
                                                   'placement.conf'))
        self.render('neutron.conf', os.path.join(e, 'neutron',
                                                 'neutron.conf'))
        self.render('ml2_conf.ini', os.path.join(e, 'neutron', 'plugins',
                                                 'ml2', 'ml2_conf.ini'))
        self.render('nova.conf', os.path.join(e, 'nova', 'nova.conf'),
                    append=['nova-db.conf'])
        self.render('nova.conf', os.path.join(e, 'nova', 'nova-compute.conf'))
        shutil.copy(os.path.join(self.venv, 'etc/nova/api-paste.ini'),
                    os.path.join(e, 'nova', 'api-paste.ini'))
        for backend in BACKENDS:
            name = 'nova-compute-%s.conf' % backend
            self.render(name, os.path.join(e, 'nova', name))
        for host in HOSTS.values():
            os.makedirs(os.path.join(self.lib, 'nova-%s' % host,
                                     'instances'), exist_ok=True)
        for d in ('glance/images', 'glance/staging', 'glance/tasks',
                  'glance/locks', 'neutron/locks', 'nova/locks'):
            os.makedirs(os.path.join(self.lib, d), exist_ok=True)

    def copy_venv_file(self, relative, dest):
        """Copy a file the venv ships (paste configs) into our etc."""
        shutil.copy(os.path.join(self.venv, relative), dest)

    def conf(self, *parts):
        return os.path.join(self.etc, *parts)

    # -- one-time steps ---------------------------------------------------

    def once(self, name, inputs, func):
        """Run ``func`` unless it already ran with the same inputs."""
        done = os.path.join(self.state, 'done')
        os.makedirs(done, exist_ok=True)
        digest = hashlib.sha256()
        for path in inputs:
            with open(path, 'rb') as f:
                digest.update(f.read())
        marker = os.path.join(done, name)
        try:
            with open(marker) as f:
                if f.read() == digest.hexdigest():
                    return False
        except FileNotFoundError:
            pass
        log('%s' % name)
        func()
        with open(marker, 'w') as f:
            f.write(digest.hexdigest())
        return True

    # -- MariaDB ----------------------------------------------------------

    def mariadb(self):
        datadir = os.path.join(self.lib, 'mysql')
        rundir = os.path.join(self.state, 'run', 'mysqld')
        os.makedirs(rundir, exist_ok=True)
        shutil.chown(rundir, 'mysql', 'mysql')
        self.socket = os.path.join(rundir, 'mysqld.sock')
        if not os.path.isdir(os.path.join(datadir, 'mysql')):
            log('initialising MariaDB in %s' % datadir)
            os.makedirs(datadir, exist_ok=True)
            shutil.chown(datadir, 'mysql', 'mysql')
            run(['mariadb-install-db', '--no-defaults', '--user=mysql',
                 '--datadir=' + datadir, '--skip-test-db',
                 '--auth-root-authentication-method=socket'])
        self.procs.start('mariadb', [
            '/usr/sbin/mariadbd', '--no-defaults', '--user=mysql',
            '--datadir=' + datadir, '--socket=' + self.socket,
            '--pid-file=' + os.path.join(rundir, 'mariadbd.pid'),
            '--bind-address=127.0.0.1', '--port=%d' % PORTS['mariadb'],
            '--skip-name-resolve', '--max-connections=1000',
            '--innodb-buffer-pool-size=128M', '--innodb-flush-log-at-trx-'
            'commit=2', '--character-set-server=utf8mb4'])
        self.procs.wait_for('mariadb', lambda: run(
            ['mariadb-admin', '--no-defaults', '--socket=' + self.socket,
             'ping'], check=False).returncode == 0, 60, 'answering')
        sql = []
        for user, databases in DB_USERS.items():
            pw = self.secrets['db_' + user]
            sql.append("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' "
                       "IDENTIFIED BY '%s';" % (user, pw))
            sql.append("ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
                       % (user, pw))
            for db in databases:
                sql.append('CREATE DATABASE IF NOT EXISTS %s '
                           'CHARACTER SET utf8mb4;' % db)
                sql.append("GRANT ALL ON %s.* TO '%s'@'127.0.0.1';"
                           % (db, user))
        self.sql('\n'.join(sql))

    def sql(self, statements):
        return run(['mariadb', '--no-defaults', '--socket=' + self.socket,
                    '-u', 'root', '-N', '-B'], input=statements).stdout

    # -- RabbitMQ ---------------------------------------------------------

    def rabbitmq(self):
        base = os.path.join(self.lib, 'rabbitmq')
        os.makedirs(base, exist_ok=True)
        shutil.chown(base, 'rabbitmq', 'rabbitmq')
        pidfile = os.path.join(base, 'rabbit.pid')
        env = {
            'PATH': '/usr/sbin:/usr/bin:/sbin:/bin',
            'HOME': '/var/lib/rabbitmq', 'LANG': 'C.UTF-8',
            'ERL_EPMD_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODENAME': 'rabbit@localhost',
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(PORTS['rabbitmq']),
            'RABBITMQ_MNESIA_BASE': os.path.join(base, 'mnesia'),
            'RABBITMQ_LOG_BASE': base, 'RABBITMQ_LOGS': '-',
            'RABBITMQ_PID_FILE': pidfile,
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
                '-kernel inet_dist_use_interface {127,0,0,1}'}
        envargs = ['%s=%s' % kv for kv in env.items()]
        # epmd runs in the foreground under our PID tracking, so that down
        # stops it too (rabbitmq-server would otherwise daemonise one).
        self.procs.start('epmd', ['runuser', '-u', 'rabbitmq', '--', 'env'] +
                         envargs + ['/usr/bin/epmd', '-address',
                                    '127.0.0.1'])
        self.procs.start('rabbitmq', ['runuser', '-u', 'rabbitmq', '--',
                                      'env'] + envargs +
                         ['/usr/lib/rabbitmq/bin/rabbitmq-server'])
        ctl = ['rabbitmqctl', '-q', '-n', 'rabbit@localhost']
        self.procs.wait_for('rabbitmq', lambda: run(
            ctl + ['wait', '--timeout', '5', pidfile],
            check=False).returncode == 0, 90, 'running')
        pw = self.secrets['rabbit']
        if run(ctl + ['change_password', 'openstack', pw],
               check=False).returncode:
            run(ctl + ['add_user', 'openstack', pw])
        run(ctl + ['set_permissions', 'openstack', '.*', '.*', '.*'])

    # -- libvirtd and vcsim -----------------------------------------------

    def libvirtd(self):
        if os.path.exists('/dev/kvm'):
            run(['chgrp', 'kvm', '/dev/kvm'], check=False)
            os.chmod('/dev/kvm', 0o660)
        if self.procs.pid('libvirtd') is None and run(
                ['virsh', '-c', 'qemu:///system', 'version'],
                check=False).returncode == 0:
            return  # somebody else's libvirtd: use it, never stop it
        self.procs.start('virtlogd', ['/usr/sbin/virtlogd'])
        self.procs.start('libvirtd', ['/usr/sbin/libvirtd'])
        self.procs.wait_for('libvirtd', lambda: run(
            ['virsh', '-c', 'qemu:///system', 'version'],
            check=False).returncode == 0, 30, 'answering')

    def vcsim(self):
        sys.path.insert(0, TOP)
        from tests.simulators.vcsim import build as vcsim_build
        workdir = os.path.join(self.lib, 'vcsim')
        ca = os.path.join(workdir, 'ca.pem')
        if self.procs.pid('vcsim') is None:
            binary = vcsim_build.build()
            from tests.fixtures import vcsim as vcsim_fixture
            shutil.rmtree(workdir, ignore_errors=True)
            os.makedirs(os.path.join(workdir, 'datastores'))
            ca, cert, key = vcsim_fixture.make_ca_and_server_cert(workdir)
            self.procs.start('vcsim', [
                binary, '-listen', '127.0.0.1:%d' % PORTS['vcsim'],
                '-tls-cert', cert, '-tls-key', key, '-username', 'xhv',
                '-password', self.secrets['vcsim'], '-model', 'vpx',
                '-vms', '0', '-cluster-hosts', '2'],
                env=dict(os.environ, TMPDIR=os.path.join(workdir,
                                                         'datastores')))
        context = ssl.create_default_context(cafile=ca)
        self.procs.wait_for('vcsim', lambda: http_answers(
            'https://127.0.0.1:%d/sdk/vimServiceVersions.xml'
            % PORTS['vcsim'], context=context), 120, 'answering')

    # -- WSGI services ----------------------------------------------------

    def config_files(self, name):
        """The files a service reads: a change restarts it."""
        project = name.split('-')[0]
        folder = self.conf(project)
        files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                 if f.endswith(('.conf', '.ini'))]
        if project == 'neutron':
            files.append(self.conf('neutron', 'plugins', 'ml2',
                                   'ml2_conf.ini'))
        if name.startswith('nova-compute-'):
            files = [self.conf('nova', 'nova-compute.conf'),
                     self.conf('nova', name + '.conf')]
        return files

    def xhv_code(self):
        """Digest of the installed XHV: a reinstall restarts Nova."""
        from importlib import metadata
        try:
            record = metadata.distribution('openstack-xhv').read_text(
                'RECORD') or ''
        except metadata.PackageNotFoundError:
            record = ''
        return hashlib.sha256(record.encode()).hexdigest()[:16]

    def wsgi(self, name, extra=()):
        argv = [os.path.join(self.bin, 'uwsgi'),
                '--http-socket', '127.0.0.1:%d' % PORTS[name],
                '--module', WSGI_MODULES[name], '--virtualenv', self.venv,
                '--master', '--processes', '1', '--threads', '4',
                '--enable-threads', '--lazy-apps', '--need-app',
                '--die-on-term', '--buffer-size', '65535',
                '--hook-master-start',
                'unix_signal:15 gracefully_kill_them_all',
                '--add-header', 'Connection: close']
        if name in CONFIG_DIR_ENV:
            argv += ['--env', '%s=%s' % (CONFIG_DIR_ENV[name],
                                         self.conf(name.split('-')[0]))]
        self.procs.start(name, argv + list(extra),
                         config_files=self.config_files(name),
                         code=self.xhv_code() if name == 'nova-api' else '')

    def wait_wsgi(self, name, path='/'):
        url = 'http://127.0.0.1:%d%s' % (PORTS[name], path)
        self.procs.wait_for(name, lambda: http_answers(url), 120,
                            'answering %s' % url)

    def nova_db_init(self, once_name, conf, cell0):
        """Nova's databases for ``conf``, once per configuration.

        API schema, cell0 mapped, cell1 created, the cell's schema.
        """
        nman = ['nova-manage', '--config-file', conf]

        def init():
            self.manage(nman + ['api_db', 'sync'])
            self.manage(nman + ['cell_v2', 'map_cell0',
                                '--database_connection', cell0])
            cells = run([os.path.join(self.bin, 'nova-manage'),
                         '--config-file', conf, 'cell_v2',
                         'list_cells']).stdout
            if ' cell1 ' not in cells:
                self.manage(nman + ['cell_v2', 'create_cell', '--name',
                                    'cell1'])
            self.manage(nman + ['db', 'sync'])
        self.once(once_name, [conf], init)

    def manage(self, argv):
        run([os.path.join(self.bin, argv[0])] + argv[1:])
