//go:build cgo

package onnxrt

import (
	"os"
	"path/filepath"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
)

// The published ProxylessNAS CIFAR-10 network, imported from its net.config,
// exports and matches the engine in ONNX Runtime (random weights; BN folded
// and not), as any derived network does.
func TestImportedProxylessInORT(t *testing.T) {
	needORT(t)
	var data []byte
	for _, p := range []string{"../../../shared/fixtures", "../../shared/fixtures", "../shared/fixtures", "/work/shared/fixtures"} {
		if b, err := os.ReadFile(filepath.Join(p, "proxylessnas_cifar10_net.config")); err == nil {
			data = b
			break
		}
	}
	if data == nil {
		t.Fatal("proxylessnas_cifar10_net.config not found under shared/fixtures")
	}
	g, err := models.ImportProxylessNAS(data, "net.config")
	if err != nil {
		t.Fatal(err)
	}
	net := randomNet(t, g, 5)
	for _, opts := range []export.Options{{}, {NoFold: true}} {
		compareCase(t, g, net.Params, opts, 2)
	}
}
