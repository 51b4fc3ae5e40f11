"""XHV's one security policy, evaluated in-process with Rego.

``engine`` loads and decides (regopy, Rego v1 only: ``regov1``),
``templates`` lists the rule templates XHV ships (Rego in ``rego/``),
``inputs`` builds the input document from plain values, ``memo``
remembers decisions by the input values the modules read, ``enforcer`` is
what an enforcement point holds (fail closed or open).  Nothing here
imports Nova: ``nova_input`` adapts Nova's objects, and the enforcement
points live where Nova decides (nova_xhv.scheduler, nova_xhv.driver,
the exchange, nova_xhv.api).  See doc/source/policy.rst.
"""
