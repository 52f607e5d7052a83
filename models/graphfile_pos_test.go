package models

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestReadGraphErrorPosition: a syntax or type error in an arch.json is
// reported as FILE:LINE:COL, at the byte where decoding failed, also inside a
// node (issue 17, weak: no line and column).
func TestReadGraphErrorPosition(t *testing.T) {
	good, err := tinyGraph().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	g := string(good)
	// Where `"kernel": 3` of node c1 starts, to build the expected positions.
	at := func(s, sub string) (line, col int) {
		i := strings.Index(s, sub)
		if i < 0 {
			t.Fatalf("%q not in the file", sub)
		}
		line = strings.Count(s[:i], "\n") + 1
		col = i - strings.LastIndex(s[:i], "\n")
		return line, col
	}
	kl, kc := at(g, `"kernel": 3`)
	ol, oc := at(g, `"output"`)
	cases := []struct {
		name, data string
		line, col  int
		want       string
	}{
		{"missing comma", "{\n  \"format\": \"bayesnas-graph/1\"\n  \"name\": \"x\"\n}\n", 3, 3, "invalid character '\"' after object key:value pair"},
		{"bad token", "{\n\t\"name\": tru\n}", 2, 13, "invalid character '\\n' in literal true"},
		{"truncated", "{\n  \"format\": ", 2, 13, "unexpected end of JSON input"},
		{"type in node", strings.Replace(g, `"kernel": 3`, `"kernel": "3"`, 1), kl, kc + len(`"kernel": "3"`) - 1, `node 0 "c1": json: cannot unmarshal string`},
		{"syntax in node", strings.Replace(g, `"kernel": 3`, `"kernel": 3x`, 1), kl, kc + len(`"kernel": 3x`) - 1, "invalid character 'x'"},
		{"type at top", strings.Replace(g, `"output": "fc"`, `"output": 7`, 1), ol, oc + len(`"output": 7`) - 1, "cannot unmarshal number"},
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "arch.json")
	for _, c := range cases {
		if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadGraph(p)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		prefix := "reading " + p + ":" + itoa(c.line) + ":" + itoa(c.col) + ": "
		if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error\n  %q\nwant prefix %q and %q", c.name, err, prefix, c.want)
		}
	}
}

func itoa(n int) string {
	return strconv.Itoa(n)
}
