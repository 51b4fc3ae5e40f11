"""vSphere faults and transport errors as Nova exceptions.

Every message names the vSphere fault (or the transport error) and, where
one exists, the option an operator has to fix.
"""

from nova import exception
from nova.i18n import _
from pyVmomi import vim
from pyVmomi import vmodl


class VSphereError(exception.NovaException):
    msg_fmt = _('vSphere call %(what)s failed with %(fault)s: %(detail)s')


class VSphereConnectionError(VSphereError):
    msg_fmt = _('Cannot use vCenter %(endpoint)s: %(detail)s')


class VSphereTaskTimeout(VSphereError):
    msg_fmt = _('vSphere task %(what)s did not finish within %(timeout)s s '
                '([xhv_vmware] task_timeout); it was asked to cancel')


class VSphereConfigError(VSphereError):
    msg_fmt = _('[xhv_vmware] configuration problem: %(detail)s')


class VSphereDiskError(VSphereError):
    msg_fmt = _('Disk %(path)s cannot be used: %(detail)s')


def fault_name(fault):
    """The vSphere fault's type name, e.g. InvalidPowerState."""
    if isinstance(fault, vmodl.MethodFault):
        return type(fault).__name__.rsplit('.', 1)[-1]
    return type(fault).__name__


def fault_detail(fault):
    msg = getattr(fault, 'msg', None) or ''
    if not msg and getattr(fault, 'faultMessage', None):
        msg = '; '.join(m.message for m in fault.faultMessage if m.message)
    return msg or str(fault).strip().splitlines()[0][:300]


def translate(fault, what, instance=None):
    """Return a Nova exception for a vSphere fault raised by ``what``."""
    name = fault_name(fault)
    uuid = getattr(instance, 'uuid', None)
    if uuid and isinstance(fault, vmodl.fault.ManagedObjectNotFound):
        return exception.InstanceNotFound(instance_id=uuid)
    if uuid and isinstance(fault, vim.fault.InvalidPowerState):
        return exception.InstanceInvalidState(
            instance_uuid=uuid, attr='power_state',
            state=str(getattr(fault, 'existingState', '?')),
            method='%s (vSphere fault InvalidPowerState)' % what)
    return VSphereError(what=what, fault=name, detail=fault_detail(fault))


def task_error(fault, what, instance=None):
    """Exception for a task that ended with ``fault`` (its info.error)."""
    if fault is None:
        return VSphereError(what=what, fault='TaskFailed',
                            detail='the task failed without a fault')
    return translate(fault, what, instance)


def is_fault(exc, name):
    """True when ``exc`` is an XHV exception made from fault ``name``."""
    return (isinstance(exc, VSphereError)
            and exc.kwargs.get('fault') == name)
