# Template accepted_source_families (a default rule): a compute takes
# servers of another family only from the families it publishes as
# accepted ([xhv] accepted_source_families, and only with an exchange
# endpoint).  No parameters: the list is the destination's own.
package xhv.templates.accepted_source_families

import rego.v1

import data.xhv.lib

violation contains v if {
	lib.is_move
	lib.crosses_families
	some id in lib.applicable.accepted_source_families
	rule := data.xhv.rule[id]
	# null: not known here (nova-api judging a family, not a host).
	is_array(input.destination.accepts)
	not input.source.family in input.destination.accepts
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": concat("", [
		"host ", lib.host_text, " (", lib.text(input.destination.family), ") takes no servers from ",
		lib.text(input.source.family), " ([xhv] accepted_source_families or no exchange_secret)",
	])}
}
