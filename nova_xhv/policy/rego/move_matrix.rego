# Template move_matrix: which moves between hypervisor families are
# allowed, and who may trigger them.  parameters: allow (list of
# {from, to, roles}; "*" for any family, no roles for any caller),
# cross_family_only (default true: moves inside one family pass).
package xhv.templates.move_matrix

import rego.v1

import data.xhv.lib

violation contains v if {
	lib.is_move
	some id in lib.applicable.move_matrix
	rule := data.xhv.rule[id]
	_in_scope(rule.parameters)
	not _allowed(rule.parameters)
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": concat("", [
		"moves ", lib.edge_text, " are not allowed to a caller with roles: ", lib.roles_text,
	])}
}

_in_scope(params) if lib.crosses_families

_in_scope(params) if {
	object.get(params, "cross_family_only", true) == false
	input.source.family
	input.destination.family
}

_allowed(params) if {
	some edge in object.get(params, "allow", [])
	lib.edge_allows(edge)
}
