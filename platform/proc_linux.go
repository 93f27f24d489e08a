package platform

import "syscall"

// childAttrs puts a node process in its own process group (a Ctrl-C in
// the terminal reaches the parent only, which stops its children in
// order) and has the kernel send it SIGTERM if the parent dies.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
