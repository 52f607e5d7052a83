package report

import (
	"fmt"
	"image/color"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"bayesnas/models"
	"bayesnas/search"
)

// cellGraph is a derived cell drawn as a layered graph: nodes in columns by
// their depth, edges as arrows labelled with their ops.
type cellGraph struct {
	title string
	nodes []gnode
	edges []gedge
}

type gnode struct {
	label string
	layer int
	y     float64 // set by layout, in [0, 1]
}

type gedge struct {
	from, to int
	label    string
	// bend curves the edge sideways, as a fraction of its length: parallel
	// edges and edges that skip a layer go around the nodes in between.
	bend float64
	// structural edges (the split, the output concatenation) are gray and
	// unlabelled or lightly labelled: they are not search decisions.
	structural bool
}

func (g *cellGraph) node(label string, layer int) int {
	g.nodes = append(g.nodes, gnode{label: label, layer: layer})
	return len(g.nodes) - 1
}

// layout spreads each layer's nodes evenly over the height, in the order
// they were added.
func (g *cellGraph) layout() (layers int) {
	count := map[int]int{}
	for _, n := range g.nodes {
		count[n.layer]++
		layers = max(layers, n.layer+1)
	}
	seen := map[int]int{}
	for i := range g.nodes {
		l := g.nodes[i].layer
		k := seen[l]
		seen[l]++
		g.nodes[i].y = 1 - (float64(k)+0.5)/float64(count[l])
		if count[l] == 1 && l > 0 && l < layers-1 {
			// Lone nodes of inner layers zig-zag about the middle, so that
			// an edge skipping a layer does not run through its node.
			g.nodes[i].y += 0.12 * float64(1-2*(l%2))
		}
	}
	return layers
}

// opShort abbreviates the candidate ops for edge labels: a DARTS edge can
// keep five ops, and their full names side by side cover the picture.
var opShort = map[string]string{
	models.ProxySep3: "sep3", models.ProxySep5: "sep5", models.ProxyDil3: "dil3", models.ProxyDil5: "dil5",
	models.ProxyMax3: "max3", models.ProxyAvg3: "avg3", models.ProxySkip: "skip",
	models.TreeIdentity: "id", models.TreeSep3: "sep3", models.TreeSep5: "sep5", models.TreeSep7: "sep7",
	models.TreeDil3: "dil3",
}

// opsLabel is the label of an edge keeping ops (summed): abbreviated, at
// most three to a line.
func opsLabel(ops []string) string {
	var b strings.Builder
	for i, op := range ops {
		switch {
		case i > 0 && i%3 == 0:
			b.WriteString(" +\n")
		case i > 0:
			b.WriteString(" + ")
		}
		if s, ok := opShort[op]; ok {
			op = s
		}
		b.WriteString(op)
	}
	return b.String()
}

// opLegend explains the abbreviations, for the caption.
const opLegend = "sep3/5/7: separable conv 3x3/5x5/7x7, dil3/5: dilated conv, max3/avg3: 3x3 max/average pooling, skip/id: identity."

// proxyCell is a DARTS-style cell: inputs c_{k-2} and c_{k-1}, intermediate
// nodes 2.., and the output concatenating the nodes that are live.
func proxyCell(title string, edges []models.ProxyEdge) *cellGraph {
	g := &cellGraph{title: title}
	depth := map[int]int{0: 0, 1: 0}
	maxNode := 1
	for _, e := range edges {
		maxNode = max(maxNode, e.To)
	}
	// Edges go from lower to higher node numbers, so one pass in node order
	// finds every node's depth.
	for to := 2; to <= maxNode; to++ {
		for _, e := range edges {
			if e.To == to {
				if d, ok := depth[e.From]; ok {
					depth[to] = max(depth[to], d+1)
				}
			}
		}
	}
	idx := map[int]int{}
	idx[0] = g.node("c_{k-2}", 0)
	idx[1] = g.node("c_{k-1}", 0)
	last := 0
	for k := 2; k <= maxNode; k++ {
		if d, ok := depth[k]; ok {
			idx[k] = g.node(fmt.Sprint(k-2), d)
			last = max(last, d)
		}
	}
	out := g.node("c_{k}", last+1)
	for _, e := range edges {
		from, okF := idx[e.From]
		to, okT := idx[e.To]
		if !okF || !okT {
			continue
		}
		g.edges = append(g.edges, gedge{from: from, to: to, label: opsLabel(e.Ops)})
	}
	for k := 2; k <= maxNode; k++ {
		if n, ok := idx[k]; ok {
			g.edges = append(g.edges, gedge{from: n, to: out, structural: true})
		}
	}
	return g
}

