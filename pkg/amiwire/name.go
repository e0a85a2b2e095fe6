package amiwire

// NameByte reports whether c may appear in a name amibus accepts for AMI
// events, actions and nodes: an ASCII letter, a digit, '_' or '-'. Such a
// name is also one NATS subject token as it is, which is why the subjects
// carry names unchanged. It is the one token check of amibus.
func NameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// ValidName reports whether s is a non-empty run of NameByte bytes.
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !NameByte(s[i]) {
			return false
		}
	}
	return true
}

// Lower returns c lower-cased if it is an ASCII capital letter: Asterisk
// folds the case of header and action names in ASCII only.
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
