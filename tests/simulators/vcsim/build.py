"""Build vcsim offline from Debian's govmomi, once per machine.

Copies the simulator package from /usr/share/gocode into a private GOPATH,
applies patches/*.patch (each explains its fix), compiles main.go in GOPATH
mode without network access, and caches the binary under a key made of
every input (simulator source, main.go, patches, Go version).  Run it
directly to print the binary path:

    python3 tests/simulators/vcsim/build.py
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PATCHES = os.path.join(HERE, 'patches')
GOCODE = os.environ.get('XHV_GOCODE', '/usr/share/gocode')
SIMULATOR_IMPORT = 'github.com/vmware/govmomi/simulator'
MAIN_IMPORT = 'xhv.local/vcsim'
BUILD_TIMEOUT = 600


class BuildError(RuntimeError):
    pass


def cache_root():
    """$XHV_CACHE/vcsim, else /var/cache/xhv/vcsim, else ~/.cache."""
    candidates = []
    if os.environ.get('XHV_CACHE'):
        candidates.append(os.path.join(os.environ['XHV_CACHE'], 'vcsim'))
    candidates += ['/var/cache/xhv/vcsim',
                   os.path.expanduser('~/.cache/xhv/vcsim')]
    for path in candidates:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    msg = ('no writable cache directory among %s; set XHV_CACHE'
           % ', '.join(candidates))
    raise BuildError(msg)


def _go():
    go = shutil.which('go') or '/usr/lib/go/bin/go'
    if not os.path.exists(go):
        msg = ('the Go compiler is missing: apt-get install '
               'golang-go golang-github-vmware-govmomi-dev')
        raise BuildError(msg)
    return go


def _source_dir():
    src = os.path.join(GOCODE, 'src', SIMULATOR_IMPORT)
    if not os.path.isdir(src):
        msg = ('%s is missing: apt-get install '
               'golang-github-vmware-govmomi-dev' % src)
        raise BuildError(msg)
    return src


def _patches():
    return sorted(p for p in os.listdir(PATCHES) if p.endswith('.patch'))


def apply_patches(simulator_dir):
    """Apply every patch; fail loudly if one does not apply cleanly."""
    patch = shutil.which('patch')
    if patch is None:
        msg = ('the patch command is missing: apt-get install '
               'patch')
        raise BuildError(msg)
    for name in _patches():
        proc = subprocess.run(
            [patch, '-p1', '--forward', '--batch', '--no-backup-if-mismatch',
             '-i', os.path.join(PATCHES, name)],
            cwd=simulator_dir, capture_output=True, text=True)
        if proc.returncode != 0:
            msg = ('%s does not apply to the govmomi simulator in %s (did '
                   'golang-github-vmware-govmomi-dev change?):\n%s%s'
                   % (name, GOCODE, proc.stdout, proc.stderr))
            raise BuildError(msg)


def source_key():
    """Hex digest over every input of the build."""
    digest = hashlib.sha256()
    src = _source_dir()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, src).encode() + b'\0')
            with open(path, 'rb') as f:
                digest.update(f.read())
    inputs = ['main.go'] + ['patches/' + p for p in _patches()]
    for name in inputs:
        with open(os.path.join(HERE, name), 'rb') as f:
            digest.update(name.encode() + b'\0' + f.read())
    version = subprocess.run([_go(), 'version'], capture_output=True,
                             check=True, text=True).stdout
    digest.update(version.encode())
    return digest.hexdigest()


def _build(work, binary):
    private_sim = os.path.join(work, 'src', SIMULATOR_IMPORT)
    shutil.copytree(_source_dir(), private_sim)
    # In GOPATH mode the first GOPATH entry holding a package's directory
    # wins, so the rest of govmomi must appear next to the private copy:
    # link every sibling of simulator/ back to the system tree.
    system_root = os.path.dirname(_source_dir())
    for name in os.listdir(system_root):
        if name != 'simulator':
            os.symlink(os.path.join(system_root, name),
                       os.path.join(os.path.dirname(private_sim), name))
    apply_patches(private_sim)
    main_dir = os.path.join(work, 'src', MAIN_IMPORT)
    os.makedirs(main_dir)
    shutil.copy(os.path.join(HERE, 'main.go'), main_dir)
    env = dict(os.environ,
               GO111MODULE='off', GOPROXY='off', GOFLAGS='',
               GOPATH='%s:%s' % (work, GOCODE),
               GOCACHE=os.path.join(work, 'gocache'),
               CGO_ENABLED='0')
    proc = subprocess.run([_go(), 'build', '-o', binary, MAIN_IMPORT],
                          cwd=work, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        msg = ('go build of vcsim failed (exit %d):\n%s'
               % (proc.returncode, proc.stderr[-4000:]))
        raise BuildError(msg)


def build():
    """Return the path of a vcsim binary, building it if needed."""
    root = cache_root()
    key = source_key()[:16]
    binary = os.path.join(root, 'vcsim-' + key)
    if os.access(binary, os.X_OK):
        return binary
    # One build at a time per machine; the others wait and reuse it.
    with open(os.path.join(root, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(binary, os.X_OK):
            return binary
        work = tempfile.mkdtemp(prefix='build-', dir=root)
        try:
            partial = os.path.join(work, 'vcsim')
            _build(work, partial)
            os.replace(partial, binary)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return binary


if __name__ == '__main__':
    try:
        print(build())
    except BuildError as exc:
        sys.exit('vcsim: %s' % exc)
