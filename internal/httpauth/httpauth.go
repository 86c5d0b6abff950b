// Package httpauth holds what the OpenAI API (api) and the admin API
// (cluster) share about HTTP credentials.
package httpauth

import "strings"

// Bearer returns the credentials of an Authorization header of the Bearer
// scheme, matched without regard to case as RFC 9110 says of schemes.
func Bearer(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}
