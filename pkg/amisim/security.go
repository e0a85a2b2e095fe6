package amisim

import (
	"net"
	"strconv"
	"time"
)

// securityEvent broadcasts one AMI security event about c's session
// (manager.c's report_* functions through the security event framework).
// account, when given, replaces the session's username as AccountID.
func (s *Server) securityEvent(c *conn, name, severity string, version int, extra [][2]string, account ...string) {
	acct := c.account
	if len(account) > 0 {
		acct = account[0]
	}
	s.emitMu.Lock()
	s.broadcastLocked(s.securityEventBytes(c, name, severity, version, extra, acct), classSecurity)
	s.emitMu.Unlock()
}

// securityEventBytes renders a security event: the common fields, the
// event's own, then SessionTV, as Asterisk 20 orders them (02e).
func (s *Server) securityEventBytes(c *conn, name, severity string, version int, extra [][2]string, account string) []byte {
	if account == "" {
		account = c.account
	}
	sessionTV := "1970-01-01T00:00:00.000+0000"
	if c.authed.Load() || !c.loginTime.IsZero() {
		sessionTV = eventTV(c.loginTime)
	}
	h := make([][2]string, 0, 10+len(extra))
	h = append(h,
		[2]string{"EventTV", eventTV(time.Now())},
		[2]string{"Severity", severity},
		[2]string{"Service", "AMI"},
		[2]string{"EventVersion", strconv.Itoa(version)},
		[2]string{"AccountID", account},
		[2]string{"SessionID", c.sessionID()},
		[2]string{"LocalAddress", c.transportAddr(c.raw.LocalAddr())},
		[2]string{"RemoteAddress", c.transportAddr(c.raw.RemoteAddr())},
	)
	h = append(h, extra...)
	h = append(h, [2]string{"SessionTV", sessionTV})
	return renderEvent(name, authorityString(classSecurity), s.timestamp(), h)
}

// eventTV formats a time as the security events' EventTV.
func eventTV(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000-0700")
}

// transportAddr is "IPV4/TCP/127.0.0.1/5038" (TLS for a TLS session).
func (c *conn) transportAddr(a net.Addr) string {
	transport := "TCP"
	if c.s.cfg.TLSConfig != nil {
		transport = "TLS"
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "IPV4/" + transport + "/" + a.String()
	}
	family := "IPV4"
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		family = "IPV6"
	}
	return family + "/" + transport + "/" + host + "/" + port
}
