package models

import (
	"bayesnas/internal/atomicfile"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"bayesnas/nn"
)

// The weights file is safetensors (https://github.com/huggingface/safetensors):
// an 8-byte little-endian header length, a JSON header mapping each tensor
// name to {dtype, shape, data_offsets} (offsets relative to the end of the
// header) plus an optional "__metadata__" string map, then the raw
// little-endian data. PyTorch users can read our weights with
// safetensors.torch.load_file.

const metadataKey = "__metadata__"

// maxHeader bounds the header we are willing to allocate for, so that a
// corrupt length field gives an error instead of an out-of-memory crash.
const maxHeader = 100 << 20

type tensorEntry struct {
	Dtype       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// SaveWeights writes params (data only) to path atomically. Tensors are
// stored in name order and the header's keys are sorted, so the same weights
// always give the same bytes.
func SaveWeights(path string, params []*nn.Param, meta map[string]string) error {
	sorted := slices.Clone(params)
	slices.SortFunc(sorted, func(a, b *nn.Param) int { return strings.Compare(a.Name, b.Name) })
	header := map[string]any{}
	if len(meta) > 0 {
		header[metadataKey] = meta
	}
	var off int64
	for i, p := range sorted {
		if p.Name == "" || p.Name == metadataKey {
			return fmt.Errorf("writing %s: tensor %d has the invalid name %q", path, i, p.Name)
		}
		if i > 0 && sorted[i-1].Name == p.Name {
			return fmt.Errorf("writing %s: tensor %q appears twice", path, p.Name)
		}
		if n := numel(p.Shape); n != len(p.Data) {
			return fmt.Errorf("writing %s: tensor %q: shape %v holds %d values, data has %d", path, p.Name, p.Shape, n, len(p.Data))
		}
		size := 4 * int64(len(p.Data))
		header[p.Name] = tensorEntry{Dtype: "F32", Shape: shapeOrEmpty(p.Shape), DataOffsets: [2]int64{off, off + size}}
		off += size
	}
	h, err := json.Marshal(header) // map keys come out sorted
	if err != nil {
		return fmt.Errorf("writing %s: encoding header: %w", path, err)
	}
	// Pad the header with spaces to a multiple of 8 bytes, as the reference
	// implementation does, so the data is aligned.
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	buf := make([]byte, 8, 8+len(h)+int(off))
	binary.LittleEndian.PutUint64(buf, uint64(len(h)))
	buf = append(buf, h...)
	for _, p := range sorted {
		for _, v := range p.Data {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	return atomicfile.Write(path, buf)
}

// LoadWeights fills params from a file written by SaveWeights (or any
// safetensors file of F32 tensors). The file must hold exactly the given
// names with the same shapes; nothing is changed when it does not.
func LoadWeights(path string, params []*nn.Param) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("loading weights: %w", err)
	}
	entries, data, err := parseSafetensors(b)
	if err != nil {
		return fmt.Errorf("loading weights %s: %w", path, err)
	}
	want := map[string]bool{}
	for _, p := range params {
		if want[p.Name] {
			return fmt.Errorf("loading weights %s: parameter %q is listed twice", path, p.Name)
		}
		want[p.Name] = true
		e, ok := entries[p.Name]
		if !ok {
			return fmt.Errorf("loading weights %s: tensor %q is missing", path, p.Name)
		}
		if e.Dtype != "F32" {
			return fmt.Errorf("loading weights %s: tensor %q has dtype %s, want F32", path, p.Name, e.Dtype)
		}
		if !slices.Equal(e.Shape, p.Shape) {
			return fmt.Errorf("loading weights %s: tensor %q has shape %v, the network wants %v", path, p.Name, e.Shape, p.Shape)
		}
		if n := numel(p.Shape); n != len(p.Data) {
			return fmt.Errorf("loading weights %s: parameter %q: shape %v holds %d values, data has %d", path, p.Name, p.Shape, n, len(p.Data))
		}
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi-lo != 4*int64(len(p.Data)) {
			return fmt.Errorf("loading weights %s: tensor %q: data offsets [%d, %d) do not hold %d float32 values", path, p.Name, lo, hi, len(p.Data))
		}
		if hi > int64(len(data)) {
			return fmt.Errorf("loading weights %s: tensor %q: data ends at byte %d but the file has %d data bytes (truncated?)", path, p.Name, hi, len(data))
		}
	}
	var extra []string
	for name := range entries {
		if !want[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return fmt.Errorf("loading weights %s: tensor %q is not a parameter of the network (%d unexpected in all)", path, extra[0], len(extra))
	}
	for _, p := range params {
		src := data[entries[p.Name].DataOffsets[0]:]
		for i := range p.Data {
			p.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
	return nil
}

// ReadWeightsMetadata returns the "__metadata__" map of a weights file.
func ReadWeightsMetadata(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading weights metadata: %w", err)
	}
	hlen, err := headerLen(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hlen], &h); err != nil {
		return nil, fmt.Errorf("reading %s: header: %w", path, err)
	}
	meta := map[string]string{}
	if raw, ok := h[metadataKey]; ok {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("reading %s: %s: %w", path, metadataKey, err)
		}
	}
	return meta, nil
}

func headerLen(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("file of %d bytes is too short for a safetensors header", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > maxHeader {
		return 0, fmt.Errorf("header length %d exceeds the %d-byte limit (not a safetensors file?)", n, maxHeader)
	}
	if uint64(len(b)-8) < n {
		return 0, fmt.Errorf("header length %d but only %d bytes follow (truncated?)", n, len(b)-8)
	}
	return int(n), nil
}

func parseSafetensors(b []byte) (map[string]tensorEntry, []byte, error) {
	hlen, err := headerLen(b)
	if err != nil {
		return nil, nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hlen], &raw); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	entries := map[string]tensorEntry{}
	for name, r := range raw {
		if name == metadataKey {
			var meta map[string]string
			if err := json.Unmarshal(r, &meta); err != nil {
				return nil, nil, fmt.Errorf("header: %s must map strings to strings: %w", metadataKey, err)
			}
			continue
		}
		var e tensorEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		entries[name] = e
	}
	return entries, b[8+hlen:], nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// shapeOrEmpty keeps a nil shape (a scalar) encoding as [] rather than null.
func shapeOrEmpty(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}
