"""The environment of every process the engine starts: a short allow list.

A child inherits everything in its parent's environment unless told
otherwise, and /proc/<pid>/environ shows it to whoever may read it.
``xhv-convert`` takes the remote password from XHV_CONVERT_PASSWORD; a
service may run with OS_PASSWORD, cloud tokens or a proxy URL carrying
credentials.  So no child gets the parent's environment: qemu-img and
qemu-nbd get only what they use (locale, PATH, TMPDIR), the Python children
(NBD bridge, stream decoder) also the variables that pick their modules,
their allocator tuning and the network path the inspection used.  Secrets
reach the Python children on stdin, never in argv or the environment.
"""

import os

# What qemu-img / qemu-nbd may see.
_QEMU_KEEP = ('PATH', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE',
              'LC_MESSAGES', 'TZ', 'TMPDIR',
              # glibc allocator tuning (stream_convert sets it).
              'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
              'MALLOC_TOP_PAD_')
# What a Python child may see besides (requests honours proxies, as the
# inspection in the parent did; PYTHON* selects the same interpreter set-up).
_PYTHON_KEEP = ('PYTHONPATH', 'PYTHONHOME', 'PYTHONIOENCODING',
                'http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY',
                'HTTPS_PROXY', 'NO_PROXY')
# Words that mark a variable as secret-like even on the allow list (a proxy
# URL is kept, but never one that holds a password).
_SECRET_MARKS = ('@',)


def _pick(environ, names):
    env = {}
    for name in names:
        value = environ.get(name)
        if value is None:
            continue
        if any(mark in value for mark in _SECRET_MARKS) and \
                name.lower().endswith('proxy'):
            continue
        env[name] = value
    return env


def for_qemu(environ=None):
    """The whole environment of a qemu-img or qemu-nbd process."""
    return _pick(os.environ if environ is None else environ, _QEMU_KEEP)


def for_python(extra=None, environ=None):
    """The whole environment of a Python child of the engine."""
    environ = os.environ if environ is None else environ
    env = _pick(environ, _QEMU_KEEP + _PYTHON_KEEP)
    env.update(extra or {})
    return env
