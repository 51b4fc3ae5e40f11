"""tools/xhv-aio's commands, run by the venv's Python (see tools/xhv-aio).

up      configure and start the cloud (idempotent: starts what is missing);
        --with-region-two (or XHV_AIO_REGION_TWO=1) adds RegionTwo and
        RegionOne's cloud compute "aio-cloud" (tools/aio/region_two.py)
demo    up, then the openstack CLI demo with a table of step times
status  each service with its PID, or DEAD
logs    the last lines of every service's log (or of the named ones)
down    delete the cloud's servers and the demo's volumes and images, stop
        every process it started by PID, remove the libvirt domains of its
        KVM compute and its Open vSwitch bridges' devices, and unmount
        Cinder's (bind-mounted) share
"""

import argparse
import os
import signal
import sys
import time
import traceback

import demo as demo_mod
import procs
import region_two
import services
import stack


def _state_dir():
    return os.environ.get('XHV_AIO_DIR', '/var/lib/xhv-aio')


def _cloud():
    return services.Cloud(_state_dir(), sys.prefix)


def cmd_up(args, run_demo=False):
    cloud = _cloud()
    st = stack.Stack(cloud)

    def interrupted(signum, frame):
        raise KeyboardInterrupt()
    # Explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    start = time.monotonic()
    try:
        st.up()
        services.log('cloud up in %.1f s; try: openstack --os-cloud %s '
                     'hypervisor list --long'
                     % (time.monotonic() - start, stack.CLOUD_NAME))
        if region_two.enabled(args.with_region_two):
            region_two.RegionTwo(cloud).up()
        if run_demo:
            return demo_mod.Demo(cloud).run()
        return 0
    except KeyboardInterrupt:
        services.log('interrupted: stopping everything started')
        _down(cloud)
        return 130
    except Exception as exc:  # noqa: B902 - anything: stop what started
        if not isinstance(exc, procs.ServiceFailed):
            traceback.print_exc()
        print('xhv-aio: FAILED: %s' % exc, file=sys.stderr, flush=True)
        if args.keep_on_failure:
            return 1
        services.log('stopping what was started (--keep-on-failure keeps '
                     'it for inspection)')
        _down(cloud)
        return 1


def _down(cloud):
    # A second Ctrl-C must not leave half the services running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopped, removed = stack.Stack(cloud).down()
    services.log('stopped: %s' % (', '.join(stopped) or 'nothing'))
    if removed:
        services.log('removed libvirt domains: %s' % ', '.join(removed))
    return 0


def cmd_status(args):
    cloud = _cloud()
    rows = stack.status(cloud)
    if not rows:
        print('xhv-aio: nothing running')
        return 3
    for row in rows:
        print('%-22s %8s  %-8s %s' % row)
    return 0 if all(r[2] == 'running' for r in rows) else 1


def cmd_logs(args):
    cloud = _cloud()
    names = args.services or cloud.procs.names()
    for name in names:
        print('==== %s (%s)' % (name, cloud.procs.log_path(name)))
        print(cloud.procs.log_tail(name, args.lines))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='xhv-aio', description=__doc__,
                                     formatter_class=argparse.
                                     RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    for name in ('up', 'demo'):
        p = sub.add_parser(name)
        p.add_argument('--keep-on-failure', action='store_true',
                       help='leave the services running when one fails')
        p.add_argument('--with-region-two', action='store_true',
                       help='also start RegionTwo and RegionOne\'s cloud '
                       'compute standing for it (tools/aio/region_two.py)')
    sub.add_parser('status')
    p = sub.add_parser('logs')
    p.add_argument('services', nargs='*')
    p.add_argument('-n', '--lines', type=int, default=40)
    sub.add_parser('down')
    args = parser.parse_args(argv)
    if args.command == 'up':
        return cmd_up(args)
    if args.command == 'demo':
        return cmd_up(args, run_demo=True)
    if args.command == 'status':
        return cmd_status(args)
    if args.command == 'logs':
        return cmd_logs(args)
    return _down(_cloud())


if __name__ == '__main__':
    sys.exit(main())
