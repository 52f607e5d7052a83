package nn

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Pool runs index-parallel loops on a fixed set of goroutines. Run does not
// allocate when fn is a function value created once (kernels store theirs at
// construction), which keeps steady-state training steps allocation-free.
type Pool struct {
	workers int
	mu      sync.Mutex // serialises Run calls
	start   []chan struct{}
	done    sync.WaitGroup
	fn      func(worker, i int)
	n       int
	next    atomic.Int64
}

// MaxWorkers is the most worker threads any setting may ask for: four per
// core (runtime.NumCPU), and at least 8. More only costs memory and
// scheduling: a kernel's work is split in per-worker pieces.
func MaxWorkers() int { return max(8, 4*runtime.NumCPU()) }

// CheckWorkers checks a thread or worker count read from outside (a flag, a
// configuration key, an environment variable) named what: 0 means one per
// core, otherwise 1..MaxWorkers().
func CheckWorkers(what string, n int) error {
	if n < 0 || n > MaxWorkers() {
		return fmt.Errorf("%s = %d: want 0 (one per core) or 1..%d (4 per core on this machine's %d cores, at least 8)", what, n, MaxWorkers(), runtime.NumCPU())
	}
	return nil
}

// NewPool starts workers-1 goroutines (the caller is worker 0);
// workers <= 0 means runtime.GOMAXPROCS(0). A count above MaxWorkers is
// held to MaxWorkers (callers check settings with CheckWorkers first, so
// this only guards against a missed check starting thousands of threads).
func NewPool(workers int) *Pool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, MaxWorkers())
	p := &Pool{workers: workers, start: make([]chan struct{}, workers)}
	for w := 1; w < workers; w++ {
		p.start[w] = make(chan struct{})
		go p.loop(w)
	}
	return p
}

// Workers is the number of goroutines that Run uses, caller included.
func (p *Pool) Workers() int { return p.workers }

func (p *Pool) loop(w int) {
	for range p.start[w] {
		p.work(w)
		p.done.Done()
	}
}

func (p *Pool) work(w int) {
	for {
		i := int(p.next.Add(1) - 1)
		if i >= p.n {
			return
		}
		p.fn(w, i)
	}
}

// Run calls fn(worker, i) for every i in [0, n), spread over the workers;
// worker identifies the goroutine so fn can use per-worker scratch space.
// Results must not depend on which worker ran which i.
func (p *Pool) Run(n int, fn func(worker, i int)) {
	if n <= 0 {
		return
	}
	if p.workers == 1 || n == 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	p.mu.Lock()
	p.fn, p.n = fn, n
	p.next.Store(0)
	active := p.workers
	if n < active {
		active = n
	}
	p.done.Add(active - 1)
	for w := 1; w < active; w++ {
		p.start[w] <- struct{}{}
	}
	p.work(0)
	p.done.Wait()
	p.fn = nil
	p.mu.Unlock()
}