// treeCell is a tree cell: the root's output split into two halves, each
// half's two top edges, each top edge's two leaves summed, and the halves
// added (models.PyramidTreeConfig). Zero edges are left out.
func treeCell(title string, c models.TreeCell) *cellGraph {
	c = c.Pruned()
	g := &cellGraph{title: title}
	in := g.node("root", 0)
	out := -1
	var sums []int
	for h := 0; h < 2; h++ {
		live := false
		for e := 6 * h; e < 6*h+6; e++ {
			if len(c.Edges[e]) > 0 {
				live = true
			}
		}
		if !live {
			continue
		}
		half := g.node(fmt.Sprintf("x%d", h), 1)
		g.edges = append(g.edges, gedge{from: in, to: half, label: "split", structural: true})
		sum := -1
		for top := 6 * h; top < 6*h+6; top += 3 {
			if len(c.Edges[top]) == 0 {
				continue
			}
			name := models.TreeEdgeName(top)
			mid := g.node(strings.TrimPrefix(name, fmt.Sprintf("h%d.", h)), 2)
			g.edges = append(g.edges, gedge{from: half, to: mid, label: opsLabel(c.Edges[top])})
			if sum < 0 {
				sum = g.node(fmt.Sprintf("sum%d", h), 3)
				sums = append(sums, sum)
			}
			var leaves []int
			for l := top + 1; l <= top+2; l++ {
				if len(c.Edges[l]) > 0 {
					leaves = append(leaves, l)
				}
			}
			for j, l := range leaves {
				bend := 0.0
				if len(leaves) == 2 {
					// Two leaves join the same sum: bow them apart.
					bend = 0.18 * float64(1-2*j)
				}
				g.edges = append(g.edges, gedge{from: mid, to: sum, label: opsLabel(c.Edges[l]), bend: bend})
			}
		}
	}
	if len(sums) > 0 {
		out = g.node("out", 4)
		for _, s := range sums {
			g.edges = append(g.edges, gedge{from: s, to: out, label: "BN, add", structural: true})
		}
	}
	return g
}

// cellGraphs lists the derived cells of the search to draw, at most max of
// them, and how many were left out.
func (in *inputs) cellGraphs(maxCells int) (gs []*cellGraph, left int) {
	if d := in.proxyCells; d != nil {
		for _, c := range []struct {
			name  string
			edges []models.ProxyEdge
		}{{"normal", d.Normal}, {"reduce", d.Reduce}} {
			if len(c.edges) > 0 {
				gs = append(gs, proxyCell(fmt.Sprintf("Derived %s cell", c.name), c.edges))
			}
		}
	}
	if d := in.treeCells; d != nil {
		for i, c := range d.Cells {
			if len(gs) == maxCells {
				return gs, len(d.Cells) - i
			}
			gs = append(gs, treeCell(treeCellTitle(d, i), c))
		}
	}
	return gs, 0
}

func treeCellTitle(d *search.TreeDerivation, i int) string {
	t := fmt.Sprintf("Derived tree cell %s", d.Names[i])
	for _, c := range d.Table.Cells {
		if c.Cell == d.Names[i] && len(c.Blocks) > 0 {
			if len(c.Blocks) > 4 {
				return fmt.Sprintf("%s (blocks %s .. %s, %d blocks)", t, c.Blocks[0], c.Blocks[len(c.Blocks)-1], len(c.Blocks))
			}
			return fmt.Sprintf("%s (blocks %s)", t, strings.Join(c.Blocks, ", "))
		}
	}
	return t
}

