//go:build !cgo

package onnxrt

import (
	"strings"
	"testing"
)

func TestValidateWithoutCgo(t *testing.T) {
	_, err := Validate("m.onnx", nil, nil, nil, nil, ValidateOptions{})
	if err == nil || !strings.Contains(err.Error(), "without cgo") || !strings.Contains(err.Error(), "m.onnx") {
		t.Fatalf("error %v, want one naming the model and saying cgo is missing", err)
	}
}
