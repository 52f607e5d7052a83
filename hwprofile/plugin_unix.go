//go:build unix

package hwprofile

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the plug-in in a process group of its own, so that
// killing it also kills what it started (an adb or ssh client, say).
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills the plug-in's process group.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Process.Kill()
}
