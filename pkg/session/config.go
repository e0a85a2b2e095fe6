package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

// AuthMethod is how a session proves its credentials.
type AuthMethod uint8

const (
	// AuthPlain sends the secret in the Login action.
	AuthPlain AuthMethod = iota
	// AuthMD5 asks for a challenge and sends md5hex(challenge+secret), so the
	// secret never crosses the wire.
	AuthMD5
)

// String returns "plain" or "md5".
func (a AuthMethod) String() string {
	if a == AuthMD5 {
		return "md5"
	}
	return "plain"
}

// Defaults, matching the session block of the configuration file.
const (
	DefaultDialTimeout        = 5 * time.Second
	DefaultBannerTimeout      = 5 * time.Second
	DefaultLoginTimeout       = 10 * time.Second
	DefaultPingInterval       = 20 * time.Second
	DefaultPingTimeout        = 10 * time.Second
	DefaultBackoffInitial     = 100 * time.Millisecond
	DefaultBackoffMax         = 30 * time.Second
	DefaultAuthFailureBackoff = 30 * time.Second
	DefaultHealthyAfter       = 60 * time.Second
	DefaultLogoffTimeout      = time.Second
	DefaultLogInterval        = time.Minute
	DefaultMaxPending         = 1000
	DefaultMaxMessageBytes    = amiwire.DefaultMaxBytes
	DefaultMaxHeaders         = amiwire.DefaultMaxHeaders
	DefaultMaxAnswerBytes     = 16 << 20
	DefaultMaxListEvents      = 100000
	// MaxPendingLimit caps MaxPending: each pending action holds a slot in
	// the session and in the command server; a bound keeps their memory and
	// the shutdown's wait finite.
	MaxPendingLimit = 100000
	// DefaultMaxDials is the per-process cap on concurrent connection
	// attempts when no DialLimiter is given.
	DefaultMaxDials = 16
)

// Config is a session's validated settings. It is built by New from the
// defaults above and the Options; Session.Config returns a copy. The secret
// is not in it: it is held where neither fmt nor a logger can reach it.
type Config struct {
	// Username is the AMI user (manager.conf section).
	Username string
	// Auth is AuthPlain or AuthMD5.
	Auth AuthMethod
	// Events is the Login Events mask: "on", "off" or a class list
	// ("system,call").
	Events string
	// TLS, when set, wraps the connection (Asterisk's TLS AMI, port 5039).
	TLS *tls.Config

	// DialTimeout bounds DNS resolution, TCP connect and the TLS handshake.
	DialTimeout time.Duration
	// BannerTimeout bounds the wait for the banner after connecting; it
	// catches a listener that accepts and resets or never speaks (restart).
	BannerTimeout time.Duration
	// LoginTimeout bounds Challenge and Login together; Asterisk answers a
	// wrong secret after 1 s.
	LoginTimeout time.Duration
	// PingInterval is how long the session may be idle (nothing read)
	// before it sends a Ping.
	PingInterval time.Duration
	// PingTimeout is how long a Ping may go unanswered, and a write may
	// block, before the connection is declared dead.
	PingTimeout time.Duration
	// BackoffInitial and BackoffMax bound the exponential reconnect delay
	// (jittered by ±50%).
	BackoffInitial, BackoffMax time.Duration
	// AuthFailureBackoff is the least wait after the PBX refused the
	// credentials.
	AuthFailureBackoff time.Duration
	// HealthyAfter is how long a session must have been up for the
	// reconnect backoff to start over from BackoffInitial.
	HealthyAfter time.Duration
	// LogoffTimeout bounds the Logoff that Close sends.
	LogoffTimeout time.Duration
	// LogInterval is the least time between two log lines about one
	// repeated condition (connection failures, oversized messages).
	LogInterval time.Duration

	// MaxPending caps the actions waiting for an answer, timed-out actions
	// whose answer is still owed included; Send returns ErrOverloaded at it.
	MaxPending int
	// MaxMessageBytes and MaxHeaders cap one wire message (the reader
	// skips a bigger one, counts it, and reads on). A single response over
	// MaxMessageBytes fails its action with ErrTooLarge: a session that
	// must return big Command output needs a MaxMessageBytes that large.
	MaxMessageBytes, MaxHeaders int
	// MaxAnswerBytes and MaxListEvents cap one action's whole answer
	// (response plus list events); over either, the rest of the answer is
	// read and discarded and the action fails with ErrTooLarge.
	MaxAnswerBytes, MaxListEvents int

	// Instance identifies this process in session and action IDs.
	Instance string
	// Handler receives events and lifecycle; nil discards events.
	Handler Handler
	// Accept, when set, decides by event name which events reach the
	// Handler; it runs before sequence numbers are assigned, so a rejected
	// event takes no number. It runs on the reader goroutine and must not
	// block or retain name.
	Accept func(name []byte) bool
	// OnUp, when set, runs on the session's supervisor goroutine after
	// each login, while the reader runs; ctx ends with that connection
	// (Close included), and the session's teardown and next dial wait for
	// OnUp to return, so it must honour ctx.
	OnUp func(ctx context.Context, s *Session, id string)
	// OnConnectError, when set, is called on the supervisor with each
	// failed connection attempt (dial, banner or login); if it returns
	// true the session stops trying, logs nothing about it, and stays down
	// until Close. It must not block.
	OnConnectError func(err error) (giveUp bool)
	// PendingLimit, when set, is a cap on pending actions shared with other
	// sessions (several sessions to one node); MaxPending still sizes
	// each session's own queue.
	PendingLimit *PendingLimit
	// DialLimiter bounds concurrent connection attempts; shared by a Pool.
	DialLimiter *DialLimiter
	// Metrics receives the session metrics; nil creates a private set.
	Metrics *metrics.Metrics
	// Logger receives the session's logs; nil discards them.
	Logger *zap.Logger

	// secret returns the AMI secret. A closure, because fmt prints a func
	// as an address under every verb and depth, and zap cannot encode it:
	// no printed or logged Config can show the secret.
	secret func() string
}