// plot draws the graph; it returns the PNG and the number of edges drawn.
func (g *cellGraph) plot() ([]byte, int, error) {
	layers := g.layout()
	p := plot.New()
	p.Title.Text = g.title
	p.HideAxes()
	p.Add(g)
	p.X.Min, p.X.Max = -0.35, float64(layers-1)+0.35
	p.Y.Min, p.Y.Max = -0.05, 1.05
	// Columns wide enough for the longest edge label (about 5 points a
	// character at 9 points).
	longest := 0
	for _, e := range g.edges {
		for _, line := range strings.Split(e.label, "\n") {
			longest = max(longest, len(line))
		}
	}
	perLayer := max(1.35, (5.2*float64(longest)+50)/72)
	w := vg.Length(max(perLayer*float64(layers), 6)) * vg.Inch
	maxPerLayer := 0
	count := map[int]int{}
	for _, n := range g.nodes {
		count[n.layer]++
		maxPerLayer = max(maxPerLayer, count[n.layer])
	}
	h := vg.Length(max(1.3*float64(maxPerLayer), 3.2)) * vg.Inch
	b, err := renderPlot(p, w, h)
	return b, len(g.edges), err
}

const nodeRadius = vg.Length(15)

var (
	edgeColor       = color.RGBA{31, 119, 180, 255}
	structuralColor = color.Gray{Y: 150}
	nodeFill        = color.RGBA{255, 236, 200, 255}
	nodeStroke      = color.RGBA{255, 127, 14, 255}
)

// Plot implements plot.Plotter.
func (g *cellGraph) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	pos := make([]vg.Point, len(g.nodes))
	for i, n := range g.nodes {
		pos[i] = vg.Point{X: trX(float64(n.layer)), Y: trY(n.y)}
	}
	labelStyle := draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 9),
		XAlign: draw.XCenter, YAlign: draw.YCenter, Handler: plt.TextHandler}
	type label struct {
		at  vg.Point
		txt string
	}
	var labels []label
	var taken []vg.Rectangle // label boxes and nodes placed so far
	radius := make([]vg.Length, len(g.nodes))
	for i, n := range g.nodes {
		r := max(nodeRadius, labelStyle.Width(n.label)/2+4)
		radius[i] = r
		taken = append(taken, vg.Rectangle{Min: vg.Point{X: pos[i].X - r, Y: pos[i].Y - r}, Max: vg.Point{X: pos[i].X + r, Y: pos[i].Y + r}})
	}
	// place puts a label on the curve where it overlaps no other label or
	// node, trying the middle first; failing that, where it overlaps least.
	place := func(start, ctrl, end vg.Point, txt string) vg.Point {
		w, h := labelStyle.Width(txt)/2+3, labelStyle.Height(txt)/2+2
		var best vg.Point
		var bestBox vg.Rectangle
		bestOverlap := vg.Length(math.Inf(1))
		for _, t := range []float64{0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85} {
			u := 1 - t
			at := vg.Point{
				X: vg.Length(u*u)*start.X + vg.Length(2*u*t)*ctrl.X + vg.Length(t*t)*end.X,
				Y: vg.Length(u*u)*start.Y + vg.Length(2*u*t)*ctrl.Y + vg.Length(t*t)*end.Y,
			}
			box := vg.Rectangle{Min: vg.Point{X: at.X - w, Y: at.Y - h}, Max: vg.Point{X: at.X + w, Y: at.Y + h}}
			var overlap vg.Length
			for _, r := range taken {
				ox := min(box.Max.X, r.Max.X) - max(box.Min.X, r.Min.X)
				oy := min(box.Max.Y, r.Max.Y) - max(box.Min.Y, r.Min.Y)
				if ox > 0 && oy > 0 {
					overlap += ox * oy
				}
			}
			if overlap < bestOverlap {
				best, bestBox, bestOverlap = at, box, overlap
			}
			if overlap == 0 {
				break
			}
		}
		taken = append(taken, bestBox)
		return best
	}
	for _, e := range g.edges {
		p0, p2 := pos[e.from], pos[e.to]
		bend := e.bend
		if bend == 0 {
			bend = g.clearBend(e, pos, radius)
		}
		ctrl := control(p0, p2, bend)
		start := towards(p0, ctrl, radius[e.from])
		end := towards(p2, ctrl, radius[e.to]+1)
		col := color.Color(edgeColor)
		width := vg.Points(1.6)
		if e.structural {
			col, width = structuralColor, vg.Points(1)
		}
		var path vg.Path
		path.Move(start)
		path.QuadTo(ctrl, end)
		c.SetLineStyle(draw.LineStyle{Color: col, Width: width})
		c.Stroke(path)
		arrowHead(c, ctrl, end, col)
		if e.label != "" {
			labels = append(labels, label{place(start, ctrl, end, e.label), e.label})
		}
	}
	for i, n := range g.nodes {
		var circle vg.Path
		circle.Move(vg.Point{X: pos[i].X + radius[i], Y: pos[i].Y})
		circle.Arc(pos[i], radius[i], 0, 2*math.Pi)
		circle.Close()
		c.SetColor(nodeFill)
		c.Fill(circle)
		c.SetLineStyle(draw.LineStyle{Color: nodeStroke, Width: vg.Points(1.5)})
		c.Stroke(circle)
		c.FillText(labelStyle, pos[i], n.label)
	}
	// Labels last, on a white box, so that no edge crosses them.
	for _, l := range labels {
		w, h := labelStyle.Width(l.txt), labelStyle.Height(l.txt)
		pad := vg.Length(2)
		c.FillPolygon(color.NRGBA{R: 255, G: 255, B: 255, A: 235}, []vg.Point{
			{X: l.at.X - w/2 - pad, Y: l.at.Y - h/2 - pad}, {X: l.at.X + w/2 + pad, Y: l.at.Y - h/2 - pad},
			{X: l.at.X + w/2 + pad, Y: l.at.Y + h/2 + pad}, {X: l.at.X - w/2 - pad, Y: l.at.Y + h/2 + pad},
		})
		c.FillText(labelStyle, l.at, l.txt)
	}
}

