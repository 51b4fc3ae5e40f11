#!/usr/bin/env python3
"""Benchmark a vSphere (vcsim) -> KVM cold migration through Nova.

Boots a server on vcsim from an image with ALLOCATED GiB of data in a
VIRTUAL GiB disk, migrates it to KVM (real libvirtd) through Nova's
functional harness and XHV, and reports per-stage times and the whole
move against one bare ``qemu-img convert`` (vmdk as stored -> qcow2) of
the same disk in the same run.  Goal: whole move <= 1.3 x that convert.

    tools/bench/migration.py [--virtual-gib 8] [--allocated-gib 1]
                             [--mode threading|eventlet|both]

Needs what the functional tests need (tools/start-services: libvirtd,
the vcsim build) and a libvirtd without other domains.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BENCH = 'tests/functional/migration/bench_vmware_to_kvm.py'


def cpu_environment():
    """XHV_LIBVIRT_* of the CPU settings that start a guest here.

    Probed once (nova_xhv.guest_probe), printed with the figures, and
    handed to the benchmark's harness so both runs use the same.
    """
    from nova_xhv import guest_probe

    choice = guest_probe.choose()
    print(choice.line())
    return guest_probe.environment(choice.config)


def run_once(args, threading_mode, cpu_env):
    with tempfile.TemporaryDirectory(prefix='xhv-bench-') as folder:
        out = os.path.join(folder, 'result.json')
        env = dict(os.environ, **cpu_env)
        env.update(XHV_BENCH_RESULT=out,
                   XHV_BENCH_VIRTUAL_GIB=str(args.virtual_gib),
                   XHV_BENCH_ALLOCATED_GIB=str(args.allocated_gib),
                   OS_NOVA_DISABLE_EVENTLET_PATCHING=(
                       '1' if threading_mode else '0'))
        run = subprocess.run(
            [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q',
             BENCH], cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode or not os.path.exists(out):
            sys.stderr.write(run.stdout[-4000:] + run.stderr[-2000:])
            return None
        with open(out) as f:
            return json.load(f)


def report(mode, result):
    stages = result['source_stages_s']
    print('== Nova in %s mode' % mode)
    print('disk: %.1f GiB virtual, %.2f GiB allocated, stored on vSphere as '
          '%.2f GiB streamOptimized vmdk' % (
              result['virtual_size'] / 2 ** 30, result['allocated'] / 2 ** 30,
              result['stored_vmdk_bytes'] / 2 ** 30))
    print('bare qemu-img convert (vmdk -> qcow2): %.2f s'
          % result['bare_convert_s'])
    print('  the same with -t none (O_DIRECT):  %.2f s; the move is %.2f x '
          'that' % (result['bare_convert_direct_s'],
                    result['whole_move_s'] / result['bare_convert_direct_s']))
    for name in sorted(stages):
        print('  stage %-28s %.2f s' % (name, stages[name]))
    print('  finish_migration (create, boot) %.2f s' % result['finish_s'])
    print('whole move (API migrate -> VERIFY_RESIZE): %.2f s = %.2f x the '
          'bare convert (goal <= 1.3)' % (result['whole_move_s'],
                                          result['ratio']))
    print(json.dumps(dict(result, mode=mode)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--virtual-gib', type=float, default=8)
    parser.add_argument('--allocated-gib', type=float, default=1)
    parser.add_argument('--mode', choices=('threading', 'eventlet', 'both'),
                        default='both',
                        help='Nova concurrency mode of the harness: '
                             'threading is nova-compute\'s default in Nova '
                             '34, eventlet the functional tests\' default')
    args = parser.parse_args()
    modes = ('threading', 'eventlet') if args.mode == 'both' else (
        args.mode,)
    cpu_env = cpu_environment()
    for mode in modes:
        result = run_once(args, mode == 'threading', cpu_env)
        if result is None:
            return 1
        report(mode, result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
