"""Each compute on a shared libvirtd counts only the domains it names.

One libvirtd serves every KVM test bed of a machine: the Nova-harness
tests and the all-in-one cloud, which CI runs at the same time.  Nova's
libvirt driver takes every domain libvirtd holds for its own: a new
nova-compute refuses to start while any exists
(``ComputeManager._sanity_check_new_host``: "My hypervisor has existing
instances ...") and the resource tracker counts their vCPUs and disks.
On a host of its own a compute owns every domain; here each bed names its
domains with an ``instance_name_template`` prefix of its own
(``xhv-aio-``, ``xhv-<8 hex>-`` per harness test), and this filter keeps
Nova's view of libvirtd (``Host.list_instance_domains``, behind
``list_instances``, ``list_instance_uuids`` and the resource tracker) to
the domains of that prefix.  Domains are still found by UUID as before.

Run as a program it is ``nova-compute`` with the filter for the prefix of
``[DEFAULT] instance_name_template`` (tools/aio/stack.py: the all-in-one's
KVM compute).  No module of xhv-aio is imported here.
"""

import os
import sys


def template_prefix(template):
    """The fixed start of an instance_name_template ('' if none)."""
    return template.split('%', 1)[0]


def keep_named(real, prefix):
    """``Host.list_instance_domains`` (``real``) limited to ``prefix``.

    ``prefix`` may be a callable returning it (read at each call: Nova's
    configuration is parsed after the patch is in place).
    """

    def list_instance_domains(self, only_running=True):
        start = prefix() if callable(prefix) else prefix
        return [dom for dom in real(self, only_running=only_running)
                if dom.name().startswith(start)]

    return list_instance_domains


def main():
    # Python put this folder first on sys.path: its modules (network,
    # services, ...) must not shadow any that Nova imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != here]
    # nova.cmd.compute first: it sets up Nova's threading or eventlet mode
    # before the rest of Nova is imported, as the nova-compute script does.
    from nova.cmd import compute
    from nova import conf
    from nova.virt.libvirt import host

    host.Host.list_instance_domains = keep_named(
        host.Host.list_instance_domains,
        lambda: template_prefix(conf.CONF.instance_name_template))
    sys.argv[0] = os.path.join(os.path.dirname(sys.executable),
                               'nova-compute')
    return compute.main()


if __name__ == '__main__':
    sys.exit(main())
