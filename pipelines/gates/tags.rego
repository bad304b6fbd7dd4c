# Required cost tags ([gates.params] required_tags): spend that cannot be
# attributed to a team and environment is not promoted.
package tollgate.gate

import rego.v1

violations contains {"rule": "required-cost-tags", "message": msg} if {
	missing := [t | some t in data.tollgate.params.gates.required_tags; not has_tag(t)]
	count(missing) > 0
	msg := sprintf("missing required cost tags: %s", [concat(", ", missing)])
}

has_tag(t) if trim_space(input.cost_tags[t]) != ""