// Option sets one part of a Config; New reports the first invalid one.
type Option func(*Config) error

func defaultConfig() Config {
	return Config{
		Auth:               AuthPlain,
		Events:             "on",
		DialTimeout:        DefaultDialTimeout,
		BannerTimeout:      DefaultBannerTimeout,
		LoginTimeout:       DefaultLoginTimeout,
		PingInterval:       DefaultPingInterval,
		PingTimeout:        DefaultPingTimeout,
		BackoffInitial:     DefaultBackoffInitial,
		BackoffMax:         DefaultBackoffMax,
		AuthFailureBackoff: DefaultAuthFailureBackoff,
		HealthyAfter:       DefaultHealthyAfter,
		LogoffTimeout:      DefaultLogoffTimeout,
		LogInterval:        DefaultLogInterval,
		MaxPending:         DefaultMaxPending,
		MaxMessageBytes:    DefaultMaxMessageBytes,
		MaxHeaders:         DefaultMaxHeaders,
		MaxAnswerBytes:     DefaultMaxAnswerBytes,
		MaxListEvents:      DefaultMaxListEvents,
	}
}

// WithCredentials sets the AMI username and secret (required). The secret
// never appears in a log line, an error or a printed Config.
func WithCredentials(username, secret string) Option {
	return func(c *Config) error {
		if err := checkCredential("Username", username); err != nil {
			return fmt.Errorf("username: %w", err)
		}
		if err := checkCredential("Secret", secret); err != nil {
			// The reason names a class of problem, never the value.
			return fmt.Errorf("secret: %w", err)
		}
		c.Username = username
		c.secret = func() string { return secret }
		return nil
	}
}

// checkCredential refuses what could not be sent safely in a Login line. The
// error never quotes the value.
func checkCredential(key, v string) error {
	switch {
	case v == "":
		return errors.New("empty")
	case strings.ContainsAny(v, "\r\n\x00"):
		return errors.New("contains CR, LF or NUL")
	case v[0] == ' ' || v[0] == '\t':
		return errors.New("starts with a blank, which Asterisk strips")
	case len(key)+2+len(v)+2 > amiwire.MaxActionLine:
		return fmt.Errorf("too long for one AMI line (%d bytes)", amiwire.MaxActionLine)
	}
	return nil
}

// WithAuth selects plain or MD5 challenge authentication (default plain).
func WithAuth(a AuthMethod) Option {
	return func(c *Config) error {
		if a != AuthPlain && a != AuthMD5 {
			return fmt.Errorf("auth: unknown method %d", a)
		}
		c.Auth = a
		return nil
	}
}

