# Fail closed on missing thresholds: a rule whose threshold is absent would
# otherwise never fire. Every threshold the gate rules read is listed here.
# `misconfigured` depends on the thresholds alone, so it is evaluated once
# when the rules are loaded (without `input`), not per request; while it has
# members, every answer is a deny that lists them.
package tollgate.gate

import rego.v1

required_params := [
	["unit-cost-cap", "cap_usd"],
	["team-window-spend", "limit_usd"],
	["team-monthly-budget", "budget_usd"],
	["carbon-intensity", "max_g_per_kwh"],
	["gates", "required_tags"],
	["gates", "allowed_regions"],
	["gates", "min_test_pass_rate"],
	["gates", "max_security_findings"],
]

misconfigured contains {"rule": "configuration", "message": msg} if {
	some p in required_params
	not has_param(p[0], p[1])
	msg := sprintf("threshold data.tollgate.params[%q].%s is not configured", [p[0], p[1]])
}

has_param(table, key) if data.tollgate.params[table][key] != null
