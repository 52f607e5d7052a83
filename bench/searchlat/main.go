// Command searchlat compares the searched networks of pipeline runs on one
// device: for each run directory (its search/ and train/ stages), the
// search's latency target and prediction (search/search_latency.json; a
// search without latency is predicted here with the profile), the
// retrained network's accuracy, and its latency measured again on the
// profile's device with every run's network interleaved round by round, so
// that a slow spell of a shared machine falls on all of them alike.
//
//	go run ./bench/searchlat -profile profiles/native-1t.yaml [-rounds 9] RUN...
//
// It prints a markdown table; the latency is the median of the quietest
// round (hwprofile.StatisticQuietest), and the noise floor beside it is the
// spread of each network's round medians (largest / smallest).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"bayesnas/hwprofile"
	"bayesnas/pipeline"
	"bayesnas/search"
)

type row struct {
	run       string
	lat       *search.LatencyReport // nil: a search without latency
	predMs    float64
	val, test float64
	params    int64
	model     string
}

func main() {
	profile := flag.String("profile", "", "device profile: prices the networks and names the device that times them")
	rounds := flag.Int("rounds", 9, "interleaved rounds over all networks")
	repeats := flag.Int("repeats", 100, "timed runs per network and round")
	flag.Parse()
	if *profile == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: searchlat -profile PROFILE RUN...")
		os.Exit(2)
	}
	if err := run(*profile, *rounds, *repeats, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "searchlat:", err)
		os.Exit(1)
	}
}

func run(profile string, rounds, repeats int, runs []string) error {
	prof, err := hwprofile.Read(profile)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "searchlat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var rows []row
	var paths []string
	for i, dir := range runs {
		r, err := load(prof, dir)
		if err != nil {
			return err
		}
		r.model = filepath.Join(tmp, fmt.Sprintf("net%d.onnx", i))
		if _, _, err := pipeline.Export(filepath.Join(dir, pipeline.TrainDir), pipeline.ExportOptions{Out: r.model}); err != nil {
			return err
		}
		rows = append(rows, r)
		paths = append(paths, r.model)
	}
	tms, err := pipeline.TimeModels(context.Background(), profile, pipeline.DeviceOptions{Rounds: rounds, Repeats: repeats, Warmup: 10}, paths)
	if err != nil {
		return err
	}
	fmt.Printf("device profile %s, %d interleaved rounds of %d runs, latency = %s\n\n", profile, rounds, repeats, hwprofile.StatisticQuietest)
	fmt.Println("| run | target | predicted | measured | p90 | round spread | within target | val acc | test acc | params | ops dropped for the target |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for i, r := range rows {
		tm := tms[i]
		target, within, dropped := "none", "-", "-"
		if r.lat != nil && r.lat.TargetMs > 0 {
			target = fmt.Sprintf("%.4f ms", r.lat.TargetMs)
			within = fmt.Sprintf("%v", tm.MedianMs <= r.lat.TargetMs)
			dropped = fmt.Sprint(len(r.lat.Dropped))
		}
		spread := slices.Max(tm.RoundMs) / slices.Min(tm.RoundMs)
		fmt.Printf("| %s | %s | %.4f ms | %.4f ms | %.4f ms | %.2fx | %s | %.2f %% | %.2f %% | %d | %s |\n",
			r.run, target, r.predMs, tm.MedianMs, tm.P90Ms, spread, within, 100*r.val, 100*r.test, r.params, dropped)
	}
	return nil
}

// load reads a pipeline run's search latency report (if any), prediction
// and retraining summary.
func load(prof *hwprofile.Profile, dir string) (row, error) {
	r := row{run: dir}
	b, err := os.ReadFile(filepath.Join(dir, pipeline.SearchDir, search.LatencyFile))
	switch {
	case err == nil:
		r.lat = &search.LatencyReport{}
		if err := json.Unmarshal(b, r.lat); err != nil {
			return r, fmt.Errorf("reading %s: %w", filepath.Join(dir, pipeline.SearchDir, search.LatencyFile), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return r, err
	}
	train := filepath.Join(dir, pipeline.TrainDir)
	pred, err := pipeline.PredictArch(prof, filepath.Join(train, pipeline.ArchFile), filepath.Join(train, pipeline.WeightsFile))
	if err != nil {
		return r, err
	}
	r.predMs = pred.TotalMs
	var sum pipeline.Summary
	b, err = os.ReadFile(filepath.Join(train, pipeline.SummaryFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		return r, fmt.Errorf("reading %s: %w", filepath.Join(train, pipeline.SummaryFile), err)
	}
	r.val, r.test, r.params = sum.ValAcc, sum.TestAcc, sum.Params
	return r, nil
}
