"""Options of the translation engine, and ConvertOptions from them.

The engine itself never reads configuration: callers build a
ConvertOptions with ``convert_options_from_conf(CONF.xhv)``.  Nova
(nova_xhv/conf/translate.py) and Cinder (cinder_xhv/opts.py) register
these options in their own ``[xhv]`` group; defining them here, beside
the engine, lets cinder-volume register them without any Nova-side
option group.
"""

from oslo_config import cfg

from nova_xhv import translate

GiB = 1024 ** 3
MiB = 1024 ** 2

translate_opts = [
    cfg.IntOpt('max_virtual_size_gib',
               default=2048, min=1,
               help='Largest virtual disk size, in GiB, that XHV translates '
                    'between formats. Images claiming more are refused '
                    'before qemu-img opens them; this stops absurd '
                    'headers from exhausting the destination\'s storage.'),
    cfg.IntOpt('qemu_img_cpu_seconds',
               default=30, min=1,
               help='CPU-time limit (prlimit) of each qemu-img info call. '
                    'convert and compare get max(this, twice their wall '
                    'timeout), since they legitimately run long.'),
    cfg.IntOpt('qemu_img_address_space_mib',
               default=4096, min=1024,
               help='Address-space limit (prlimit), in MiB, of every '
                    'qemu-img process. qemu-img convert needs about 2 GiB '
                    'of address space for its I/O threads; lower values '
                    'make it abort at start.'),
    cfg.IntOpt('convert_timeout_base',
               default=300, min=1,
               help='Seconds every qemu-img convert or compare may run, '
                    'plus convert_timeout_per_gib for each GiB of virtual '
                    'size. A conversion running longer is killed and '
                    'leaves no output.'),
    cfg.IntOpt('convert_timeout_per_gib',
               default=60, min=0,
               help='Extra seconds of convert/compare budget per GiB of '
                    'virtual disk size (60 means at least ~17 MiB/s).'),
    cfg.IntOpt('convert_coroutines',
               default=8, min=1, max=16,
               help='Parallel qemu-img convert coroutines (qemu-img -m).'),
    cfg.BoolOpt('convert_out_of_order',
                default=False,
                help='Allow qemu-img convert to write out of order '
                     '(qemu-img -W). Faster on fast storage; the output is '
                     'the same.'),
    cfg.IntOpt('convert_rate_limit',
               default=0, min=0,
               help='Throttle each qemu-img convert to this many bytes per '
                    'second (qemu-img -r); 0 means unlimited. Use it to '
                    'keep migrations from starving running guests of '
                    'disk bandwidth.'),
    cfg.IntOpt('convert_sparse_size_kib',
               default=4, min=0,
               help='Zero runs of at least this many KiB are left '
                    'unallocated in the output (qemu-img -S); 0 writes '
                    'every byte.'),
    cfg.BoolOpt('vmdk_stream_decoder',
                default=True,
                help='Translate streamOptimized vmdk disks (vSphere\'s '
                     'format for moved disks, and VMware exports) to qcow2 '
                     'or raw by decoding the stream in one sequential pass '
                     '(remote disks with one GET) and letting qemu-nbd '
                     'write the output, instead of through qemu-img\'s '
                     'vmdk driver, which reads every grain twice. Both '
                     'apply the same safety inspection first. Conversions '
                     'with convert_rate_limit set or '
                     'convert_sparse_size_kib = 0 always use qemu-img.'),
    cfg.BoolOpt('vmdk_stream_writer',
                default=True,
                help='Write streamOptimized vmdk disks (what vSphere '
                     'imports: spawns from non-vmdk images, moves to '
                     'vSphere, volume uploads in vmdk) with XHV\'s own '
                     'writer: it reads only the allocated data of the '
                     'source (served read-only by qemu-nbd with its '
                     'inspected format), drops zero grains, deflates on '
                     'vmdk_compress_workers threads with zlib-ng and stores '
                     'grains that do not compress, in one sequential pass; '
                     'about 10x faster than qemu-img, which deflates on one '
                     'core. Conversions with convert_rate_limit set always '
                     'use qemu-img.'),
    cfg.IntOpt('vmdk_compress_level',
               default=1, min=0, max=9,
               help='Deflate level of the vmdk stream writer. 1 is the '
                    'fastest; higher levels shrink text-like data by a few '
                    'percent more for several times the CPU. 0 stores '
                    'every grain uncompressed (valid, and as large as the '
                    'data).'),
    cfg.IntOpt('vmdk_compress_workers',
               default=0, min=0, max=64,
               help='Threads the vmdk stream writer deflates on; 0 is one '
                    'per CPU core the process may use. Memory grows with '
                    'it by about 2 MiB per thread, never with disk size.'),
    cfg.BoolOpt('convert_direct_io',
                default=True,
                help='Write converted qcow2, raw and vhdx disks with '
                     'O_DIRECT (qemu cache mode "none") when their '
                     'filesystem supports it, as Nova does for its own '
                     'conversions: a multi-GiB conversion then neither '
                     'evicts the page cache running guests use nor pays '
                     'for fresh page-cache memory (1 GiB into qcow2 went '
                     'from 1.1-2.6 s to 0.7 s on the test bed). vmdk and '
                     'vhd outputs, which qemu writes in small pieces, and '
                     'filesystems without O_DIRECT (tmpfs before Linux '
                     '6.6, some FUSE and network filesystems) always go '
                     'through the page cache. False writes every output '
                     'through the page cache (qemu-img\'s default).'),
    cfg.BoolOpt('verify_conversions',
                default=False,
                help='After each translation, compare the guest data of '
                     'source and output with qemu-img compare and fail the '
                     'move on any difference. Reads both disks once more.'),
    cfg.StrOpt('conversion_scratch_dir',
               help='Folder for the engine\'s small temporary files (header '
                    'copies of remote sources, credential files for '
                    'qemu-img). Default: the system temporary folder. '
                    'Converted disks are written next to their '
                    'destination, never here.'),
]


def convert_options_from_conf(group, staging_dir=None):
    """ConvertOptions from a config group object (e.g. CONF.xhv).

    ``staging_dir``: a folder private to one operation, where a
    monolithicFlat descriptor + extent pair downloaded there may be read.
    """
    return translate.ConvertOptions(
        staging_dir=staging_dir,
        max_virtual_size=group.max_virtual_size_gib * GiB,
        cpu_seconds=group.qemu_img_cpu_seconds,
        address_space=group.qemu_img_address_space_mib * MiB,
        timeout_base=group.convert_timeout_base,
        timeout_per_gib=group.convert_timeout_per_gib,
        coroutines=group.convert_coroutines,
        out_of_order=group.convert_out_of_order,
        rate_limit=group.convert_rate_limit,
        sparse_size=group.convert_sparse_size_kib * 1024,
        vmdk_stream_decoder=group.vmdk_stream_decoder,
        vmdk_stream_writer=group.vmdk_stream_writer,
        vmdk_compress_level=group.vmdk_compress_level,
        vmdk_compress_workers=group.vmdk_compress_workers,
        direct_io=group.convert_direct_io,
        verify=group.verify_conversions,
        scratch_dir=group.conversion_scratch_dir)
