package main

import (
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// binary is the ami-actor built once by TestMain; the tests run it as a
// process, as an operator or Kubernetes would.
var binary string

func TestMain(m *testing.M) { testenv.MainWithBinary(m, ".", "ami-actor", &binary) }