// WithEvents sets the Login Events mask: "on" (default), "off", or a
// comma-separated list of event classes such as "system,call".
func WithEvents(mask string) Option {
	return func(c *Config) error {
		if err := checkEventMask(mask); err != nil {
			return err
		}
		c.Events = mask
		return nil
	}
}

func checkEventMask(mask string) error {
	if mask == "on" || mask == "off" {
		return nil
	}
	if mask == "" {
		return errors.New(`events: empty (want "on", "off" or a class list)`)
	}
	for _, class := range strings.Split(mask, ",") {
		if class == "" {
			return fmt.Errorf("events: %q: empty class", mask)
		}
		for i := 0; i < len(class); i++ {
			if ch := class[i]; ch < 'a' || ch > 'z' {
				return fmt.Errorf("events: %q: class %q is not lower-case letters", mask, class)
			}
		}
	}
	return nil
}

// WithTLS makes the session connect over TLS with cfg (nil: plain TCP).
func WithTLS(cfg *tls.Config) Option {
	return func(c *Config) error { c.TLS = cfg; return nil }
}

// SettingError is an invalid setting. Setting names it as the keys of the
// configuration file do (ping_interval); Reason says what is wrong, and
// Other, when set, is a setting that Reason compares with. internal/config
// reports these under the file's paths, so that the file and New refuse
// the same values for the same reasons.
type SettingError struct {
	Setting, Reason, Other string
	Got                    any
}

// Error returns "setting: reason other, got value".
func (e *SettingError) Error() string {
	return fmt.Sprintf("%s: %s%s, got %v", e.Setting, e.Reason, e.Other, e.Got)
}

// CheckOptions applies opts to the defaults as New does and returns the
// error of every invalid one, joined (New returns only the first).
func CheckOptions(opts ...Option) error {
	c := defaultConfig()
	var errs []error
	for _, o := range opts {
		errs = append(errs, o(&c))
	}
	return errors.Join(errs...)
}

func positive[T time.Duration | int](name string, v T) error {
	if v <= 0 {
		return &SettingError{Setting: name, Reason: "must be positive", Got: v}
	}
	return nil
}

// inRange checks 1 <= v <= limit.
func inRange(name string, v, limit int) error {
	if v > limit {
		return &SettingError{Setting: name, Reason: fmt.Sprintf("must be at most %d", limit), Got: v}
	}
	return positive(name, v)
}

// WithDialTimeout bounds DNS, connect and TLS handshake (default 5 s).
func WithDialTimeout(d time.Duration) Option {
	return func(c *Config) error { c.DialTimeout = d; return positive("dial_timeout", d) }
}

// WithBannerTimeout bounds the wait for the banner (default 5 s).
func WithBannerTimeout(d time.Duration) Option {
	return func(c *Config) error { c.BannerTimeout = d; return positive("banner_timeout", d) }
}

// WithLoginTimeout bounds Challenge plus Login (default 10 s).
func WithLoginTimeout(d time.Duration) Option {
	return func(c *Config) error { c.LoginTimeout = d; return positive("login_timeout", d) }
}

// WithKeepalive sets the idle time before a Ping and how long the Ping (or
// a blocked write) may take (defaults 20 s and 10 s).
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(c *Config) error {
		c.PingInterval, c.PingTimeout = interval, timeout
		return errors.Join(positive("ping_interval", interval), positive("ping_timeout", timeout))
	}
}

// WithBackoff sets the reconnect backoff bounds (defaults 100 ms and 30 s).
func WithBackoff(initial, maxDelay time.Duration) Option {
	return func(c *Config) error {
		c.BackoffInitial, c.BackoffMax = initial, maxDelay
		if err := errors.Join(positive("backoff_initial", initial), positive("backoff_max", maxDelay)); err != nil {
			return err
		}
		if maxDelay < initial {
			return &SettingError{Setting: "backoff_max", Reason: "must be >= ", Other: "backoff_initial", Got: maxDelay}
		}
		return nil
	}
}

// WithAuthFailureBackoff sets the least wait after a refused login
// (default 30 s).
func WithAuthFailureBackoff(d time.Duration) Option {
	return func(c *Config) error { c.AuthFailureBackoff = d; return positive("auth_failure_backoff", d) }
}

// WithHealthyAfter sets how long a session must stay up for the backoff to
// start over (default 60 s).
func WithHealthyAfter(d time.Duration) Option {
	return func(c *Config) error { c.HealthyAfter = d; return positive("healthy_after", d) }
}

