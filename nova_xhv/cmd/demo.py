"""``xhv-convert demo``: show the engine on a generated disk.

Generates a sparse raw disk with a scattered random pattern and a size
that VHD's CHS geometry cannot express, translates it into every format
and back, and checks every round trip byte for byte.  Then it hands the
engine two hostile images that would read a host file and shows them
refused.  Exit status 0 only when every step behaved.
"""

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile

from nova_xhv import translate
from nova_xhv.translate import formats

MiB = 1024 * 1024
# 37 MiB + 7 sectors: not a CHS geometry, so VHD must keep it exactly.
DEMO_SIZE = 37 * MiB + 7 * 512
TARGETS = [('qcow2', None), ('vmdk', 'streamOptimized'),
           ('vmdk', 'monolithicSparse'), ('vhdx', 'dynamic'),
           ('vhd', 'dynamic'), ('vhd', 'fixed')]
CANARY = b'XHV-HOST-CANARY-'


def make_patterned_disk(path, size, seed=2024, count=24):
    """Sparse raw disk with ``count`` random extents at odd offsets."""
    rng = random.Random(seed)
    with open(path, 'wb') as f:
        f.truncate(size)
        span = (size - MiB) // count
        for i in range(count):
            length = rng.randint(512, 128 * 1024)
            f.seek(MiB + i * span + rng.randint(0, span - length - 1))
            f.write(rng.randbytes(length))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            digest.update(block)
    return digest.hexdigest()


def _qemu_subformat(path, fmt, fallback):
    """The subformat as qemu-img reports it.

    That is the vmdk create-type or the qcow2 compat level; where qemu-img
    says nothing, the engine's own reading of the header (marked ``*``).
    """
    out = subprocess.run(
        ['qemu-img', 'info', '-f', formats.qemu_driver(fmt),
         '--output=json', path], check=True, capture_output=True).stdout
    data = json.loads(out).get('format-specific', {}).get('data', {})
    if 'create-type' in data:
        return data['create-type']
    if 'compat' in data:
        return 'compat=%s' % data['compat']
    return '%s*' % fallback if fallback else '-'


def _hostile_images(folder):
    """Two images that make a naive qemu-img read a host file."""
    canary = os.path.join(folder, 'host-secret.bin')
    with open(canary, 'wb') as f:
        f.write(CANARY * 4096)
    backing = os.path.join(folder, 'hostile-backing.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', canary,
                    '-F', 'raw', backing], check=True)
    staging = os.path.join(folder, 'staging')
    os.mkdir(staging, 0o700)
    descriptor = os.path.join(staging, 'hostile.vmdk')
    with open(descriptor, 'w') as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
                'parentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
                'RW %d FLAT "%s" 0\n' % (os.path.getsize(canary) // 512,
                                         canary))
    return canary, [('qcow2 whose backing file is a host file', backing,
                     'qcow2', None),
                    ('vmdk whose extent names a host file', descriptor,
                     'vmdk', staging)]


def run(workdir, out=sys.stdout):
    ok = True
    source = os.path.join(workdir, 'demo.raw')
    make_patterned_disk(source, DEMO_SIZE)
    digest = _sha256(source)
    out.write('Source: %s, raw, %d bytes virtual, %d bytes allocated\n\n' % (
        source, DEMO_SIZE, os.stat(source).st_blocks * 512))
    row = '%-6s %-18s %14s %12s %-9s %-10s\n'
    out.write(row % ('format', 'subformat', 'virtual size', 'allocated',
                     'verified', 'round trip'))
    for fmt, subformat in TARGETS:
        name = 'demo-%s-%s.%s' % (fmt, subformat or 'default', fmt)
        target = os.path.join(workdir, name)
        back = target + '.back.raw'
        result = translate.convert(
            source, target, fmt, from_format='raw', subformat=subformat,
            options=translate.ConvertOptions(verify=True))
        translate.convert(target, back, 'raw', from_format=fmt)
        same = (_sha256(back) == digest and
                os.path.getsize(back) == DEMO_SIZE)
        ok = ok and same and result.verified and \
            result.virtual_size == DEMO_SIZE
        out.write(row % (fmt, _qemu_subformat(target, fmt,
                                              result.dst_subformat),
                         result.virtual_size, result.bytes_written,
                         'yes' if result.verified else 'NO',
                         'identical' if same else 'DIFFERENT'))
    out.write('(* qemu-img reports no subformat for this format; the value '
              'is read from its header)\n\nHostile images:\n')
    canary, hostile = _hostile_images(workdir)
    for label, path, fmt, staging in hostile:
        dst = path + '.out.raw'
        try:
            translate.convert(path, dst, 'raw', from_format=fmt,
                              options=translate.ConvertOptions(
                                  staging_dir=staging))
        except translate.TranslationError as exc:
            out.write('  %s: refused (%s)\n' % (
                label, '; '.join(getattr(exc, 'reasons', [str(exc)]))))
        else:
            ok = False
            out.write('  %s: CONVERTED - this is a bug\n' % label)
        if os.path.exists(dst):
            ok = False
    out.write('\n%s\n' % ('Demo passed.' if ok else 'Demo FAILED.'))
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='xhv-convert demo',
        description='Translate a generated disk through every format and '
                    'show hostile images refused.')
    parser.add_argument('--workdir',
                        help='keep the files here (default: a temporary '
                             'folder, removed afterwards)')
    args = parser.parse_args(argv)
    # Refusals are part of the show; keep the engine's warnings off stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        if os.listdir(args.workdir):
            sys.stderr.write('xhv-convert demo: %s is not empty; choose an '
                             'empty or new folder\n' % args.workdir)
            return 2
        return 0 if run(args.workdir) else 1
    workdir = tempfile.mkdtemp(prefix='xhv-demo-')
    try:
        return 0 if run(workdir) else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
