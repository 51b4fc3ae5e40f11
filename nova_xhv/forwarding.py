"""Compute drivers that pass every ComputeDriver call to another driver.

``ComputeDriver`` implements most of its members as stubs that raise
``NotImplementedError`` (or return a default), so a wrapper that relied on
``__getattr__`` would silently get the stubs instead of the wrapped
driver's methods.  ``delegating_driver(attr)`` builds a ComputeDriver
subclass that defines one real method per public ComputeDriver member,
with the same signature, forwarding to ``self.<attr>``.  Both XHVDriver
(to its backend) and the libvirt backend (to Nova's stock LibvirtDriver)
are built on it; a subclass overrides only what it changes.

The methods are generated from the installed Nova, so a member that a new
Nova release adds is forwarded too; tests/unit/driver pins Nova 34's list.
"""

import inspect

from nova.virt import driver

# Members that are not per-instance calls: handled explicitly below.
_DATA_MEMBERS = ('capabilities', 'rebalances_nodes')
# A classmethod that builds metadata from its arguments only; drivers use it
# internally, nothing outside a driver calls it.  Kept as the base's
# classmethod (it cannot reach an instance's delegate).
_CLASS_MEMBERS = ('get_instance_driver_metadata',)


def forwarded_names():
    """Every public ComputeDriver member a delegating driver forwards."""
    return sorted(name for name in dir(driver.ComputeDriver)
                  if not name.startswith('_'))


def _forwarder(name, target_attr):
    """One method with ComputeDriver.<name>'s exact signature."""
    stub = getattr(driver.ComputeDriver, name)
    signature = inspect.signature(stub)
    params = []
    call = []
    defaults = {}
    keyword_only_started = False
    for param in list(signature.parameters.values())[1:]:
        text = param.name
        if param.default is not param.empty:
            defaults['_default_' + param.name] = param.default
            text += '=_default_' + param.name
        if param.kind is param.VAR_POSITIONAL:
            text = '*' + param.name
            call.append('*' + param.name)
            keyword_only_started = True
        elif param.kind is param.VAR_KEYWORD:
            text = '**' + param.name
            call.append('**' + param.name)
        elif param.kind is param.KEYWORD_ONLY:
            if not keyword_only_started:
                params.append('*')
                keyword_only_started = True
            call.append('%s=%s' % (param.name, param.name))
        else:
            call.append(param.name)
        params.append(text)
    source = ('def %s(self%s):\n    return self.%s.%s(%s)\n'
              % (name, ''.join(', ' + p for p in params), target_attr,
                 name, ', '.join(call)))
    namespace = dict(defaults)
    exec(compile(source, '<xhv forwarder %s>' % name, 'exec'), namespace)
    method = namespace[name]
    method.__doc__ = stub.__doc__
    method.__module__ = __name__
    return method


def _data_forwarder(name, target_attr):
    def getter(self):
        return getattr(getattr(self, target_attr), name)
    getter.__name__ = name
    return property(getter, doc='The delegate\'s %s.' % name)


def delegating_driver(target_attr, class_name='DelegatingComputeDriver'):
    """A ComputeDriver subclass forwarding every public member.

    :param target_attr: name of the instance attribute holding the driver
        that receives the calls (set it in ``__init__``).
    """
    members = {'__module__': __name__,
               '__doc__': 'ComputeDriver forwarding every call to self.%s.'
                          % target_attr}
    unknown = []
    for name in forwarded_names():
        member = inspect.getattr_static(driver.ComputeDriver, name)
        if name in _DATA_MEMBERS:
            members[name] = _data_forwarder(name, target_attr)
        elif name in _CLASS_MEMBERS:
            members[name] = member
        elif inspect.isfunction(member):
            members[name] = _forwarder(name, target_attr)
        else:
            unknown.append(name)
    if unknown:
        # A new kind of member in a future Nova: decide how to forward it.
        raise TypeError('cannot forward ComputeDriver members: %s'
                        % ', '.join(unknown))
    return type(class_name, (driver.ComputeDriver,), members)
