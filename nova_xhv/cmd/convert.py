"""xhv-convert: translate one disk image safely, or inspect it.

    xhv-convert SRC DST --to FMT [--from FMT] [--subformat X] [--verify]
                [--rate-limit BYTES] [--staging-dir DIR] ...
    xhv-convert --info FILE [--from FMT] [--staging-dir DIR] [--json]
    xhv-convert demo [--workdir DIR]

SRC may be an http(s) URL served with Range support; credentials come from
the XHV_CONVERT_USERNAME / XHV_CONVERT_PASSWORD environment variables,
never from the command line.  Exit status: 0 done, 1 refused (unsafe or
unsupported input), 2 usage error, 3 conversion failed or timed out.
"""

import argparse
import json
import logging as std_logging
import os
import sys

from nova_xhv import translate
from nova_xhv.translate import formats

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
GiB = 1024 ** 3


class ProgressBar(object):
    """A one-line bar on a terminal; nothing at all elsewhere."""

    def __init__(self, stream, width=40):
        self._stream = stream
        self._width = width
        self._shown = None

    def __call__(self, percent):
        shown = int(percent * 10)
        if shown == self._shown:
            return
        self._shown = shown
        filled = int(self._width * percent / 100.0)
        self._stream.write('\r[%s%s] %5.1f%%' % (
            '#' * filled, '.' * (self._width - filled), percent))
        self._stream.flush()

    def finish(self):
        if self._shown is not None:
            self._stream.write('\n')
            self._stream.flush()


def _format_name(value):
    try:
        return formats.canonical_name(value)
    except translate.UnsupportedFormat as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _convert_parser():
    parser = argparse.ArgumentParser(
        prog='xhv-convert',
        description='Translate a disk image between raw, qcow2, vmdk, vhdx '
                    'and vhd after checking it is safe to open.',
        epilog='Also: "xhv-convert --info FILE [--json]" and '
               '"xhv-convert demo [--workdir DIR]".')
    parser.add_argument('src', help='source file, or an http(s) URL')
    parser.add_argument('dst', help='output file (must not exist)')
    parser.add_argument('--to', required=True, type=_format_name,
                        dest='to_format', metavar='FMT',
                        help='target format: %s' % ', '.join(formats.FORMATS))
    parser.add_argument('--from', type=_format_name, dest='from_format',
                        metavar='FMT',
                        help='claimed source format (default: detect); '
                             'the content must match it')
    parser.add_argument('--subformat',
                        help='vmdk: streamOptimized (default) or '
                             'monolithicSparse; vhd: dynamic (default) or '
                             'fixed; vhdx: dynamic')
    parser.add_argument('--verify', action='store_true',
                        help='compare guest data of source and output')
    parser.add_argument('--rate-limit', type=int, default=0,
                        metavar='BYTES',
                        help='throttle qemu-img to BYTES per second')
    parser.add_argument('--staging-dir', metavar='DIR',
                        help='private folder trusted to hold a VMware '
                             'monolithicFlat descriptor and its extent')
    parser.add_argument('--coroutines', type=int, default=8,
                        help='qemu-img -m (1-16, default 8)')
    parser.add_argument('--out-of-order', action='store_true',
                        help='qemu-img -W: allow out-of-order writes')
    parser.add_argument('--no-vmdk-stream-decoder', action='store_false',
                        dest='vmdk_stream_decoder',
                        help='convert a streamOptimized vmdk with qemu-img\'s '
                             'vmdk driver instead of XHV\'s one-pass stream '
                             'decoder')
    parser.add_argument('--no-vmdk-stream-writer', action='store_false',
                        dest='vmdk_stream_writer',
                        help='write a streamOptimized vmdk with qemu-img '
                             'instead of XHV\'s parallel stream writer')
    parser.add_argument('--compress-level', type=int, default=1,
                        metavar='N',
                        help='deflate level of the vmdk stream writer '
                             '(0-9, default 1; 0 stores every grain)')
    parser.add_argument('--compress-workers', type=int, default=0,
                        metavar='N',
                        help='threads the vmdk stream writer deflates on '
                             '(default 0: one per core)')
    parser.add_argument('--no-direct-io', action='store_false',
                        dest='direct_io',
                        help='write the output through the page cache even '
                             'where its filesystem takes O_DIRECT')
    parser.add_argument('--max-virtual-size-gib', type=int, default=2048,
                        help='refuse disks larger than this (default 2048)')
    parser.add_argument('--ca-file', metavar='PEM',
                        help='CA bundle that signed an https source')
    parser.add_argument('--insecure', action='store_true',
                        help='do not verify the TLS certificate of an '
                             'https source')
    parser.add_argument('--debug', action='store_true',
                        help='log what the engine does to stderr')
    return parser


