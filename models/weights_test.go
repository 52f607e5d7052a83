package models

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"bayesnas/internal/allocs"
	"bayesnas/nn"
)

func testParams() []*nn.Param {
	a := nn.NewParam("conv.weight", nn.Weight, 2, 1, 2, 2)
	b := nn.NewParam("bn.running_var", nn.Buffer, 3)
	c := nn.NewParam("arch.w0", nn.ArchVar, 1)
	for i := range a.Data {
		a.Data[i] = float32(i) - 3.25
	}
	copy(b.Data, []float32{1, 2.5, -0})
	c.Data[0] = 1e-30
	return []*nn.Param{a, b, c}
}

func TestWeightsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p1 := filepath.Join(dir, "w.safetensors")
	meta := map[string]string{"graph": "tiny", "step": "12"}
	if err := SaveWeights(p1, testParams(), meta); err != nil {
		t.Fatal(err)
	}
	// Another order of the same tensors gives the same bytes.
	ps := testParams()
	slices.Reverse(ps)
	p2 := filepath.Join(dir, "w2.safetensors")
	if err := SaveWeights(p2, ps, meta); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Error("same weights in another order gave different files")
	}
	// Layout: header length, header padded to 8 bytes, data of 8+3+1 floats in name order.
	hlen := binary.LittleEndian.Uint64(b1)
	if hlen%8 != 0 || uint64(len(b1)) != 8+hlen+4*12 {
		t.Fatalf("header %d bytes, file %d bytes", hlen, len(b1))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(b1[8:8+hlen], &header); err != nil {
		t.Fatal(err)
	}
	if string(header["arch.w0"]) != `{"dtype":"F32","shape":[1],"data_offsets":[0,4]}` ||
		string(header["bn.running_var"]) != `{"dtype":"F32","shape":[3],"data_offsets":[4,16]}` ||
		string(header["conv.weight"]) != `{"dtype":"F32","shape":[2,1,2,2],"data_offsets":[16,48]}` {
		t.Errorf("header %s", b1[8:8+hlen])
	}

	loaded := testParams()
	for _, p := range loaded {
		clear(p.Data)
	}
	if err := LoadWeights(p1, loaded); err != nil {
		t.Fatal(err)
	}
	for i, p := range testParams() {
		if !slices.Equal(p.Data, loaded[i].Data) {
			t.Errorf("%s: loaded %v, saved %v", p.Name, loaded[i].Data, p.Data)
		}
	}
	got, err := ReadWeightsMetadata(p1)
	if err != nil || got["graph"] != "tiny" || got["step"] != "12" || len(got) != 2 {
		t.Errorf("metadata %v, %v", got, err)
	}
}

func TestWeightsErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := SaveWeights(path, testParams(), nil); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(path)
	write := func(b []byte) string {
		p := filepath.Join(dir, "bad.safetensors")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", what, err, w)
			}
		}
	}

	ps := testParams()
	ps = append(ps, nn.NewParam("fc.bias", nn.NoDecay, 4))
	check("missing", LoadWeights(path, ps), "w.safetensors", `"fc.bias"`, "missing")

	check("extra", LoadWeights(path, testParams()[:2]), "w.safetensors", `"arch.w0"`, "not a parameter")

	ps = testParams()
	ps[1] = nn.NewParam("bn.running_var", nn.Buffer, 4)
	check("shape", LoadWeights(path, ps), "w.safetensors", `"bn.running_var"`, "[3]", "[4]")

	ps = testParams()
	ps = append(ps, ps[0])
	check("twice", LoadWeights(path, ps), `"conv.weight"`, "twice")

	check("truncated data", LoadWeights(write(full[:len(full)-5]), testParams()), "bad.safetensors", `"conv.weight"`, "truncated")
	check("truncated header", LoadWeights(write(full[:20]), testParams()), "bad.safetensors", "truncated")
	check("tiny file", LoadWeights(write(full[:3]), testParams()), "bad.safetensors", "too short")
	huge := slices.Clone(full)
	binary.LittleEndian.PutUint64(huge, 1<<40)
	check("huge header", LoadWeights(write(huge), testParams()), "bad.safetensors", "limit")
	check("dtype", LoadWeights(write(bytes.Replace(full, []byte(`"F32"`), []byte(`"F16"`), 1)), testParams()), "bad.safetensors", "F16")
	check("offsets", LoadWeights(write(bytes.Replace(full, []byte(`[0,4]`), []byte(`[0,8]`), 1)), testParams()), `"arch.w0"`, "offsets")
	check("not json", LoadWeights(write(bytes.Replace(full, []byte(`{`), []byte(`[`), 1)), testParams()), "bad.safetensors", "header")
	check("no file", LoadWeights(filepath.Join(dir, "none"), testParams()), "none")

	// A failed load leaves the parameters untouched.
	ps = testParams()
	ps[0].Data[0] = 42
	_ = LoadWeights(write(full[:len(full)-5]), ps)
	if ps[0].Data[0] != 42 {
		t.Error("failed load changed a parameter")
	}

	bad := testParams()
	bad[0].Data = bad[0].Data[:3]
	check("save shape", SaveWeights(filepath.Join(dir, "x"), bad, nil), `"conv.weight"`, "shape")
	check("save dup", SaveWeights(filepath.Join(dir, "x"), append(testParams(), testParams()[0]), nil), `"conv.weight"`, "twice")
	// Missing directories are created; a parent that is a file is an error.
	notDir := filepath.Join(dir, "notdir")
	os.WriteFile(notDir, []byte("x"), 0o644)
	check("save dir", SaveWeights(filepath.Join(notDir, "x"), testParams(), nil), "notdir")
}

// A weights file with more data than the network's tensors occupy is refused
// by its length before it is read, and reading the metadata reads the header
// only.
func TestWeightsFileBoundedBeforeReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := SaveWeights(path, testParams(), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	// 512 MiB of zeros after the tensors (sparse: no disk used).
	if err := os.Truncate(path, 512<<20); err != nil {
		t.Fatal(err)
	}
	var err error
	if a := allocs.During(func() { err = LoadWeights(path, testParams()) }); a > 8<<20 {
		t.Errorf("LoadWeights allocated %d bytes, want under 8 MiB", a)
	}
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "more than the") {
		t.Errorf("LoadWeights: error %v, want one naming %s and the data bound", err, path)
	}
	var meta map[string]string
	if a := allocs.During(func() { meta, err = ReadWeightsMetadata(path) }); a > 8<<20 {
		t.Errorf("ReadWeightsMetadata allocated %d bytes, want under 8 MiB", a)
	}
	if err != nil || meta["k"] != "v" {
		t.Errorf("ReadWeightsMetadata: %v, %v", meta, err)
	}
}
