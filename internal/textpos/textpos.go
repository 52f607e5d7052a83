// Package textpos turns the byte offsets and line numbers that the JSON and
// YAML decoders report into positions a person can go to: FILE:LINE:COL.
package textpos

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Error is a decoding error at a position in a file's text. Line and Col
// count from 1; Col is 0 where the decoder reports only a line.
type Error struct {
	Line, Col int
	Err       error
}

func (e *Error) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("line %d, column %d: %v", e.Line, e.Col, e.Err)
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// At formats err as "FILE:LINE:COL: message" (or "FILE:LINE: message") when
// it holds a position, and as "FILE: message" otherwise.
func At(file string, err error) error {
	var pe *Error
	if errors.As(err, &pe) {
		if pe.Col > 0 {
			return fmt.Errorf("%s:%d:%d: %w", file, pe.Line, pe.Col, pe.Err)
		}
		return fmt.Errorf("%s:%d: %w", file, pe.Line, pe.Err)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// LineCol gives the 1-based line and column (in bytes) of offset off in b.
func LineCol(b []byte, off int64) (line, col int) {
	if off < 0 {
		off = 0
	}
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col = 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}

// JSON gives err, an error of decoding the part of file that starts at
// offset base, a position in file when it is a json.SyntaxError or
// json.UnmarshalTypeError (the byte at which decoding failed) or
// io.ErrUnexpectedEOF (the end of file); other errors come back unchanged.
func JSON(file []byte, base int64, err error) error {
	var off int64
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset - 1 // Offset counts the bytes read, the bad one included
	case errors.As(err, &te):
		off = te.Offset - 1
	case errors.Is(err, io.ErrUnexpectedEOF): // json.Decoder on a truncated value
		line, col := LineCol(file, int64(len(file)))
		return &Error{Line: line, Col: col, Err: errors.New("unexpected end of JSON input (the file ends inside a value)")}
	default:
		return err
	}
	if off < 0 {
		off = 0
	}
	line, col := LineCol(file, base+off)
	return &Error{Line: line, Col: col, Err: err}
}

// yamlLine matches the line number that go.yaml.in/yaml/v3 puts in its
// syntax errors ("yaml: line 3: mapping values are not allowed ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// YAML gives err a position (a line: the decoder reports no column) when
// its message carries the line the YAML decoder reports.
func YAML(err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	n, _ := strconv.Atoi(m[1])
	return &Error{Line: n, Err: errors.New(m[2])}
}

// yamlTypeLine matches one entry of a yaml.TypeError ("line 1: cannot
// unmarshal !!seq into map[string]interface {}").
var yamlTypeLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlPos is YAML for the errors of go.yaml.in/yaml/v3 itself.
func yamlPos(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		if m := yamlTypeLine.FindStringSubmatch(te.Errors[0]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return &Error{Line: n, Err: errors.New(m[2])}
		}
	}
	return YAML(err)
}

// YAMLDecode is YAML for an error of a go.yaml.in/yaml/v3 decoder (syntax
// or type): the first error, at its line.
func YAMLDecode(err error) error { return yamlPos(err) }

// CheckYAML decodes b as a YAML mapping and returns the decoder's error with
// its line (see YAML), or nil if b is a valid YAML mapping (or empty).
func CheckYAML(b []byte) error {
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return yamlPos(err)
	}
	return nil
}