// control is the control point of a quadratic curve from p0 to p2: off
// the chord's middle, perpendicular to it, by bend times its length.
func control(p0, p2 vg.Point, bend float64) vg.Point {
	dx, dy := p2.X-p0.X, p2.Y-p0.Y
	return vg.Point{X: (p0.X+p2.X)/2 - dy*vg.Length(bend), Y: (p0.Y+p2.Y)/2 + dx*vg.Length(bend)}
}

// clearBend picks the least bend of edge e that keeps the curve clear of
// every other node (an edge that skips a layer would otherwise run through
// the nodes in between), or the clearest bend tried.
func (g *cellGraph) clearBend(e gedge, pos []vg.Point, radius []vg.Length) float64 {
	best, bestClear := 0.0, vg.Length(-1)
	for _, b := range []float64{0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45} {
		ctrl := control(pos[e.from], pos[e.to], b)
		clear := vg.Length(math.Inf(1))
		for t := 0.05; t < 0.96; t += 0.05 {
			u := 1 - t
			pt := vg.Point{
				X: vg.Length(u*u)*pos[e.from].X + vg.Length(2*u*t)*ctrl.X + vg.Length(t*t)*pos[e.to].X,
				Y: vg.Length(u*u)*pos[e.from].Y + vg.Length(2*u*t)*ctrl.Y + vg.Length(t*t)*pos[e.to].Y,
			}
			for i := range g.nodes {
				if i == e.from || i == e.to {
					continue
				}
				d := vg.Length(math.Hypot(float64(pt.X-pos[i].X), float64(pt.Y-pos[i].Y))) - radius[i]
				clear = min(clear, d)
			}
		}
		if clear >= 12 {
			return b
		}
		if clear > bestClear {
			best, bestClear = b, clear
		}
	}
	return best
}

// towards returns the point at distance d from p in the direction of q.
func towards(p, q vg.Point, d vg.Length) vg.Point {
	dx, dy := float64(q.X-p.X), float64(q.Y-p.Y)
	n := math.Hypot(dx, dy)
	if n == 0 {
		return p
	}
	k := float64(d) / n
	return vg.Point{X: p.X + vg.Length(dx*k), Y: p.Y + vg.Length(dy*k)}
}

// arrowHead draws a filled triangle at tip pointing away from from.
func arrowHead(c draw.Canvas, from, tip vg.Point, col color.Color) {
	dx, dy := float64(tip.X-from.X), float64(tip.Y-from.Y)
	n := math.Hypot(dx, dy)
	if n == 0 {
		return
	}
	ux, uy := dx/n, dy/n
	const length, half = 8.0, 3.5
	bx, by := float64(tip.X)-length*ux, float64(tip.Y)-length*uy
	c.FillPolygon(col, []vg.Point{
		tip,
		{X: vg.Length(bx - half*uy), Y: vg.Length(by + half*ux)},
		{X: vg.Length(bx + half*uy), Y: vg.Length(by - half*ux)},
	})
}