// WithLogoffTimeout bounds the best-effort Logoff sent by Close (default 1 s).
func WithLogoffTimeout(d time.Duration) Option {
	return func(c *Config) error { c.LogoffTimeout = d; return positive("logoff_timeout", d) }
}

// WithLogInterval sets the least time between two log lines about one
// repeated condition (default 1 min).
func WithLogInterval(d time.Duration) Option {
	return func(c *Config) error { c.LogInterval = d; return positive("log_interval", d) }
}

// WithMaxPending caps pending actions per session (default 1000).
func WithMaxPending(n int) Option {
	return func(c *Config) error {
		if err := inRange("max_pending", n, MaxPendingLimit); err != nil {
			return err
		}
		c.MaxPending = n
		return nil
	}
}

// WithReaderLimits caps one wire message in bytes and headers (defaults
// 1 MiB and 8192).
func WithReaderLimits(maxBytes, maxHeaders int) Option {
	return func(c *Config) error {
		if err := errors.Join(inRange("max_message_bytes", maxBytes, amiwire.MaxBytesLimit),
			inRange("max_headers", maxHeaders, amiwire.MaxHeadersLimit)); err != nil {
			return err
		}
		c.MaxMessageBytes, c.MaxHeaders = maxBytes, maxHeaders
		return nil
	}
}

// WithAnswerLimits caps one action's answer in bytes and list events
// (defaults 16 MiB and 100000).
func WithAnswerLimits(maxBytes, maxEvents int) Option {
	return func(c *Config) error {
		if err := errors.Join(inRange("max_answer_bytes", maxBytes, amiwire.MaxBytesLimit),
			positive("max_list_events", maxEvents)); err != nil {
			return err
		}
		c.MaxAnswerBytes, c.MaxListEvents = maxBytes, maxEvents
		return nil
	}
}

// WithInstance sets the process instance used in session and action IDs
// (default ProcessInstance()): 1 to 16 of [A-Za-z0-9_-].
func WithInstance(id string) Option {
	return func(c *Config) error {
		if len(id) == 0 || len(id) > maxInstanceLen || !amiwire.ValidName(id) {
			return fmt.Errorf("instance: %q: want 1 to %d of [A-Za-z0-9_-]", id, maxInstanceLen)
		}
		c.Instance = id
		return nil
	}
}

// WithHandler sets the receiver of events and lifecycle.
func WithHandler(h Handler) Option {
	return func(c *Config) error { c.Handler = h; return nil }
}

// WithAccept sets the event-name filter applied before sequence numbers.
func WithAccept(accept func(name []byte) bool) Option {
	return func(c *Config) error { c.Accept = accept; return nil }
}

// WithOnUp sets a hook run on the session's supervisor goroutine after each
// login (see Config.OnUp).
func WithOnUp(f func(ctx context.Context, s *Session, id string)) Option {
	return func(c *Config) error { c.OnUp = f; return nil }
}

// WithOnConnectError sets a hook that sees every failed connection attempt
// and may make the session give up.
func WithOnConnectError(f func(err error) (giveUp bool)) Option {
	return func(c *Config) error { c.OnConnectError = f; return nil }
}

// WithPendingLimit makes the session count its pending actions against l,
// shared with other sessions; Send returns ErrOverloaded when l is full.
func WithPendingLimit(l *PendingLimit) Option {
	return func(c *Config) error {
		if l == nil {
			return errors.New("pending limit: nil")
		}
		c.PendingLimit = l
		return nil
	}
}

// WithDialLimiter shares a cap on concurrent connection attempts.
func WithDialLimiter(l *DialLimiter) Option {
	return func(c *Config) error {
		if l == nil {
			return errors.New("dial limiter: nil")
		}
		c.DialLimiter = l
		return nil
	}
}

// WithMetrics sets where the session counts.
func WithMetrics(m *metrics.Metrics) Option {
	return func(c *Config) error { c.Metrics = m; return nil }
}

// WithLogger sets the session's logger.
func WithLogger(l *zap.Logger) Option {
	return func(c *Config) error { c.Logger = l; return nil }
}

// validateTarget checks the node name and address New was given.
func validateTarget(node, addr string) error {
	if !amiwire.ValidName(node) {
		return fmt.Errorf("node %q: want [A-Za-z0-9_-]+ (a NATS subject token)", node)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("node %s: address %q: %v", node, addr, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("node %s: address %q: want host:port", node, addr)
	}
	return nil
}
