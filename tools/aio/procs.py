"""Start, find and stop the all-in-one's processes by PID, without systemd.

Every service runs in a session of its own (so a Ctrl-C in the terminal
reaches only xhv-aio, which then stops them itself) with stdout and stderr
in ``<state>/log/<name>.log``.  Its pidfile holds the PID and the process
start time from /proc, so a recycled PID is never mistaken for ours.
"""

import hashlib
import os
import re
import signal
import subprocess
import time


class ServiceFailed(RuntimeError):
    """A service died or did not get ready; the message has its log tail."""


def _start_time(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (starttime) counted after the ')' closing the command name.
    return stat.rsplit(')', 1)[1].split()[19]


class Processes:
    def __init__(self, state_dir):
        self.run_dir = os.path.join(state_dir, 'run')
        self.log_dir = os.path.join(state_dir, 'log')
        os.makedirs(self.run_dir, exist_ok=True)
        os.makedirs(self.log_dir, mode=0o750, exist_ok=True)

    def pidfile(self, name):
        return os.path.join(self.run_dir, name + '.pid')

    def log_path(self, name):
        return os.path.join(self.log_dir, name + '.log')

    def pid(self, name):
        """The PID of our running ``name``, or None."""
        try:
            with open(self.pidfile(name)) as f:
                pid, started = f.read().split()[:2]
            pid = int(pid)
        except (OSError, ValueError):
            return None
        if _start_time(pid) != started:
            return None
        try:
            with open('/proc/%d/status' % pid) as f:
                if 'State:\tZ' in f.read():
                    return None
        except OSError:
            return None
        return pid

    def names(self):
        return sorted(n[:-4] for n in os.listdir(self.run_dir)
                      if n.endswith('.pid'))

    def _fingerprint(self, argv, config_files, code=''):
        digest = hashlib.sha256('\0'.join(argv + [code]).encode())
        for path in config_files:
            with open(path, 'rb') as f:
                digest.update(f.read())
        return digest.hexdigest()[:16]

    def _recorded_fingerprint(self, name):
        try:
            with open(self.pidfile(name)) as f:
                fields = f.read().split()
        except OSError:
            return None
        return fields[2] if len(fields) > 2 else None

    def start(self, name, argv, env=None, cwd=None, config_files=(),
              code=''):
        """Start ``argv`` detached unless it already runs; return its PID.

        A running service whose command line, config files or ``code`` (a
        digest of the code it runs) changed since it started is restarted.
        """
        fingerprint = self._fingerprint(argv, config_files, code)
        if (self.pid(name) and
                self._recorded_fingerprint(name) != fingerprint):
            print('xhv-aio: restarting %s: its configuration changed'
                  % name, flush=True)
            self.stop(name)
        # Fatal lines are looked for only in what is logged from now on.
        self._log_offsets = getattr(self, '_log_offsets', {})
        try:
            self._log_offsets[name] = os.path.getsize(self.log_path(name))
        except OSError:
            self._log_offsets[name] = 0
        pid = self.pid(name)
        if pid:
            return pid
        log = open(self.log_path(name), 'ab')
        shown = ['***' if i and argv[i - 1] == '-password' else a
                 for i, a in enumerate(argv)]
        log.write(('\n==== %s starting: %s\n' % (
            time.strftime('%Y-%m-%d %H:%M:%S'), ' '.join(shown))).encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env, cwd=cwd, start_new_session=True)
        finally:
            log.close()
        with open(self.pidfile(name), 'w') as f:
            f.write('%d %s %s\n'
                    % (proc.pid, _start_time(proc.pid), fingerprint))
        # Popen's handle is dropped: the child outlives us; reap it if it
        # dies while we run so that pid() sees it gone.
        self._children = getattr(self, '_children', {})
        self._children[name] = proc
        return proc.pid

    def alive(self, name):
        proc = getattr(self, '_children', {}).get(name)
        if proc is not None and proc.poll() is not None:
            return False
        return self.pid(name) is not None

    def log_tail(self, name, lines=30):
        try:
            with open(self.log_path(name), 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors='replace')
        except OSError:
            return '(no log)'
        return '\n'.join(text.splitlines()[-lines:])

    def _fatal_line(self, name, fatal):
        offset = getattr(self, '_log_offsets', {}).get(name)
        if offset is None:
            return None
        try:
            with open(self.log_path(name), 'rb') as f:
                f.seek(offset)
                text = f.read().decode(errors='replace')
        except OSError:
            return None
        match = re.search(fatal, text)
        return match and match.group(0)

    def wait_for(self, name, check, timeout, what, fatal=None):
        """Poll ``check()`` until true; fail with the log tail otherwise.

        ``fatal``: a regular expression that, found in what the service
        logged since we started it, means it will never get ready.
        """
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            line = fatal and self._fatal_line(name, fatal)
            if line:
                msg = ('%s failed to start (%s); last lines of %s:\n%s'
                       % (name, line.strip(), self.log_path(name),
                          self.log_tail(name)))
                raise ServiceFailed(msg)
            if not self.alive(name):
                msg = ('%s exited before it was ready; last lines of %s:\n%s'
                       % (name, self.log_path(name), self.log_tail(name)))
                raise ServiceFailed(msg)
            try:
                if check():
                    return
            except Exception as exc:  # noqa: B902 - any failure means retry
                last = exc
            time.sleep(0.3)
        msg = ('%s was not %s within %d s (last error: %s); last lines of '
               '%s:\n%s' % (name, what, timeout, last, self.log_path(name),
                            self.log_tail(name)))
        raise ServiceFailed(msg)

    def stop(self, name, timeout=20):
        """SIGTERM the service's process group, then SIGKILL; True if ran."""
        pid = self.pid(name)
        if pid is None:
            self._forget(name)
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc = getattr(self, '_children', {}).get(name)
                if proc is not None:
                    proc.poll()
                if self.pid(name) is None and not self._group_alive(pid):
                    self._forget(name)
                    return True
                time.sleep(0.2)
        self._forget(name)
        return True

    @staticmethod
    def _group_alive(pgid):
        for entry in os.listdir('/proc'):
            if not entry.isdigit():
                continue
            try:
                if os.getpgid(int(entry)) == pgid:
                    with open('/proc/%s/status' % entry) as f:
                        if 'State:\tZ' not in f.read():
                            return True
            except (OSError, ProcessLookupError):
                continue
        return False

    def _forget(self, name):
        try:
            os.unlink(self.pidfile(name))
        except FileNotFoundError:
            pass
