//go:build !cgo

package onnxrt

import (
	"fmt"

	"bayesnas/models"
	"bayesnas/nn"
)

// Validate needs ONNX Runtime, which is loaded through cgo; this build has
// none, so it says so instead of failing to compile the whole tool.
func Validate(modelPath string, g *models.Graph, params []*nn.Param, images []float32, labels []int32, opts ValidateOptions) (*Report, error) {
	return nil, fmt.Errorf("validating %s: this bayesnas was built without cgo, which ONNX Runtime needs (rebuild with CGO_ENABLED=1)", modelPath)
}
