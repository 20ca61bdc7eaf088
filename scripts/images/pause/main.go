// pause: the sandbox ("infrastructure") container of every pod, like Kubernetes'
// pause.c. It holds the pod's namespaces, reaps orphaned children, and exits 0 on
// SIGINT or SIGTERM. Built static (CGO_ENABLED=0) so the image needs no other file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
