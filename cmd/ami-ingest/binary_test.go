//go:build linux

package main

import (
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// binary is ami-ingest, built once by TestMain.
var binary string

func TestMain(m *testing.M) { testenv.MainWithBinary(m, ".", "ami-ingest", &binary) }
