package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// derive needs --run and --out, and a run directory without a search's
// configuration is named in the error.
func TestDeriveCommandErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--run", missing}, "--out"},
		{[]string{"--run", missing, "--out", filepath.Join(t.TempDir(), "o")}, filepath.Join(missing, "config.json")},
		{[]string{"--run", missing, "--out", filepath.Join(t.TempDir(), "o"), "--min-significance", "x"}, "min-significance"},
	} {
		cmd := newDeriveCmd()
		cmd.SetArgs(c.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want it to name %s", c.args, err, c.want)
		}
	}
}
