package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Leftovers lists what a run left behind: live processes whose environment
// carries EnvRunTag=tag (every QEMU and server the harness starts), and
// mounts in this mount namespace at or below any of dirs (the rootfs, the
// cache, the scratch directory). It returns one human-readable line each.
func Leftovers(tag string, dirs ...string) ([]string, error) {
	var out []string
	procs, err := taggedProcesses(EnvRunTag + "=" + tag)
	if err != nil {
		return nil, err
	}
	out = append(out, procs...)
	mounts, err := mountsUnder(dirs...)
	if err != nil {
		return nil, err
	}
	return append(out, mounts...), nil
}

// Leftovers of this Env: its processes and any mount under the rootfs, the
// cache or the scratch directory.
func (e *Env) Leftovers() ([]string, error) {
	return Leftovers(e.Tag, e.Rootfs.Dir, e.Cache, e.Work)
}

func taggedProcesses(needle string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	self := os.Getpid()
	var out []string
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "environ"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		found := false
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == needle {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if isZombie(stat) {
			// A zombie holds no resources; it is reaped by its parent.
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		cmd := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if len(cmd) > 200 {
			cmd = cmd[:200] + "..."
		}
		out = append(out, fmt.Sprintf("process %d still running: %s", pid, cmd))
	}
	return out, nil
}

// isZombie reads the state field of /proc/PID/stat ("pid (comm) S ...").
func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func mountsUnder(dirs ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		mp := unescapeMount(fields[1])
		for _, d := range dirs {
			if d == "" {
				continue
			}
			d = filepath.Clean(d)
			if real, err := filepath.EvalSymlinks(d); err == nil {
				d = real
			}
			if mp == d || strings.HasPrefix(mp, d+"/") {
				out = append(out, fmt.Sprintf("mount left behind: %s (%s)", mp, fields[0]))
				break
			}
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes of /proc/mounts (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
