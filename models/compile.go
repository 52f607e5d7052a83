package models

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"

	"bayesnas/nn"
)

// Compile builds a runnable network for batches of up to batch samples: it
// validates the graph, allocates every parameter (zeroed, except BN scale and
// running variance, which start at 1 so an uninitialised network is still a
// sane function), and asks the backend for one layer per node, in graph
// order. Everything a training step touches is allocated here, so steps
// allocate nothing. Network.Values holds the input first, then each node's
// output; Network.Params lists parameters in graph order (ParamSpecs order).
// On a backend that fuses, a batch norm read only by a ReLU or residual add
// runs inside that node's layer (see bnFusion): its own layer does nothing
// and its value is not written.
func Compile(g *Graph, be nn.Backend, batch int) (*nn.Network, error) {
	if batch < 1 {
		return nil, fmt.Errorf("compiling graph %q: batch %d, want >= 1", g.Name, batch)
	}
	if be == nil {
		return nil, fmt.Errorf("compiling graph %q: no backend", g.Name)
	}
	shapes, err := g.InferShapes()
	if err != nil {
		return nil, fmt.Errorf("compiling graph %q: %w", g.Name, err)
	}
	if err := checkMemory(g, shapes, batch); err != nil {
		return nil, fmt.Errorf("compiling: %w", err)
	}
	in := be.NewValue(g.Input.Name, append([]int{batch}, g.Input.Shape...), false)
	net := &nn.Network{Backend: be, Input: in, Values: []*nn.Value{in}}
	values := map[string]*nn.Value{g.Input.Name: in}
	fusion := planBNFusion(g, be)
	for _, n := range g.Nodes {
		xs := make([]*nn.Value, len(n.Inputs))
		for i, name := range n.Inputs {
			xs[i] = values[name]
		}
		var ps []*nn.Param
		for _, s := range nodeParams(n, inputShapes(n, shapes)) {
			ps = append(ps, be.NewParam(s.Name, s.Kind, s.Shape...))
		}
		if n.Op == OpBN {
			fill(ps[0].Data, 1) // scale
			fill(ps[3].Data, 1) // running variance
			ps[0].Commit()
			ps[3].Commit()
		}
		layer, err := fusion.build(be, n, xs, ps)
		if err != nil {
			return nil, fmt.Errorf("compiling graph %q: node %q (%s): %w", g.Name, n.Name, n.Op, err)
		}
		out := layer.Output()
		// The IR's shape inference and the kernel's own must agree; a
		// mismatch would otherwise surface as a wrong export or a crash later.
		if want := append([]int{batch}, shapes[n.Name]...); !slices.Equal(out.Shape, want) {
			return nil, fmt.Errorf("compiling graph %q: node %q (%s): backend %s made output shape %v, the graph says %v",
				g.Name, n.Name, n.Op, be.Name(), out.Shape, want)
		}
		out.Name = n.Name
		values[n.Name] = out
		net.Layers = append(net.Layers, layer)
		net.Values = append(net.Values, out)
		net.Params = append(net.Params, ps...)
	}
	net.Output = values[g.Output]
	return net, nil
}

