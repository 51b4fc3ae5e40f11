#!/usr/bin/env python3
"""Where a disk's way into vSphere spends its time, stage by stage.

Outside Nova (no libvirt, no lock needed): one vcsim, one source disk as
the KVM -> vSphere benchmark makes it (``--virtual-gib`` virtual,
``--allocated-gib`` of random data, stored as qcow2).  Each round times,
interleaved, and the medians are printed against the first:

bare        ``qemu-img convert -f qcow2 -O qcow2`` of the source (the
            migration benchmark's baseline)
write       the vmdk stream writer into a local file (translate.convert)
curl        ``curl -T`` of that vmdk into an NFC lease: vcsim's own upload
            ceiling with a C client
upload      the backend's upload of that file (stage_disks: ImportVApp,
            the PUT with a length, complete): the old path's second half
stream      translate.open_stream of the local source straight into the
            import (stage_disk_streams): no local copy
stream-remote  the same with the source read over HTTPS from a Range
            server in another process (as a move's destination reads)

plus the CPU time each stage cost vcsim (its receive side) and this
process with its children (qemu-img, curl, the writer, qemu-nbd, the
Range server is not counted): on 2 shared cores the stages are CPU-bound.

    /opt/xhv/venv/bin/python tools/bench/nfc_upload.py [--rounds 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

from nova import objects  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_utils import uuidutils  # noqa: E402

from nova_xhv.backends.vmware import backend as vmware_backend  # noqa: E402
from nova_xhv.disk import DiskDescriptor  # noqa: E402
from nova_xhv import translate  # noqa: E402
from tests.fixtures import http_range  # noqa: E402
from tests.fixtures.vcsim import VcsimServer  # noqa: E402
from tests.functional.migration import bench_kvm_to_vmware  # noqa: E402
from tests.functional.migration.bench_vmware_to_kvm import \
    make_sparse_disk  # noqa: E402

GiB = 1024 ** 3
STAGES = ('bare', 'write', 'curl', 'upload', 'stream', 'stream-remote')


def _instance():
    return objects.Instance(
        uuid=uuidutils.generate_uuid(), display_name='bench',
        flavor=objects.Flavor(vcpus=1, memory_mb=128, root_gb=8,
                              ephemeral_gb=0, swap=0))


def _cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _all_cpu(vcsim_pid):
    """(vcsim's CPU seconds, this process's and its reaped children's)."""
    mine = os.times()
    return (_cpu_seconds(vcsim_pid), mine.user + mine.system
            + mine.children_user + mine.children_system)


class Bench(object):

    def __init__(self, args, folder):
        self.folder = folder
        self.server = VcsimServer(vms=0)
        self.info = self.server.start()
        conf = cfg.CONF
        conf([], project='nova')
        for name, value in dict(
                host=self.info.host, port=self.info.port,
                username=self.info.username, password=self.info.password,
                ca_file=self.info.ca_file, cluster_name=self.info.cluster,
                staging_dir=os.path.join(folder, 'staging'),
                connection_retries=0).items():
            conf.set_override(name, value, group='xhv_vmware')
        self.backend = vmware_backend.VMwareBackend(None)
        self.backend.init_host('bench')
        raw = os.path.join(folder, 'source.raw')
        self.allocated = make_sparse_disk(raw, int(args.virtual_gib * GiB),
                                          int(args.allocated_gib * GiB))
        self.source = os.path.join(folder, 'source.qcow2')
        subprocess.run(('qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                        raw, self.source), check=True)
        os.unlink(raw)
        self.tls = http_range.make_tls_files(folder)
        self.remote = http_range.RangeServerProcess(folder, tls=self.tls)

    def close(self):
        self.remote.stop()
        self.backend.cleanup_host('bench')
        self.server.stop()

    def _clean_datastore(self):
        subprocess.run('rm -rf %s/*/*-*-*' % self.info.datastore_root,
                       shell=True, check=False)

    def bare(self):
        out = os.path.join(self.folder, 'bare.qcow2')
        subprocess.run(('qemu-img', 'convert', '-f', 'qcow2', '-O', 'qcow2',
                        self.source, out), check=True)
        os.unlink(out)

    def write(self):
        self.vmdk = os.path.join(self.folder, 'written.vmdk')
        if os.path.exists(self.vmdk):
            os.unlink(self.vmdk)
        translate.convert(self.source, self.vmdk, to_format='vmdk',
                          from_format='qcow2', subformat='streamOptimized')

    def curl(self):
        return bench_kvm_to_vmware.curl_into_lease(self.backend, _instance(),
                                                   self.vmdk)

    def upload(self):
        return bench_kvm_to_vmware.upload_file(self.backend, _instance(),
                                               self.vmdk)

    def _staged(self, stage):
        instance = _instance()
        staged = stage(instance)
        self.backend.discard_staged_disks(None, instance, staged)

    def _stream(self, source):
        def stage(instance):
            with translate.open_stream(source, from_format='qcow2') as s:
                return self.backend.stage_disk_streams(
                    None, instance, [DiskDescriptor(
                        format='vmdk', subformat='streamOptimized',
                        virtual_size=s.virtual_size, url='https://bench/',
                        bus='lsiLogic')], [s])[0]
        self._staged(stage)

    def stream(self):
        self._stream(self.source)

    def stream_remote(self):
        self._stream(translate.RemoteSource(
            self.remote.url('source.qcow2'), format='qcow2',
            ca_file=self.tls.ca))

    def run(self, rounds):
        times = {s: [] for s in STAGES}
        cpu = {s: [] for s in STAGES}
        for n in range(rounds):
            for stage in STAGES:
                before = _all_cpu(self.server.proc.pid)
                started = time.monotonic()
                inner = getattr(self, stage.replace('-', '_'))()
                elapsed = inner if inner is not None else \
                    time.monotonic() - started
                times[stage].append(elapsed)
                after = _all_cpu(self.server.proc.pid)
                cpu[stage].append((after[0] - before[0],
                                   after[1] - before[1]))
                self._clean_datastore()
                print('round %d %-14s %6.2f s (CPU: vcsim %.2f s, this '
                      'process and its children %.2f s)'
                      % ((n + 1, stage, elapsed) + cpu[stage][-1]),
                      flush=True)
        return times, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--virtual-gib', type=float, default=8)
    parser.add_argument('--allocated-gib', type=float, default=1)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    objects.register_all()
    with tempfile.TemporaryDirectory(prefix='xhv-nfc-bench-',
                                     dir='/var/tmp') as folder:
        bench = Bench(args, folder)
        try:
            times, cpu = bench.run(args.rounds)
            size = os.path.getsize(bench.vmdk)
        finally:
            bench.close()
    print('disk: %.1f GiB virtual, %.2f GiB of random data, qcow2 source; '
          'stream %.2f GiB; medians of %d, load %.1f' % (
              args.virtual_gib, bench.allocated / GiB, size / GiB,
              args.rounds, os.getloadavg()[0]))
    base = statistics.median(times['bare'])
    for stage in STAGES:
        median = statistics.median(times[stage])
        print('%-14s %6.2f s  %5.2f x bare  %5.0f MB/s  CPU: vcsim %.2f s, '
              'ours %.2f s' % (
                  stage, median, median / base, size / median / 1e6,
                  statistics.median(c[0] for c in cpu[stage]),
                  statistics.median(c[1] for c in cpu[stage])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
