package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileBytes caps the configuration file: a thousand nodes take about
// 300 KB, so anything past 8 MiB is not a configuration file.
const MaxFileBytes = 8 << 20

// maxSecretFileBytes caps a secret file: a secret is one short line.
const maxSecretFileBytes = 4096

// Option changes how Parse reads a file.
type Option func(*options)

type options struct {
	lookup func(string) (string, bool)
}

// WithEnv replaces os.LookupEnv as the source of ${NAME} values (tests).
func WithEnv(lookup func(name string) (string, bool)) Option {
	return func(o *options) { o.lookup = lookup }
}

// Parse decodes, completes and validates a configuration file's content.
// Problems with fields are returned together as a *ValidationError; a
// document that is not YAML gives the YAML parser's error. Relative file
// paths (secret_file, nats.creds_file ...) are relative to the working
// directory, as they will be when the files are used.
func Parse(data []byte, opts ...Option) (*Config, error) {
	o := options{lookup: os.LookupEnv}
	for _, opt := range opts {
		opt(&o)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileBytes)
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("more than one YAML document")
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}

	p := &problems{}
	c := Default()
	d := &decoder{p: p, lookup: o.lookup}
	keys := d.root(doc, c)
	if d.abort || p.has("") {
		// Nothing sensible to validate: report only the structural problem.
		return nil, p.err()
	}
	(&validator{p: p}).config(c, keys)
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads and parses the file at path.
func Load(path string, opts ...Option) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	return Parse(data, opts...)
}

// LoadFile is Load for the mains' --config flag: every error reads
// "config <path>: ...", fit to print as is before exiting non-zero.
// errors.As still finds the *ValidationError.
func LoadFile(path string, opts ...Option) (*Config, error) {
	c, err := Load(path, opts...)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = pe.Err // the path is already in the prefix
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// readSecretFile reads a one-line secret, without one trailing line break.
// Its errors carry the path and the OS error, never the content.
func readSecretFile(path string) (Secret, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return "", err
	} else if st.IsDir() {
		return "", fmt.Errorf("%s is a directory", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(data) > maxSecretFileBytes {
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxSecretFileBytes)
	}
	s := string(data)
	if strings.HasSuffix(s, "\r\n") {
		s = s[:len(s)-2]
	} else if strings.HasSuffix(s, "\n") {
		s = s[:len(s)-1]
	}
	switch {
	case s == "":
		return "", fmt.Errorf("%s is empty", path)
	case strings.ContainsAny(s, "\r\n"):
		return "", fmt.Errorf("%s must hold one line", path)
	}
	return Secret(s), nil
}
