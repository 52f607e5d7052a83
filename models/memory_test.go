package models

import (
	"strings"
	"testing"

	"bayesnas/nn"
)

// Estimate's parameter and value bytes are what Compile allocates: every
// parameter four times, every value twice.
func TestEstimateMatchesCompile(t *testing.T) {
	b := NewGraphBuilder("est", "x", [3]int{3, 8, 8})
	x := b.ReLU("r1", b.BN("bn1", b.Conv("c1", "x", 8, 3, 1, 1)))
	x = b.Node("pool", OpMaxPool, Attrs{Kernel: 2, Stride: 2}, x)
	x = b.Node("gap", OpGAP, Attrs{}, b.Conv("c2", x, 16, 3, 1, 2))
	x = b.Node("fc", OpLinear, Attrs{OutChannels: 5, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 3
	f, err := Estimate(g, batch)
	if err != nil {
		t.Fatal(err)
	}
	net, err := Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), batch)
	if err != nil {
		t.Fatal(err)
	}
	var params, values int64
	for _, p := range net.Params {
		params += 4 * 4 * int64(len(p.Data))
	}
	for _, v := range net.Values {
		values += 2 * 4 * int64(cap(v.Data))
	}
	if f.ParamBytes != params || f.ValueBytes != values {
		t.Fatalf("estimate %+v, want parameters %d and values %d bytes", f, params, values)
	}
	// im2col of c1 (3*3*3 x 8*8) and c2 (8*3*3 x 4*4), one sample each.
	if want := int64(4 * (27*64 + 72*16)); f.ScratchBytes != want {
		t.Fatalf("scratch %d bytes, want %d", f.ScratchBytes, want)
	}
}

// A network over the memory limit is refused by Compile before it
// allocates, naming the limit; widths that overflow are an error too.
func TestCompileRefusesOverLimit(t *testing.T) {
	defer SetMemoryLimit(MemoryLimit())
	SetMemoryLimit(1 << 30)
	b := NewGraphBuilder("huge", "x", [3]int{1, 28, 28})
	x := b.Node("gap", OpGAP, Attrs{}, b.Conv("c", "x", 200000, 3, 1, 1))
	x = b.Node("fc", OpLinear, Attrs{OutChannels: 10, Bias: true}, x)
	g, err := b.Finish(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile(g, nn.NewCPU(nn.DefaultGemm(), 1), 64)
	if err == nil || !strings.Contains(err.Error(), "more than the 1.0 GiB limit") {
		t.Fatalf("err = %v, want the memory limit named", err)
	}
	b = NewGraphBuilder("overflow", "x", [3]int{1, 28, 28})
	x = b.Node("gap", OpGAP, Attrs{}, b.Conv("c", "x", 1<<40, 3, 1, 1))
	over := *b.g
	over.Output = x
	if _, err := Estimate(&over, 1<<20); err == nil || !strings.Contains(err.Error(), "too large to allocate") {
		t.Fatalf("an estimate that overflows int64: err = %v", err)
	}
}
