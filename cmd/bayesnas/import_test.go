package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"bayesnas/internal/fixtures"
	"bayesnas/models"
)

// fixture finds ProxylessNAS's released network in the repository's fixtures.
func fixture(t *testing.T) string {
	t.Helper()
	return fixtures.MustPath(t, "proxylessnas_cifar10_net.config")
}

func runImport(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot("")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"import"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestImportProxylessNASCommand(t *testing.T) {
	arch := filepath.Join(t.TempDir(), "arch.json")
	out, err := runImport(t, "proxylessnas", fixture(t), "--out", arch)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "parameters: 5731530 (5.732 M)") || !strings.Contains(out, "wrote "+arch) {
		t.Errorf("output:\n%s", out)
	}
	// The file is what train --arch reads (models.ReadGraph).
	g, err := models.ReadGraph(arch)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := g.Count(); err != nil || c.Params != 5731530 {
		t.Errorf("arch.json: %d parameters, %v", c.Params, err)
	}
}

func TestImportErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "net.config")
	if err := os.WriteFile(bad, []byte(`{"name": "PyramidTreeNet", "blocks": [{"name": "TransitionBlock", "layers": [{"name": "ConvLayer", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 1, "dilation": 1, "groups": 1, "bias": false, "has_shuffle": false, "use_bn": false, "act_func": null, "dropout_rate": 0, "ops_order": "bn_act_weight", "width_mult": 1}]}], "classifier": null}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"missing file": {[]string{"proxylessnas", "nope.config"}, "nope.config"},
		"bad field":    {[]string{"proxylessnas", bad}, `block 0 (TransitionBlock): layers[0] (ConvLayer): unknown field "width_mult"`},
		"no file":      {[]string{"proxylessnas"}, "accepts 1 arg"},
		"bad format":   {[]string{"darts", bad}, `unknown command "darts"`},
		"no format":    {nil, "give the source format"},
	} {
		out, err := runImport(t, c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("%s: error %v (output %q), want one containing %q", name, err, out, c.want)
		}
	}
}
