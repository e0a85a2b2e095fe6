package integration

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	tclog "github.com/testcontainers/testcontainers-go/log"
)

func TestMain(m *testing.M) {
	// Ryuk, the reaper, is an image pulled from a registry, and there is
	// none here; the tests remove what they create.
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	// testcontainers logs every container step; the tests say what matters.
	tclog.SetDefault(tclog.NewNoopLogger())
	code := m.Run()
	if suite.image != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := removeImage(ctx, suite.provider, suite.image); err != nil {
			fmt.Fprintf(os.Stderr, "integration: image %s not removed: %v\n", suite.image, err)
		}
		cancel()
	}
	if suite.provider != nil {
		_ = suite.provider.Close()
	}
	os.Exit(code)
}
