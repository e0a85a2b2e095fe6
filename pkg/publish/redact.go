package publish

import "github.com/amibus/amibus/pkg/amiwire"

// DefaultRedactFields are the event fields replaced by RedactedValue unless
// configured otherwise: ExpectedResponse, in ChallengeResponseFailed, is the
// MD5 of the challenge and the secret, enough to brute-force the secret.
var DefaultRedactFields = []string{"ExpectedResponse"}

// RedactFields returns a matcher for AppendEvent that is true for the given
// field names, ignoring ASCII case as Asterisk does. It does not allocate.
// With no names it returns nil (nothing is redacted).
func RedactFields(names ...string) func(key []byte) bool {
	var list []string
	for _, n := range names {
		if n != "" {
			list = append(list, n)
		}
	}
	if len(list) == 0 {
		return nil
	}
	return func(key []byte) bool {
		for _, n := range list {
			if amiwire.EqualFold(key, n) {
				return true
			}
		}
		return false
	}
}
