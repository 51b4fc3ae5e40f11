"""Option discovery for oslo-config-generator (``oslo.config.opts``).

Every module of ``nova_xhv.conf`` except this one defines list_opts()
returning [(group, [opts])] like the generator expects; a backend adds its
``[xhv_<name>]`` group by adding ``nova_xhv/conf/<name>.py``, with no list
to edit here.
"""

import importlib
import pkgutil

# The core groups first (the order of the generated sample).
_FIRST = ['xhv', 'translate', 'migration']


def _module_names():
    import nova_xhv.conf as package
    found = sorted(info.name for info in pkgutil.iter_modules(
        package.__path__) if info.name != 'opts')
    return ([n for n in _FIRST if n in found]
            + [n for n in found if n not in _FIRST])


def _load():
    return [importlib.import_module('nova_xhv.conf.' + name)
            for name in _module_names()]


def register_all(conf):
    for module in _load():
        for group, options in module.list_opts():
            conf.register_opts(options, group=group)


def list_opts():
    result = []
    for module in _load():
        result.extend(module.list_opts())
    return result
