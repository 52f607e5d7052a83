package pipeline

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a bar on a terminal (one line redrawn with \r) and, when the
// output is not a terminal, prints a plain line every few seconds: CI logs get
// no carriage returns. Training and the search share it.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	last  time.Time
	drawn bool
	// The first update of this process: the ETA uses the rate since then,
	// so a resumed run does not count the work it did not do.
	firstAt   time.Time
	firstDone int
}

func newProgress(w io.Writer, tty bool) *progress {
	return &progress{w: w, tty: tty, start: time.Now()}
}

// progressStep is one update: the phase ("epoch", "curvature") as number I
// of N, the batch within it, the running loss and accuracy when HasLoss,
// and how many units (batches) of the whole run's Total are Done.
type progressStep struct {
	Phase          string
	I, N           int
	Batch, Batches int
	HasLoss        bool
	Loss, Acc      float64
	Done, Total    int
}

func (p *progress) update(s progressStep) {
	if p.w == nil {
		return
	}
	now := time.Now()
	if p.firstAt.IsZero() {
		p.firstAt, p.firstDone = now, s.Done
	}
	every := 10 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every && s.Batch != s.Batches {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start).Round(time.Second)
	eta := "?"
	if s.Done > p.firstDone && s.Total >= s.Done {
		per := now.Sub(p.firstAt) / time.Duration(s.Done-p.firstDone)
		eta = (per * time.Duration(s.Total-s.Done)).Round(time.Second).String()
	}
	var stats string
	if s.HasLoss {
		stats = fmt.Sprintf(" loss %.4f acc %.2f%%", s.Loss, 100*s.Acc)
	}
	if p.tty {
		const width = 30
		fill := 0
		if s.Batches > 0 {
			fill = min(width, width*s.Batch/s.Batches)
		}
		fmt.Fprintf(p.w, "\r%s %d/%d [%s%s] %d/%d%s %s ETA %s\033[K", s.Phase, s.I, s.N,
			strings.Repeat("=", fill), strings.Repeat(" ", width-fill), s.Batch, s.Batches, stats, elapsed, eta)
		p.drawn = true
		return
	}
	fmt.Fprintf(p.w, "%s %d/%d batch %d/%d%s elapsed %s eta %s\n", s.Phase, s.I, s.N, s.Batch, s.Batches, stats, elapsed, eta)
}

// done ends the bar's line so the next log line starts clean.
func (p *progress) done() {
	if p.w != nil && p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
