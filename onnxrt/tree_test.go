//go:build cgo

package onnxrt

import (
	"math/rand/v2"
	"testing"

	"bayesnas/export"
	"bayesnas/models"
)

// Derived tree-cell networks (random kept ops per edge, pruned to a valid
// cell, dead halves and dead cells included) export and match the engine in
// ONNX Runtime, with BN folded and not, and with drop-path for retraining.
func TestDerivedTreeNetworksInORT(t *testing.T) {
	needORT(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 6; i++ {
		cfg := models.PyramidTreeConfig{PyramidNetConfig: models.PyramidNetConfig{BlocksPerStage: 1, Alpha: 6, Groups: 2,
			StemChannels: 4, Input: [3]int{1, 8, 8}, Classes: 3, DropPath: 0.1 * float64(i%2)}}
		for b := 0; b < 3; b++ {
			c := models.TreeCell{Edges: make([][]string, models.TreeEdges)}
			for e := range c.Edges {
				for _, op := range models.TreeOps {
					if rng.Float64() < 0.25 {
						c.Edges[e] = append(c.Edges[e], op)
					}
				}
			}
			cfg.Cells = append(cfg.Cells, c.Pruned())
		}
		g, _, err := models.PyramidTreeNetwork(cfg)
		if err != nil {
			t.Fatalf("network %d: %v", i, err)
		}
		net := randomNet(t, g, uint64(i))
		for _, opts := range []export.Options{{}, {NoFold: true}} {
			compareCase(t, g, net.Params, opts, 3)
		}
	}
}
