//go:build !cgo

package onnxrt

import (
	"context"
	"fmt"

	"bayesnas/hwprofile"

	"bayesnas/models"
	"bayesnas/nn"
)

// Validate needs ONNX Runtime, which is loaded through cgo; this build has
// none, so it says so instead of failing to compile the whole tool.
func Validate(modelPath string, g *models.Graph, params []*nn.Param, images []float32, labels []int32, opts ValidateOptions) (*Report, error) {
	return nil, fmt.Errorf("validating %s: this bayesnas was built without cgo, which ONNX Runtime needs (rebuild with CGO_ENABLED=1)", modelPath)
}

// Ready says this build cannot load ONNX Runtime.
func Ready(string) error {
	return fmt.Errorf("this bayesnas was built without cgo, which ONNX Runtime needs (rebuild with CGO_ENABLED=1)")
}

// Device stands in for the built-in device in a build without cgo.
type Device struct{}

// NewDevice says why there is no built-in device in this build.
func NewDevice(configured string, threads int, optimization string) (*Device, error) {
	return nil, fmt.Errorf("the built-in ONNX Runtime device needs cgo: this bayesnas was built without it (rebuild with CGO_ENABLED=1, or time on a plug-in device)")
}

// Describe, Time and Close make Device a hwprofile.Device; they are never
// reached, NewDevice returning no device.
func (*Device) Describe(context.Context) (hwprofile.DeviceInfo, hwprofile.RuntimeInfo, error) {
	return hwprofile.DeviceInfo{}, hwprofile.RuntimeInfo{}, fmt.Errorf("no ONNX Runtime in this build")
}

func (*Device) Time(context.Context, string, hwprofile.Protocol) (hwprofile.Timing, error) {
	return hwprofile.Timing{}, fmt.Errorf("no ONNX Runtime in this build")
}

func (*Device) Close() error { return nil }
