# The team's live spend: its newest open window (summed over source
# partitions) and its month to date (written rollups plus open windows),
# plus the spend the release projects, against the thresholds of the
# `team-window-spend` and `team-monthly-budget` window policies.
package tollgate.gate

import rego.v1

projected := object.get(input, "projected_spend_usd", 0)

window_spend := s if {
	s := input.context.window.spend_usd
} else := 0

violations contains {"rule": "team-window-spend", "message": msg} if {
	input.context.team
	limit := data.tollgate.params["team-window-spend"].limit_usd
	total := window_spend + projected
	total > limit
	msg := sprintf("team %s: %.2f USD spent in the current window plus %.2f USD projected exceeds the window limit of %.2f USD", [input.context.team, window_spend, projected, limit])
}

violations contains {"rule": "team-monthly-budget", "message": msg} if {
	input.context.team
	budget := data.tollgate.params["team-monthly-budget"].budget_usd
	spent := input.context.month.spend_usd
	spent + projected > budget
	msg := sprintf("team %s: %.2f USD spent since %s plus %.2f USD projected exceeds the monthly budget of %.2f USD", [input.context.team, spent, input.context.month.start, projected, budget])
}
