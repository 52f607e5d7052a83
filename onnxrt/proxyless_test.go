//go:build cgo

package onnxrt

import (
	"testing"

	"bayesnas/export"
	"bayesnas/internal/fixtures"
	"bayesnas/models"
)

// The published ProxylessNAS CIFAR-10 network, imported from its net.config,
// exports and matches the engine in ONNX Runtime (random weights; BN folded
// and not), as any derived network does.
func TestImportedProxylessInORT(t *testing.T) {
	needORT(t)
	g, err := models.ReadProxylessNAS(fixtures.MustPath(t, "proxylessnas_cifar10_net.config"))
	if err != nil {
		t.Fatal(err)
	}
	net := randomNet(t, g, 5)
	for _, opts := range []export.Options{{}, {NoFold: true}} {
		compareCase(t, g, net.Params, opts, 2)
	}
}
