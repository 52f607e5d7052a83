package main

import (
	"bytes"
	"flag"
	"slices"
	"strings"
	"testing"

	"bayesnas/search"
	"bayesnas/search/planted"
)

func TestRunErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"identifiable", "extra"},
		{"identifiable", "-sep", "-ops", "max_pool_3x3"},
		{"measure", "-lambdas", "0.01,x"},
		{"measure", "-curv", "no-such-estimator"},
		{"decisions", "-k", "0"},
	} {
		if err := run(args, new(bytes.Buffer)); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	if err := run([]string{"tree", "-h"}, new(bytes.Buffer)); err != flag.ErrHelp {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestOps(t *testing.T) {
	for _, c := range []struct {
		o    opsFlags
		want []string
	}{
		{opsFlags{}, planted.PoolOps},
		{opsFlags{sep: true}, planted.SepOps},
		{opsFlags{ops: "max_pool_3x3,skip_connect"}, []string{"max_pool_3x3", "skip_connect"}},
	} {
		got, err := c.o.list()
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v %v, want %v", c.o, got, err, c.want)
		}
	}
}

// TestTune checks that a search setting changes only when its flag is
// given.
func TestTune(t *testing.T) {
	fs := newFlags("tree")
	var sf searchFlags
	sf.register(fs, false, true, false, false)
	if err := parse(fs, []string{"-lambda", "0.001", "-iters", "0"}); err != nil {
		t.Fatal(err)
	}
	tune, err := sf.tune()
	if err != nil {
		t.Fatal(err)
	}
	cfg := planted.Config(1, planted.PoolOps)
	want := cfg
	want.LambdaOp, want.LambdaSwitch, want.Iterations = 0.001, 0.001, 0
	tune(&cfg)
	if cfg.LambdaOp != want.LambdaOp || cfg.LambdaSwitch != want.LambdaSwitch || cfg.Iterations != 0 ||
		cfg.LR != want.LR || cfg.ArchLR != want.ArchLR || cfg.PenaltyStep != want.PenaltyStep {
		t.Errorf("tuned %+v", cfg)
	}
	if search.DefaultConfig().Iterations == 0 {
		t.Fatal("the default has 0 iterations: -iters 0 tests nothing")
	}
}

// TestIdentifiableSmall runs the cheapest measurement end to end (one
// teacher, one epoch: about a second).
func TestIdentifiableSmall(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"identifiable", "-teachers", "1", "-epochs", "1"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "teacher 1: own cell") || !strings.Contains(out.String(), "ranked first for") {
		t.Errorf("output:\n%s", out.String())
	}
}
