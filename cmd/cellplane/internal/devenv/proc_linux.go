package devenv

import "syscall"

// childAttrs puts a node process in its own process group (a Ctrl-C in
// the terminal reaches the dev process only, which stops its children in
// order) and has the kernel send it SIGTERM if the dev process dies.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
