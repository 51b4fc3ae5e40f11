"""Helpers for the translation tests (real qemu-img)."""

import json
import os
import subprocess

MiB = 1024 * 1024
CANARY_MARK = b'XHV-HOST-CANARY-7f3a9c'


def qemu(*args):
    """Run qemu-img directly (test set-up and independent checks)."""
    return subprocess.run(('qemu-img',) + args, check=True,
                          capture_output=True).stdout


def qemu_create_encrypted(*args, attempts=10):
    """qemu-img create of a LUKS image (or LUKS-encrypted qcow2).

    qemu times its PBKDF2 iterations against the thread's CPU clock and
    refuses ("Unable to get accurate CPU usage") when that clock read 0,
    which happens now and then on coarse virtual CPUs: try again.
    """
    for attempt in range(attempts):
        try:
            return qemu('create', *args)
        except subprocess.CalledProcessError as error:
            if b'accurate CPU usage' not in error.stderr or \
                    attempt == attempts - 1:
                raise


def virtual_size(path, qemu_format):
    return json.loads(qemu('info', '-f', qemu_format, '--output=json',
                           path))['virtual-size']


def to_raw(path, qemu_format, out):
    qemu('convert', '-f', qemu_format, '-O', 'raw', path, out)
    return out


def write_canary(path, size=MiB):
    with open(path, 'wb') as f:
        f.write((CANARY_MARK * (size // len(CANARY_MARK) + 1))[:size])
    return path


def contains_canary(path):
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            if CANARY_MARK[:12] in block:
                return True
    return False


def files_under(folder):
    found = []
    for root, _dirs, names in os.walk(folder):
        found.extend(os.path.join(root, name) for name in names)
    return found
