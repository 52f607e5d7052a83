package nn

import (
	"errors"
	"fmt"
)

// Batches is a source of labelled batches in a fixed order per epoch;
// dataset.Batcher implements it.
type Batches interface {
	StartEpoch(epoch int)
	Next(x []float32, labels []int32) (n int, ok bool)
	BatchSize() int
}

// Evaluate returns the mean loss and the accuracy of net over every batch of
// b in evaluation mode (running BN statistics, no dropout). Training and the
// search's validation share it.
func Evaluate(net *Network, loss *SoftmaxCrossEntropy, b Batches) (meanLoss, acc float64, err error) {
	per := net.Input.PerSample()
	if max := cap(net.Input.Data) / per; b.BatchSize() > max {
		return 0, 0, fmt.Errorf("evaluate: batches of %d, the network is compiled for %d", b.BatchSize(), max)
	}
	x := make([]float32, b.BatchSize()*per)
	labels := make([]int32, b.BatchSize())
	b.StartEpoch(0)
	var lossSum float64
	var correct, seen int
	for {
		n, ok := b.Next(x, labels)
		if !ok {
			break
		}
		net.SetBatch(n)
		net.Input.SetHost(x[:n*per])
		net.Forward(false)
		l, c, err := net.Loss(*loss, labels[:n])
		if err != nil {
			return 0, 0, fmt.Errorf("evaluate: %w", err)
		}
		lossSum += l * float64(n)
		correct += c
		seen += n
	}
	if seen == 0 {
		return 0, 0, errors.New("evaluate: no images")
	}
	return lossSum / float64(seen), float64(correct) / float64(seen), nil
}
