"""Option discovery for oslo-config-generator (``oslo.config.opts``)."""

import importlib

# Each module defines GROUP (an OptGroup or group name) and list_opts()
# returning [(group, [opts])] like the generator expects.
_MODULES = [
    'nova_xhv.conf.xhv',
    'nova_xhv.conf.translate',
    'nova_xhv.conf.vmware',
    'nova_xhv.conf.migration',
]


def _load():
    return [importlib.import_module(name) for name in _MODULES]


def register_all(conf):
    for module in _load():
        for group, options in module.list_opts():
            conf.register_opts(options, group=group)


def list_opts():
    result = []
    for module in _load():
        result.extend(module.list_opts())
    return result
