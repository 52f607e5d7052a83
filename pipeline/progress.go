package pipeline

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a bar on a terminal (one line redrawn with \r) and, when the
// output is not a terminal, prints a plain line every few seconds: CI logs get
// no carriage returns.
type progress struct {
	w     io.Writer
	tty   bool
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty} }

func (p *progress) update(epoch, epochs, batch, batches int, loss, acc float64) {
	if p.w == nil {
		return
	}
	now := time.Now()
	every := 10 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every && batch != batches {
		return
	}
	p.last = now
	if p.tty {
		const width = 30
		fill := width * batch / batches
		fmt.Fprintf(p.w, "\repoch %d/%d [%s%s] %d/%d loss %.4f acc %.2f%%", epoch, epochs,
			strings.Repeat("=", fill), strings.Repeat(" ", width-fill), batch, batches, loss, 100*acc)
		p.drawn = true
		return
	}
	fmt.Fprintf(p.w, "epoch %d/%d batch %d/%d loss %.4f acc %.2f%%\n", epoch, epochs, batch, batches, loss, 100*acc)
}

// done ends the bar's line so the next log line starts clean.
func (p *progress) done() {
	if p.w != nil && p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
