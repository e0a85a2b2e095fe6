package publish

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
			if equalFold(key, n) {
				return true
			}
		}
		return false
	}
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
