package hwprofile

import (
	"bytes"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"

	"bayesnas/internal/allocs"
)

// rehashed decodes b as a profile (strictly, without Parse's checks) and
// writes it back with a correct hash, so that the fuzzer's mutations reach
// the checks behind the hash; nil when b does not decode.
func rehashed(b []byte) []byte {
	var p Profile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if dec.Decode(&p) != nil {
		return nil
	}
	out, err := p.Marshal()
	if err != nil {
		return nil
	}
	return out
}

// FuzzParseProfile parses a device latency profile (Parse), both as given
// and with its hash recomputed (so that mutations are not all stopped by
// the hash check).
//
// It asserts: no panic; bad input is an error; an accepted profile
// round-trips: Parse(Marshal(p)) succeeds and equals p (Marshal sorts the
// entries and calibrations, upgrades old Split/Concat keys and recomputes
// the hash, on p as well), and marshalling that again gives the same bytes;
// allocation stays below 2048 x the input's bytes + 4 MiB (the YAML
// decoder's nodes, and the document decoded twice).
func FuzzParseProfile(f *testing.F) {
	good, err := sampleProfile().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	old := sampleProfile()
	old.Entries = append(old.Entries,
		Entry{Key: Key{Kind: "Split 8,8", C: 16, H: 4, W: 4}, MedianMs: 0.01, P90Ms: 0.02, Repeats: 3},
		Entry{Key: Key{Kind: "Concat 4,4,4", C: 4, H: 4, W: 4}, MedianMs: 0.01, P90Ms: 0.01, Repeats: 3})
	if b, err := old.Marshal(); err == nil {
		f.Add(b)
	}
	f.Add(bytes.Replace(good, []byte("median_ms: 0.001"), []byte("median_ms: 0.002"), 1)) // hash mismatch
	f.Add([]byte("schema: bayesnas.profile/v1\nentries: [&a {kernel: x}, *a]\n"))
	f.Add([]byte(""))

	check := func(t *testing.T, b []byte) {
		var p *Profile
		var err error
		alloc := allocs.During(func() { p, err = Parse(b) })
		if bound := 2048*uint64(len(b)) + 4<<20; alloc > bound {
			t.Fatalf("allocated %d bytes for %d input bytes: bound %d", alloc, len(b), bound)
		}
		if err != nil {
			if p != nil {
				t.Fatalf("error %v with a profile", err)
			}
			return
		}
		w1, err := p.Marshal()
		if err != nil {
			t.Fatalf("writing an accepted profile: %v", err)
		}
		p2, err := Parse(w1)
		if err != nil {
			t.Fatalf("the written profile does not parse: %v\n%s", err, w1)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("parse(write(parse(x))) != parse(x):\n%+v\n%+v", p, p2)
		}
		w2, err := p2.Marshal()
		if err != nil || !bytes.Equal(w1, w2) {
			t.Fatalf("writing again gives other bytes (%v)", err)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
		if r := rehashed(b); r != nil {
			check(t, r)
		}
	})
}
