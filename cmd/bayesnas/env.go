package main

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"bayesnas/pipeline"
	"bayesnas/search"
)

// envPrefix starts every environment variable bayesnas reads.
const envPrefix = "BAYESNAS_"

// toolVariables are the BAYESNAS_* variables that are not configuration
// keys: the set-up cache, the plug-in's onnxruntime-web directory and the
// BLAS re-execution's markers.
var toolVariables = []string{"BAYESNAS_CACHE", "BAYESNAS_ORTWEB_DIR", "BAYESNAS_BLAS_REEXEC", "BAYESNAS_BLAS_HELPER"}

// envOpenPrefixes hold free-form keys (a builder's parameters).
var envOpenPrefixes = []string{"BAYESNAS_MODEL_PARAMS_", "BAYESNAS_RETRAIN_PARAMS_"}

// envName is the variable that sets a configuration key: train.lr is
// BAYESNAS_TRAIN_LR.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// knownEnv maps every variable that any command reads to its key (the
// variable itself for toolVariables). Every command knows every command's
// variables: a CI job sets them once for all its steps.
func knownEnv() map[string]string {
	known := map[string]string{}
	for _, m := range []map[string]any{pipeline.Defaults(), pipeline.PipelineDefaults()} {
		for k := range m {
			known[envName(k)] = k
		}
	}
	var walk func(t reflect.Type, key string)
	walk = func(t reflect.Type, key string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, key+name+".")
				continue
			}
			known[envName(key+name)] = key + name
		}
	}
	walk(reflect.TypeOf(search.DefaultConfig()), "search.")
	for _, v := range toolVariables {
		known[v] = v
	}
	return known
}

// checkEnvironment refuses a BAYESNAS_* variable that no command reads (a
// misspelt BAYESNAS_TRAIN_LERNRATE would otherwise be silently ignored, as
// an unknown key in a config file is not), naming it and the nearest known
// variable.
func checkEnvironment(environ []string) error {
	known := knownEnv()
	var bad []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if _, ok := known[name]; ok {
			continue
		}
		open := false
		for _, p := range envOpenPrefixes {
			open = open || (strings.HasPrefix(name, p) && len(name) > len(p))
		}
		if !open {
			bad = append(bad, name)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	near := nearest(bad[0], known)
	more := ""
	if len(bad) > 1 {
		more = fmt.Sprintf(" (and %d more: %s)", len(bad)-1, strings.Join(bad[1:], ", "))
	}
	hint := fmt.Sprintf("did you mean %s", near)
	if k := known[near]; k != near {
		hint += fmt.Sprintf(" (%s)", k)
	}
	return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("environment: %s is not a setting bayesnas reads; %s?%s", bad[0], hint, more))
}

// nearest returns the known variable closest to name by edit distance
// (ties: the first in order).
func nearest(name string, known map[string]string) string {
	names := make([]string, 0, len(known))
	for k := range known {
		names = append(names, k)
	}
	sort.Strings(names)
	best, bestD := "", -1
	for _, k := range names {
		if d := editDistance(name, k); bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