def _info_parser():
    parser = argparse.ArgumentParser(
        prog='xhv-convert --info',
        description='Show what the safety gate finds in an image.')
    parser.add_argument('--info', required=True, metavar='FILE',
                        help='image to inspect (nothing is executed on it)')
    parser.add_argument('--from', type=_format_name, dest='from_format',
                        metavar='FMT', help='claimed format (default: '
                                            'detect)')
    parser.add_argument('--staging-dir', metavar='DIR')
    parser.add_argument('--json', action='store_true',
                        help='print JSON instead of text')
    parser.add_argument('--debug', action='store_true')
    return parser


def _setup_logging(debug):
    root = std_logging.getLogger()
    if debug:
        std_logging.basicConfig(level=std_logging.DEBUG, stream=sys.stderr)
    else:
        # The one-line reason is ours to print; keep warnings quiet.
        root.addHandler(std_logging.NullHandler())
        root.setLevel(std_logging.CRITICAL)


def _refuse(exc, code):
    message = ' '.join(str(exc).split())
    sys.stderr.write('xhv-convert: %s: %s\n' % (
        'refused' if code == EXIT_REFUSED else 'failed', message))
    return code


def _run_info(argv):
    args = _info_parser().parse_args(argv)
    _setup_logging(args.debug)
    try:
        info = translate.inspect_image(args.info, args.from_format,
                                       staging_dir=args.staging_dir,
                                       raise_on_unsafe=False)
    except translate.TranslationError as exc:
        return _refuse(exc, EXIT_REFUSED)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, sort_keys=True))
    else:
        print('file:          %s' % info.path)
        print('format:        %s' % info.format)
        print('subformat:     %s' % (info.subformat or '-'))
        print('virtual size:  %d' % info.virtual_size)
        print('allocated:     %d' % info.actual_size)
        if info.data_path and info.data_path != info.path:
            print('data file:     %s' % info.data_path)
        print('verdict:       %s' % ('safe' if info.safe else 'UNSAFE'))
        for failure in info.failures:
            print('  - %s' % failure)
    return EXIT_OK if info.safe else EXIT_REFUSED


def _source(args):
    if args.src.startswith(('http://', 'https://')):
        return translate.RemoteSource(
            args.src, args.from_format,
            username=os.environ.get('XHV_CONVERT_USERNAME'),
            password=os.environ.get('XHV_CONVERT_PASSWORD'),
            ca_file=args.ca_file, insecure=args.insecure)
    return args.src


def _run_convert(argv):
    args = _convert_parser().parse_args(argv)
    _setup_logging(args.debug)
    if not 1 <= args.coroutines <= 16:
        return _refuse('--coroutines must be between 1 and 16', EXIT_USAGE)
    if not 0 <= args.compress_level <= 9:
        return _refuse('--compress-level must be between 0 and 9',
                       EXIT_USAGE)
    if not 0 <= args.compress_workers <= 64:
        return _refuse('--compress-workers must be between 0 and 64',
                       EXIT_USAGE)
    options = translate.ConvertOptions(
        max_virtual_size=args.max_virtual_size_gib * GiB,
        rate_limit=max(args.rate_limit, 0), verify=args.verify,
        staging_dir=args.staging_dir, coroutines=args.coroutines,
        out_of_order=args.out_of_order,
        vmdk_stream_decoder=args.vmdk_stream_decoder,
        vmdk_stream_writer=args.vmdk_stream_writer,
        vmdk_compress_level=args.compress_level,
        vmdk_compress_workers=args.compress_workers,
        direct_io=args.direct_io)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = translate.convert(_source(args), args.dst, args.to_format,
                                   from_format=args.from_format,
                                   subformat=args.subformat, options=options,
                                   progress=bar)
    except (translate.UnsafeImage, translate.UnsupportedFormat) as exc:
        return _refuse(exc, EXIT_REFUSED)
    except translate.TranslationError as exc:
        return _refuse(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        return _refuse('interrupted; no output written', EXIT_FAILED)
    finally:
        if bar:
            bar.finish()
    if sys.stdout.isatty() or args.debug:
        print('%s (%s) -> %s %s%s in %.1f s' % (
            result.src_info.format, result.src_info.subformat or '-',
            result.dst_format, result.dst_subformat or '',
            ', verified' if result.verified else '', result.elapsed))
    return EXIT_OK


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == 'demo':
            from nova_xhv.cmd import demo
            return demo.main(argv[1:])
        if any(a == '--info' or a.startswith('--info=') for a in argv):
            return _run_info(argv)
        return _run_convert(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == '__main__':
    sys.exit(main())
