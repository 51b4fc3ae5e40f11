# Housekeeping: every server says who owns it; sandboxes get no big flavors;
# the legacy family takes no new servers.
package xhv

import rego.v1

warn contains {"rule": "owner-missing", "msg": "the server has no owner metadata"} if {
	input.action == "boot"
	not input.server.metadata.owner
}

deny contains {"rule": "sandbox-flavors", "msg": concat("", ["project sandbox may not use flavor ", input.server.flavor.name])} if {
	input.server.project_id == "sandbox"
	input.server.flavor.name in {"m1.xlarge", "m1.2xlarge", "gpu.large"}
}

deny contains {"rule": "legacy-xen-frozen", "msg": "no new servers on xen"} if {
	input.action in {"boot", "unshelve"}
	input.destination.family == "xen"
}
