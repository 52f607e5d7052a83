//go:build !unix

package hwprofile

import "os/exec"

func ownProcessGroup(cmd *exec.Cmd) {}

// killGroup kills the plug-in process only: without process groups, what it
// started may outlive it.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}
