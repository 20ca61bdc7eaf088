// echo: a test workload. It serves HTTP on $PORT (default 8080), answers every request
// with "echo from <hostname>: <path>", and logs each request on stdout, so a test can
// reach the pod on its IP and read its log through the API server (kubectl logs).
// "echo print WORDS..." prints the words and exits: a command for kubectl exec.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "print" {
		fmt.Println(strings.Join(os.Args[2:], " "))
		return
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("request %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "echo from %s: %s\n", host, r.URL.Path)
	})
	log.Printf("echo listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
