// Package allocs measures what a piece of code allocates, for the tests
// that bound the memory a parser of outside input may take.
package allocs

import "runtime"

// During returns the bytes f allocates (runtime.MemStats.TotalAlloc: all
// allocations, not what is live afterwards). A GC first settles the
// counters of earlier work.
func During(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
