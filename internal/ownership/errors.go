package ownership

import "errors"

// Sentinel errors; check them with errors.Is.
var (
	// ErrInvalidOption: an option value, or a combination of them, is out
	// of range; the error names the option.
	ErrInvalidOption = errors.New("ownership: invalid option")
	// ErrInvalidName: an instance id, node name or bucket name is empty, too
	// long, repeated, or has a character other than [A-Za-z0-9_-].
	ErrInvalidName = errors.New("ownership: invalid name")
	// ErrBucketConfig: the lease bucket exists with a TTL other than the
	// Manager's, or without expiry markers, or the server cannot provide
	// them; leases in it would not be safe. Returned by Run.
	ErrBucketConfig = errors.New("ownership: lease bucket configuration unusable")
	// errNotConnected stands for the calls skipped while NATS is down.
	errNotConnected = errors.New("ownership: NATS connection down")
)
