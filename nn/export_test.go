package nn

// The host updates, for the external tests' stand-in of a backend that
// brings its own optimizer kernels.
var (
	SGDHost  = sgdHost
	AdamHost = adamHost
)
