package main

import (
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// binary is ami-state built once by TestMain; the tests run it as a process.
var binary string

func TestMain(m *testing.M) { testenv.MainWithBinary(m, ".", "ami-state", &binary) }
