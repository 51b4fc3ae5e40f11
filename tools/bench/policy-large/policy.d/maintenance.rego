# No new servers on hosts of an aggregate in maintenance.
package xhv

import rego.v1

deny contains {"rule": "maintenance", "msg": concat("", ["aggregate ", agg.name, " is in maintenance"])} if {
	input.action in {"boot", "unshelve", "move", "resize", "evacuate"}
	some agg in input.destination.aggregates
	agg.metadata.maintenance == "true"
}
