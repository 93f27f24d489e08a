package platform

import "syscall"

// childAttrs puts a node process in its own process group (a Ctrl-C in
// the terminal reaches the parent only, which stops its children in
// order) and has the kernel send it SIGTERM if the parent dies.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// pauseChild stops (SIGSTOP) or continues (SIGCONT) a child process.
func pauseChild(pid int, pause bool) error {
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	return syscall.Kill(pid, sig)
}
