package config

import (
	"errors"
	"fmt"
	"strings"
)

// expandEnv replaces ${NAME} by the variable's value and $$ by a single $.
// Any other $ is kept as written: $NAME is not expanded, so that a secret
// containing a $ mostly survives, and ${...} is the one unambiguous form.
// Errors name the variable or the problem, never the value, because the
// value may be a secret.
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${ (write $$ for a literal $)")
			}
			name := s[i+2 : i+2+end]
			if !validEnvName(name) {
				// The text between the braces is not quoted: it may be
				// part of a secret written with a literal ${.
				return "", fmt.Errorf("invalid ${...} reference: only ${NAME} with letters, digits and _ is supported (write $$ for a literal $)")
			}
			v, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// validEnvName accepts POSIX names: a letter or _ then letters, digits, _.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
