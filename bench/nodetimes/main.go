// Command nodetimes looks at how ONNX Runtime runs models on this machine.
//
//	go run ./bench/nodetimes m.onnx ...              # per-kernel times from the runtime's profiler
//	go run ./bench/nodetimes -plain m.onnx ...       # whole-inference median, no profiler
//	go run ./bench/nodetimes -rounds 24 m.onnx ...   # repeatability of latency statistics
//
// The first prints the median time of every kernel the runtime ran (after
// its fusions and NCHWc rewrite: where a network's latency goes; the
// profiler's own cost inflates small kernels, so compare kernels with each
// other, not with -plain). The last times every model in interleaved
// rounds and reports how often two measurements of k rounds agree within
// 10 %, by the statistic within a round and how rounds are aggregated
// (the evidence for hwprofile.StatisticQuietest).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"bayesnas/internal/stats"
	"bayesnas/onnxrt"
)

type event struct {
	Cat  string  `json:"cat"`
	Name string  `json:"name"`
	Dur  float64 `json:"dur"`
	Args struct {
		OpName string `json:"op_name"`
	} `json:"args"`
}

func main() {
	threads := flag.Int("threads", 1, "intra-op threads")
	runs := flag.Int("runs", 300, "inferences")
	opt := flag.String("opt", "all", "graph optimisation level")
	rounds := flag.Int("rounds", 0, "time every model in this many interleaved rounds and compare statistics")
	plain := flag.Bool("plain", false, "time whole inferences without the profiler instead")
	flag.Parse()
	if _, err := onnxrt.InitDefault(""); err != nil {
		log.Fatal(err)
	}
	if *rounds > 0 {
		stability(flag.Args(), *rounds, *runs, *threads, *opt)
		return
	}
	for _, path := range flag.Args() {
		if *plain {
			s, err := onnxrt.Open(path, onnxrt.SessionOptions{IntraOpThreads: *threads, Optimization: *opt})
			if err != nil {
				log.Fatal(err)
			}
			r, err := s.NewRunner(1)
			if err != nil {
				log.Fatal(err)
			}
			ts := make([]float64, *runs)
			for i := range ts {
				t0 := time.Now()
				if err := r.Run(); err != nil {
					log.Fatal(err)
				}
				ts[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
			}
			r.Close()
			s.Close()
			fmt.Printf("%8.2f us  %s\n", stats.Median(ts[len(ts)/3:]), path)
			continue
		}
		dir, err := os.MkdirTemp("", "nodetimes-")
		if err != nil {
			log.Fatal(err)
		}
		s, err := onnxrt.Open(path, onnxrt.SessionOptions{IntraOpThreads: *threads, ProfilePrefix: filepath.Join(dir, "p")})
		if err != nil {
			log.Fatal(err)
		}
		r, err := s.NewRunner(1)
		if err != nil {
			log.Fatal(err)
		}
		for i := 0; i < *runs; i++ {
			if err := r.Run(); err != nil {
				log.Fatal(err)
			}
		}
		r.Close()
		s.Close()
		files, _ := filepath.Glob(filepath.Join(dir, "p*.json"))
		if len(files) != 1 {
			log.Fatalf("%s: profile files %v", path, files)
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			log.Fatal(err)
		}
		os.RemoveAll(dir)
		var evs []event
		if err := json.Unmarshal(b, &evs); err != nil {
			log.Fatal(err)
		}
		node := map[string][]float64{}
		op := map[string]string{}
		var order []string
		var total []float64
		for _, e := range evs {
			switch {
			case e.Cat == "Node" && strings.HasSuffix(e.Name, "_kernel_time"):
				n := strings.TrimSuffix(e.Name, "_kernel_time")
				if _, ok := node[n]; !ok {
					order = append(order, n)
				}
				node[n] = append(node[n], e.Dur)
				op[n] = e.Args.OpName
			case e.Cat == "Session" && e.Name == "model_run":
				total = append(total, e.Dur)
			}
		}
		byOp := map[string]float64{}
		sum := 0.0
		fmt.Printf("== %s: model_run median %.1f us\n", path, stats.Median(total[len(total)/3:]))
		for _, n := range order {
			ts := node[n]
			m := stats.Median(ts[len(ts)/3:])
			byOp[op[n]] += m
			sum += m
			fmt.Printf("%-12s %8.2f  %s\n", op[n], m, n)
		}
		ops := make([]string, 0, len(byOp))
		for o := range byOp {
			ops = append(ops, o)
		}
		sort.Slice(ops, func(i, j int) bool { return byOp[ops[i]] > byOp[ops[j]] })
		for _, o := range ops {
			fmt.Printf("  %-14s %8.1f us\n", o, byOp[o])
		}
		fmt.Printf("  sum of nodes   %8.1f us\n", sum)
	}
}

func stability(paths []string, rounds, runs, threads int, opt string) {
	rs := make([]*onnxrt.Runner, len(paths))
	for i, p := range paths {
		s, err := onnxrt.Open(p, onnxrt.SessionOptions{IntraOpThreads: threads, Optimization: opt})
		if err != nil {
			log.Fatal(err)
		}
		if rs[i], err = s.NewRunner(1); err != nil {
			log.Fatal(err)
		}
	}
	stat := map[string]func([]float64) float64{
		"median": stats.Median,
		"p10":    func(v []float64) float64 { return pct(v, 0.10) },
		"p25":    func(v []float64) float64 { return pct(v, 0.25) },
		"min":    func(v []float64) float64 { return pct(v, 0) },
	}
	names := []string{"median", "p25", "p10", "min"}
	res := map[string][][]float64{}
	for r := 0; r < rounds; r++ {
		for i, run := range rs {
			ts := make([]float64, runs)
			for j := 0; j < 10; j++ {
				run.Run()
			}
			for j := range ts {
				t0 := time.Now()
				run.Run()
				ts[j] = float64(time.Since(t0).Nanoseconds()) / 1e3
			}
			for _, n := range names {
				if res[n] == nil {
					res[n] = make([][]float64, len(rs))
				}
				res[n][i] = append(res[n][i], stat[n](ts))
			}
		}
	}
	for i, p := range paths {
		fmt.Printf("%-60s median of round medians %8.2f us, of round minima %8.2f us\n", p, stats.Median(res["median"][i]), stats.Median(res["min"][i]))
	}
	// Two measurements of k rounds each (consecutive groups of rounds):
	// how often they agree within 10 %, with the rounds aggregated by their
	// median or by the quietest (lowest) round, for each statistic taken
	// within a round.
	fmt.Println("within-round  rounds  agree(median of rounds)  agree(quietest round)")
	for _, k := range []int{3, 6, 12} {
		if 2*k > rounds {
			break
		}
		for _, n := range names {
			var med, low, pairs int
			for _, v := range res[n] {
				var gm, gl []float64
				for lo := 0; lo+k <= len(v); lo += k {
					gm = append(gm, stats.Median(v[lo:lo+k]))
					gl = append(gl, pct(v[lo:lo+k], 0))
				}
				for a := range gm {
					for b := a + 1; b < len(gm); b++ {
						pairs++
						if math.Abs(gm[a]/gm[b]-1) <= 0.1 {
							med++
						}
						if math.Abs(gl[a]/gl[b]-1) <= 0.1 {
							low++
						}
					}
				}
			}
			fmt.Printf("%-12s  %6d  %22.1f%%  %20.1f%%\n", n, k, 100*float64(med)/float64(pairs), 100*float64(low)/float64(pairs))
		}
	}
}

func pct(v []float64, q float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}
