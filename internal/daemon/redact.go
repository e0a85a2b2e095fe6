package daemon

import (
	"crypto/tls"
	"net/url"
	"strings"
)

// tlsInsecure is only used when the operator set insecure_skip_verify.
var tlsInsecure = tls.Config{InsecureSkipVerify: true} //nolint:gosec // explicit opt-in

// redactURL hides credentials embedded in a NATS URL (nats://user:pass@host)
// so that connection errors can be logged.
func redactURL(raw string) string {
	var out []string
	for _, part := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || u.User == nil {
			if err != nil {
				out = append(out, "[unparsable url]")
				continue
			}
			out = append(out, u.String())
			continue
		}
		// A token URL (nats://token@host) carries its secret as the user.
		u.User = url.User("redacted")
		out = append(out, u.String())
	}
	return strings.Join(out, ",")
}
