package models

import (
	"bayesnas/internal/atomicfile"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
		for _, v := range p.Host() {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
	}
	return atomicfile.Write(path, buf)
}

// LoadWeights fills params from a file written by SaveWeights (or any
// safetensors file of F32 tensors). The file must hold exactly the given
// names with the same shapes, every value finite (no NaN or Inf); nothing is
// changed when it does not.
func LoadWeights(path string, params []*nn.Param) error {
	var need int64
	for _, p := range params {
		need += 4 * int64(len(p.Data))
	}
	header, data, dataErr := readSafetensors(path, need)
	var long *dataTooLongError
	if dataErr != nil && !errors.As(dataErr, &long) {
		return fmt.Errorf("loading weights %s: %w", path, dataErr)
	}
	entries, err := parseSafetensorsHeader(header)
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
		if dataErr == nil && hi > int64(len(data)) {
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
	if dataErr != nil {
		return fmt.Errorf("loading weights %s: %w", path, dataErr)
	}
	// Every value finite before any is copied: NaN or Inf is a corrupt file
	// or one saved from a diverged run, and training from it would only
	// report a NaN loss later.
	for _, p := range params {
		e := entries[p.Name]
		src := data[e.DataOffsets[0]:e.DataOffsets[1]]
		for i := 0; i < len(src); i += 4 {
			u := binary.LittleEndian.Uint32(src[i:])
			if u&0x7f800000 != 0x7f800000 { // exponent not all ones: finite
				continue
			}
			v := math.Float32frombits(u)
			what := "NaN"
			if math.IsInf(float64(v), 0) {
				what = fmt.Sprint(v)
			}
			return fmt.Errorf("loading weights %s: tensor %q holds %s at index %d of %d (a corrupt file, or saved from a run that diverged)", path, p.Name, what, i/4, len(p.Data))
		}
	}
	for _, p := range params {
		src := data[entries[p.Name].DataOffsets[0]:]
		for i := range p.Data {
			p.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		p.Commit()
	}
	return nil
}

// ReadWeightsMetadata returns the "__metadata__" map of a weights file.
func ReadWeightsMetadata(path string) (map[string]string, error) {
	header, _, err := readSafetensors(path, -1)
	if err != nil {
		return nil, fmt.Errorf("reading weights metadata of %s: %w", path, err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(header, &h); err != nil {
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

// readSafetensors reads a safetensors file's JSON header and, when maxData
// is not negative, its data, which must not exceed maxData bytes (what the
// tensors the caller expects occupy). Sizes are checked against the file's
// length and these bounds before anything is allocated, so a corrupt length
// field or an oversized file is an error, not an out-of-memory crash.
func readSafetensors(path string, maxData int64) (header, data []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("is a directory, not a safetensors file")
	}
	size := int64(-1) // unknown for a pipe or a device
	if st.Mode().IsRegular() {
		size = st.Size()
	}
	var lb [8]byte
	if got, err := io.ReadFull(f, lb[:]); err != nil {
		return nil, nil, fmt.Errorf("file of %d bytes is too short for a safetensors header", got)
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > maxHeader {
		return nil, nil, fmt.Errorf("header length %d exceeds the %d-byte limit (not a safetensors file?)", n, maxHeader)
	}
	if size >= 0 && uint64(size-8) < n {
		return nil, nil, fmt.Errorf("header length %d but only %d bytes follow (truncated?)", n, size-8)
	}
	header = make([]byte, n)
	if got, err := io.ReadFull(f, header); err != nil {
		return nil, nil, fmt.Errorf("header length %d but only %d bytes follow (truncated?)", n, got)
	}
	if maxData < 0 {
		return header, nil, nil
	}
	tooMuch := func(have int64) error { return &dataTooLongError{have, maxData} }
	if size >= 0 {
		if have := size - 8 - int64(n); have > maxData {
			return header, nil, tooMuch(have)
		}
	}
	data, err = io.ReadAll(io.LimitReader(f, maxData+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(data)) > maxData {
		return header, nil, tooMuch(int64(len(data)))
	}
	return header, data, nil
}

// dataTooLongError is a file with more tensor data than the caller expects
// (at least: a pipe is read one byte past the bound).
type dataTooLongError struct{ have, max int64 }

func (e *dataTooLongError) Error() string {
	return fmt.Sprintf("%d bytes of tensor data, more than the %d bytes the network's tensors occupy", e.have, e.max)
}

// parseSafetensorsHeader decodes a header's tensor entries (the metadata map
// is checked and skipped).
func parseSafetensorsHeader(header []byte) (map[string]tensorEntry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	entries := map[string]tensorEntry{}
	for name, r := range raw {
		if name == metadataKey {
			var meta map[string]string
			if err := json.Unmarshal(r, &meta); err != nil {
				return nil, fmt.Errorf("header: %s must map strings to strings: %w", metadataKey, err)
			}
			continue
		}
		var e tensorEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, fmt.Errorf("header: tensor %q: %w", name, err)
		}
		entries[name] = e
	}
	return entries, nil
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