// buildLayer calls the backend constructor for one node; ps comes in
// nodeParams order.
func buildLayer(be nn.Backend, n *Node, xs []*nn.Value, ps []*nn.Param) (nn.Layer, error) {
	a := n.Attrs
	switch n.Op {
	case OpConv:
		var b *nn.Param
		if a.Bias {
			b = ps[1]
		}
		return be.Conv2D(xs[0], ps[0], b, nn.ConvAttrs{OutC: a.OutChannels, Kernel: a.Kernel, Stride: a.Stride,
			Pad: a.Pad, Dilation: a.Dilation, Groups: a.Groups})
	case OpBN:
		return be.BatchNorm(xs[0], ps[0], ps[1], ps[2], ps[3], nn.BNAttrs{Eps: float32(a.Eps), Momentum: float32(a.Momentum)})
	case OpReLU:
		return be.ReLU(xs[0])
	case OpMaxPool:
		return be.MaxPool(xs[0], nn.PoolAttrs{Kernel: a.Kernel, Stride: a.Stride, Pad: a.Pad, CeilMode: a.CeilMode})
	case OpAvgPool:
		return be.AvgPool(xs[0], nn.PoolAttrs{Kernel: a.Kernel, Stride: a.Stride, Pad: a.Pad, CountIncludePad: a.CountIncludePad,
			CeilMode: a.CeilMode})
	case OpGAP:
		return be.GlobalAvgPool(xs[0])
	case OpLinear:
		var b *nn.Param
		if a.Bias {
			b = ps[1]
		}
		return be.Linear(xs[0], ps[0], b)
	case OpAdd:
		return be.Add(xs)
	case OpWSum:
		return be.WeightedSum(xs, ps)
	case OpConcat:
		return be.Concat(xs)
	case OpSlice:
		return be.SliceChannels(xs[0], a.Start, a.End)
	case OpPadCh:
		return be.PadChannels(xs[0], a.OutChannels)
	case OpShuffle:
		return be.ChannelShuffle(xs[0], a.Groups)
	case OpDropout:
		return be.Dropout(xs[0], float32(a.P), nodeSeed(n.Name))
	case OpDropPath:
		return be.DropPath(xs[0], float32(a.P), nodeSeed(n.Name))
	}
	return nil, fmt.Errorf("unknown op %q", n.Op) // unreachable after validation
}

// nodeSeed derives a dropout mask seed from the node's name, so masks do not
// change when unrelated nodes are added or removed.
func nodeSeed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

func fill(s []float32, v float32) {
	for i := range s {
		s[i] = v
	}
}

// InitParams initialises a network compiled from g, as PyramidNet's reference
// code does: conv weights He normal with fan-out (std sqrt(2/(k*k*out)),
// out_channels regardless of groups), linear weights PyTorch's default
// U(-1/sqrt(in), 1/sqrt(in)), all biases zero, BN scale 1 and shift 0 with
// running mean 0 and variance 1, wsum weights 1. Each tensor draws from its
// own generator seeded by (seed, parameter name): the result does not depend
// on the order of parameters, and adding a node leaves the others unchanged.
func InitParams(net *nn.Network, g *Graph, seed uint64) error {
	byName := make(map[string]*nn.Param, len(net.Params))
	for _, p := range net.Params {
		byName[p.Name] = p
	}
	for _, n := range g.Nodes {
		param := func(slot string) (*nn.Param, error) {
			p := byName[n.Name+"."+slot]
			if p == nil {
				return nil, fmt.Errorf("initialising graph %q: node %q: the network has no parameter %q (compiled from another graph?)", g.Name, n.Name, n.Name+"."+slot)
			}
			return p, nil
		}
		rng := func(p *nn.Param) *rand.Rand { return rand.New(rand.NewPCG(seed, nodeSeed(p.Name))) }
		switch n.Op {
		case OpConv, OpLinear:
			w, err := param("weight")
			if err != nil {
				return err
			}
			r := rng(w)
			if n.Op == OpConv {
				std := math.Sqrt(2 / float64(n.Attrs.Kernel*n.Attrs.Kernel*n.Attrs.OutChannels))
				for i := range w.Data {
					w.Data[i] = float32(r.NormFloat64() * std)
				}
			} else {
				bound := 1 / math.Sqrt(float64(w.Shape[1]))
				for i := range w.Data {
					w.Data[i] = float32((2*r.Float64() - 1) * bound)
				}
			}
			if n.Attrs.Bias {
				b, err := param("bias")
				if err != nil {
					return err
				}
				clear(b.Data)
			}
		case OpBN:
			for slot, v := range map[string]float32{"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1} {
				p, err := param(slot)
				if err != nil {
					return err
				}
				fill(p.Data, v)
			}
		case OpWSum:
			for i := range n.Inputs {
				p, err := param(fmt.Sprintf("w%d", i))
				if err != nil {
					return err
				}
				fill(p.Data, 1)
			}
		}
	}
	// The loops above wrote host memory; a backend with its own storage
	// takes the values now.
	for _, p := range net.Params {
		p.Commit()
	}
	return nil
}
