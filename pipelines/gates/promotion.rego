# Promotion gates: test pass rate and security findings by severity
# ([gates.params] min_test_pass_rate, max_security_findings). Evidence the
# request does not carry is not judged.
package tollgate.gate

import rego.v1

violations contains {"rule": "test-pass-rate", "message": msg} if {
	minimum := data.tollgate.params.gates.min_test_pass_rate
	input.test_pass_rate < minimum
	msg := sprintf("test pass rate %v is below the required %v", [input.test_pass_rate, minimum])
}

violations contains {"rule": "security-scan", "message": msg} if {
	some severity, allowed in data.tollgate.params.gates.max_security_findings
	found := object.get(input.security_scan, severity, 0)
	found > allowed
	msg := sprintf("%v %s security finding(s), at most %v allowed", [found, severity, allowed])
}
