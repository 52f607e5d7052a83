package models

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Footprint is what compiling a graph at a batch size allocates, roughly:
// every parameter four times (value, gradient, two optimizer slots) and
// every value twice (data and gradient), plus one sample's im2col matrix per
// convolution, in float32 bytes.
type Footprint struct {
	ParamBytes, ValueBytes, ScratchBytes int64
}

// Bytes is the total.
func (f Footprint) Bytes() int64 { return f.ParamBytes + f.ValueBytes + f.ScratchBytes }

// Estimate computes g's Footprint at batch without allocating it. Sizes
// are added in int64 with overflow checked: an architecture file with
// absurd widths gives an error, not a wrapped number.
func Estimate(g *Graph, batch int) (Footprint, error) {
	shapes, err := g.InferShapes()
	if err != nil {
		return Footprint{}, err
	}
	return estimate(g, shapes, batch)
}

// estimate is Estimate with g's inferred shapes.
func estimate(g *Graph, shapes map[string][]int, batch int) (Footprint, error) {
	var f Footprint
	const limit = int64(1) << 60
	add := func(dst *int64, what string, n ...int) error {
		v := int64(4)
		for _, d := range n {
			if d < 0 || (d > 0 && v > limit/int64(d)) {
				return fmt.Errorf("graph %q: %s is too large to allocate", g.Name, what)
			}
			v *= int64(d)
		}
		if *dst > limit-v {
			return fmt.Errorf("graph %q: %s is too large to allocate", g.Name, what)
		}
		*dst += v
		return nil
	}
	if err := add(&f.ValueBytes, "the input", append([]int{2, batch}, g.Input.Shape...)...); err != nil {
		return f, err
	}
	for _, n := range g.Nodes {
		ins := inputShapes(n, shapes)
		for _, s := range nodeParams(n, ins) {
			if err := add(&f.ParamBytes, "parameter "+s.Name, append([]int{4}, s.Shape...)...); err != nil {
				return f, err
			}
		}
		if err := add(&f.ValueBytes, "the output of node "+n.Name, append([]int{2, batch}, shapes[n.Name]...)...); err != nil {
			return f, err
		}
		if n.Op == OpConv {
			out := shapes[n.Name]
			if err := add(&f.ScratchBytes, "the im2col buffer of node "+n.Name, ins[0][0], n.Attrs.Kernel, n.Attrs.Kernel, out[1], out[2]); err != nil {
				return f, err
			}
		}
	}
	return f, nil
}

// memoryLimit is the most bytes Compile lets a network take; 0 means no
// limit. See SetMemoryLimit.
var memoryLimit atomic.Int64

func init() { memoryLimit.Store(defaultMemoryLimit()) }

// SetMemoryLimit sets the most bytes Compile lets a network's Footprint
// take (0: no limit). The default is 90 % of this machine's memory
// (/proc/meminfo), none where that cannot be read.
func SetMemoryLimit(bytes int64) { memoryLimit.Store(max(bytes, 0)) }

// MemoryLimit is the current limit (0: none).
func MemoryLimit() int64 { return memoryLimit.Load() }

func defaultMemoryLimit() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024 / 10 * 9
		}
	}
	return 0
}

// CheckMemory refuses a graph whose Footprint at batch is over the limit,
// before anything is allocated: an architecture with out_channels 200000
// would otherwise end in "fatal error: runtime: out of memory".
func CheckMemory(g *Graph, batch int) error {
	shapes, err := g.InferShapes()
	if err != nil {
		return err
	}
	return checkMemory(g, shapes, batch)
}

// checkMemory is CheckMemory with g's inferred shapes (Compile has them).
func checkMemory(g *Graph, shapes map[string][]int, batch int) error {
	f, err := estimate(g, shapes, batch)
	if err != nil {
		return err
	}
	if l := MemoryLimit(); l > 0 && f.Bytes() > l {
		gib := func(b int64) float64 { return float64(b) / (1 << 30) }
		return fmt.Errorf("graph %q at batch %d needs about %.1f GiB (parameters %.1f, values %.1f, scratch %.1f), more than the %.1f GiB limit (--memory-limit-gb raises it)",
			g.Name, batch, gib(f.Bytes()), gib(f.ParamBytes), gib(f.ValueBytes), gib(f.ScratchBytes), gib(l))
	}
	return nil
}
