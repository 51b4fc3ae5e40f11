"""XHV's configuration options, registered on Nova's global CONF.

One module per option group; ``opts.list_opts`` feeds oslo-config-generator.
Add a module here and to ``opts._MODULES`` when a backend needs options.
"""

from oslo_config import cfg

from nova_xhv.conf import opts

CONF = cfg.CONF
opts.register_all(CONF)
