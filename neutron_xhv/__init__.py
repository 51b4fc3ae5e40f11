"""XHV's Neutron side: the ML2 mechanism driver ``xhv``.

It binds ports on the hosts of hypervisor families that run no Neutron
agent (vSphere, later Hyper-V and XenServer) with what each family's
backend consumes, as the family declares it in its facts
(nova_xhv.backends.family.Network).  Imports no Nova: it runs inside
neutron-server and reads only the families' light facts modules.
"""
