"""tools/aio: process tracking by PID, and the config files it writes.

Real short-lived processes (sleep, sh) stand in for the services.
"""

import configparser
import os
import sys
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, 'tools', 'aio'))

import procs  # noqa: E402
import services  # noqa: E402


@pytest.fixture
def processes(tmp_path):
    p = procs.Processes(str(tmp_path))
    yield p
    for name in p.names():
        p.stop(name, timeout=5)


def gone(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            return 'State:\tZ' in f.read()
    except FileNotFoundError:
        return True


def test_start_is_idempotent_and_stop_kills_the_group(processes, tmp_path):
    marker = tmp_path / 'child.pid'
    argv = ['sh', '-c', 'sleep 300 & echo $! > %s; wait' % marker]
    pid = processes.start('svc', argv)
    assert processes.start('svc', argv) == pid
    assert processes.pid('svc') == pid
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(marker.read_text())
    assert processes.stop('svc', timeout=5) is True
    assert gone(pid) and gone(child)
    assert processes.pid('svc') is None
    assert 'svc' not in processes.names()
    assert processes.stop('svc') is False


def test_recycled_pid_is_not_ours(processes):
    # Our own PID with another start time: what a recycled PID looks like.
    with open(processes.pidfile('old'), 'w') as f:
        f.write('%d 1 abc\n' % os.getpid())
    assert processes.pid('old') is None
    assert processes.stop('old') is False
    assert not os.path.exists(processes.pidfile('old'))


def test_changed_config_restarts(processes, tmp_path):
    conf = tmp_path / 'svc.conf'
    conf.write_text('[DEFAULT]\na = 1\n')
    argv = ['sleep', '300']
    pid = processes.start('svc', argv, config_files=[str(conf)])
    assert processes.start('svc', argv, config_files=[str(conf)]) == pid
    conf.write_text('[DEFAULT]\na = 2\n')
    new = processes.start('svc', argv, config_files=[str(conf)])
    assert new != pid
    assert gone(pid)


def test_wait_for_reports_exit_with_log_tail(processes):
    processes.start('bad', ['sh', '-c', 'echo boom-line >&2; exit 3'])
    with pytest.raises(procs.ServiceFailed) as err:
        processes.wait_for('bad', lambda: False, 10, 'ready')
    assert 'exited before it was ready' in str(err.value)
    assert 'boom-line' in str(err.value)


def test_wait_for_fatal_line_fails_fast(processes):
    processes.start('stuck', ['sh', '-c',
                              'echo "x CRITICAL nova oops"; sleep 300'])
    start = time.monotonic()
    with pytest.raises(procs.ServiceFailed) as err:
        processes.wait_for('stuck', lambda: False, 60, 'ready',
                           fatal=r'[^\n]*CRITICAL [^\n]*')
    assert time.monotonic() - start < 30
    assert 'CRITICAL nova oops' in str(err.value)


def test_wait_for_timeout_names_the_last_error(processes):
    processes.start('slow', ['sleep', '300'])

    def check():
        raise ConnectionRefusedError('nobody listens')
    with pytest.raises(procs.ServiceFailed) as err:
        processes.wait_for('slow', check, 1, 'answering')
    assert 'was not answering within 1 s' in str(err.value)
    assert 'nobody listens' in str(err.value)


def test_password_is_not_logged(processes):
    processes.start('sim', ['sh', '-c', 'sleep 300', '-password', 'hunter2'])
    processes.stop('sim', timeout=5)
    with open(processes.log_path('sim')) as f:
        text = f.read()
    assert 'hunter2' not in text and '-password ***' in text


def test_configs_render_completely(tmp_path):
    # A stand-in venv with the two paste files the services' wheels ship.
    venv = tmp_path / 'venv'
    for paste in ('nova/api-paste.ini', 'glance/glance-api-paste.ini'):
        (venv / 'etc' / paste).parent.mkdir(parents=True, exist_ok=True)
        (venv / 'etc' / paste).write_text('[pipeline:main]\n')
    state = tmp_path / 'state'
    cloud = services.Cloud(str(state), str(venv))
    cloud.write_configs()
    etc = state / 'etc'
    for path in etc.rglob('*.conf'):
        text = path.read_text()
        assert '@' not in text.replace('@127.0.0.1', ''), path
        assert oct(path.stat().st_mode & 0o777) == '0o640', path
    control = configparser.RawConfigParser(strict=False)
    control.read(etc / 'nova' / 'nova.conf')
    assert control.get('database', 'connection').startswith(
        'mysql+pymysql://nova:')
    compute = configparser.RawConfigParser(strict=False)
    compute.read([etc / 'nova' / 'nova-compute.conf',
                  etc / 'nova' / 'nova-compute-vmware.conf'])
    assert not compute.has_section('database')
    assert not compute.has_section('api_database')
    assert compute.get('DEFAULT', 'compute_driver') == 'xhv.XHVDriver'
    assert compute.get('xhv', 'backend') == 'vmware'
    assert compute.get('xhv_vmware', 'password') == cloud.secrets['vcsim']
    secrets_mode = (etc / 'secrets.json').stat().st_mode & 0o777
    assert secrets_mode == 0o600
    # A second Cloud reuses the same secrets.
    assert services.Cloud(str(state), str(venv)).secrets == cloud.secrets
    assert (etc / 'nova' / 'api-paste.ini').exists()
