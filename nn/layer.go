package nn

// Layer is one kernel instance of a compiled network. Its input and output
// values, parameters and scratch buffers are bound when it is constructed.
//
// Forward reads the inputs' Data and overwrites the output's Data.
// Backward reads the output's Grad and ADDS into the inputs' Grad and the
// parameters' Grad (a value may feed several layers), so the network zeroes
// all gradients before a backward pass.
type Layer interface {
	Forward(train bool)
	Backward()
	Output() *Value
}
