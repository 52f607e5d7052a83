package hwprofile

import (
	"bufio"
	"os"
	"runtime"
	"strings"
)

// ThisMachine describes the machine this process runs on: the CPU model from
// /proc/cpuinfo, the logical core count, and the frequency governor where
// the kernel exposes it (a "powersave" governor makes timings drift).
func ThisMachine() DeviceInfo {
	d := DeviceInfo{Name: "this machine", CPU: "unknown", Cores: runtime.NumCPU()}
	if h, err := os.Hostname(); err == nil && h != "" {
		d.Name = h
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, ok := strings.Cut(s.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				d.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"); err == nil {
		d.Governor = strings.TrimSpace(string(b))
	}
	return d
}
