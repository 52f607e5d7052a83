package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"bayesnas/pipeline"
)

// Bounds of the numeric flags that reach a long computation: a bad value
// is a usage error naming the flag before anything is read or written
// (issue 17, systematic: the table test in badinputs_test.go).

type intBound struct {
	flag string
	min  int
}

// checkIntFlags refuses any of cmd's flags below its minimum.
func checkIntFlags(cmd *cobra.Command, bounds ...intBound) error {
	for _, b := range bounds {
		if v, err := cmd.Flags().GetInt(b.flag); err == nil && v < b.min {
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--%s = %d: want >= %d", b.flag, v, b.min))
		}
	}
	return nil
}

// checkFloat refuses a value that is not finite or outside [lo, hi]
// (open at lo when open is set).
func checkFloat(flag string, v, lo, hi float64, open bool) error {
	ok := !math.IsNaN(v) && !math.IsInf(v, 0) && v <= hi && (v > lo || (!open && v == lo))
	if ok {
		return nil
	}
	left := "["
	if open {
		left = "("
	}
	if math.IsInf(hi, 1) {
		return fmt.Errorf("--%s = %g: want a finite number in %s%g, inf)", flag, v, left, lo)
	}
	return fmt.Errorf("--%s = %g: want a number in %s%g, %g]", flag, v, left, lo, hi)
}

// checkCompressFlags bounds compress's options before the run is read.
func checkCompressFlags(opt pipeline.CompressOptions) error {
	switch opt.Method {
	case "bayes", "uniform", "l1":
	default:
		return fmt.Errorf("--method %q: want bayes, uniform or l1", opt.Method)
	}
	if filepath.Clean(opt.Out) == filepath.Clean(opt.Run) {
		return fmt.Errorf("--out %s is the trained run: --out must name a new run directory", opt.Out)
	}
	_, err := os.Stat(filepath.Join(opt.Out, pipeline.ConfigFile))
	if err == nil && !opt.Train.Resume {
		return fmt.Errorf("--out %s already holds a run: name a new run directory (or --resume an interrupted compression)", opt.Out)
	}
	if err != nil && opt.Train.Resume {
		return fmt.Errorf("--resume: %s holds no compression to resume", opt.Out)
	}
	inf := math.Inf(1)
	for _, c := range []struct {
		flag  string
		v     int
		least int
	}{{"multiple", opt.Multiple, 1}, {"epochs", opt.Epochs, 0}, {"sparsity-epochs", opt.Bayes.Epochs, 0}, {"data-limit", opt.DataLimit, 0}} {
		if c.v < c.least {
			return fmt.Errorf("--%s = %d: want >= %d", c.flag, c.v, c.least)
		}
	}
	if err := checkFloat("lr", opt.LR, 0, inf, false); err != nil {
		return err
	}
	if err := checkFloat("distill", opt.Distill, 0, 1, false); err != nil {
		return err
	}
	if err := checkFloat("distill-temperature", opt.DistillTemperature, 0, inf, true); err != nil {
		return err
	}
	if err := checkFloat("lambda", opt.Bayes.Lambda, 0, inf, false); err != nil {
		return err
	}
	if err := checkFloat("reach", opt.Bayes.Reach, 0, 1, true); err != nil {
		return err
	}
	if opt.Verify != nil {
		if err := checkFloat("verify-margin", opt.VerifyMargin, 0, 0.5, false); err != nil || opt.VerifyMargin == 0.5 {
			return fmt.Errorf("--verify-margin = %g: want a fraction in [0, 0.5)", opt.VerifyMargin)
		}
		if opt.VerifyTries < 1 {
			return fmt.Errorf("--verify-tries = %d: want >= 1", opt.VerifyTries)
		}
		if opt.Verify.Rounds < 1 {
			return fmt.Errorf("--rounds = %d: want >= 1", opt.Verify.Rounds)
		}
	}
	return nil
}

// checkDeviceFlags bounds the timing flags of profile measure and check.
func checkDeviceFlags(cmd *cobra.Command) error {
	if err := checkIntFlags(cmd, intBound{"batch", 1}, intBound{"warmup", 0}, intBound{"repeats", 1}, intBound{"sessions", 1},
		intBound{"samples", 0}, intBound{"grid-step", 0}, intBound{"rounds", 1}, intBound{"calibrate", 0}, intBound{"n", 1}); err != nil {
		return err
	}
	f := cmd.Flags()
	t, _ := f.GetFloat64("plugin-timeout")
	if err := checkFloat("plugin-timeout", t, 0, math.Inf(1), true); err != nil {
		return pipeline.Mark(pipeline.ErrUsage, err)
	}
	switch o, _ := f.GetString("graph-optimization"); o {
	case "", "all", "extended", "basic", "disabled":
	default:
		return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--graph-optimization %q: want all, extended, basic or disabled", o))
	}
	return nil
}
