"""``[xhv]`` options of the disk-format translation engine.

Defined in nova_xhv.translate.options (so cinder_xhv registers them
without Nova's groups); nova_xhv.translate itself never reads
configuration: callers build a ConvertOptions with
convert_options_from_conf(CONF.xhv).
"""

from nova_xhv.conf.xhv import xhv_group
from nova_xhv.translate import options

GiB = options.GiB
MiB = options.MiB
translate_opts = options.translate_opts
convert_options_from_conf = options.convert_options_from_conf


def list_opts():
    return [(xhv_group, translate_opts)]
