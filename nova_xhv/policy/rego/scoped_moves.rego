# Template scoped_moves: the servers the rule's match block selects (by
# tag, metadata, image property or flavor extra spec) may move only along
# the listed edges, by the listed roles -- inside a family too.
# parameters: allow (list of {from, to, roles}).  The match block is
# required: a scoped rule without a scope is a move_matrix.
package xhv.templates.scoped_moves

import rego.v1

import data.xhv.lib

violation contains v if {
	lib.is_move
	some id in lib.applicable.scoped_moves
	rule := data.xhv.rule[id]
	input.source.family
	input.destination.family
	not _allowed(rule.parameters)
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": concat("", [
		"this server (", rule.scope, ") may not move ", lib.edge_text,
		" by a caller with roles: ", lib.roles_text,
	])}
}

_allowed(params) if {
	some edge in object.get(params, "allow", [])
	lib.edge_allows(edge)
}
