// Command fleetload is bench/fleet.py's load: N simulated agents, each with its own
// certificate, one mutual-TLS connection and a heartbeat every interval over HTTP/1.1
// keep-alive, sending exactly the bytes the real agent sends.
//
// It is written in Go, not Python, because the bench runs the plane and its load on one
// machine: Python agents cost about a core at 18,000 hosts (600 beats/s), which the
// plane then lacks, and their own event loops' delays land in the latencies measured.
// Real agents run on their own machines.
//
// Usage (bench/fleet.py drives it):
//
//	fleetload -dir DIR -port PORT -interval 30
//
// DIR holds ca.crt, host.key (one key for every agent) and NAME.crt for each name listed
// in DIR/names, one per line. The program loads every certificate, prints "ready N" and
// then reads commands on stdin, one per line:
//
//	go        start the agents (connections spread over one interval, beats over the next)
//	status    print "connected N": agents that have had a heartbeat answered
//	measure   open the measurement window: record latencies and count errors as such
//	done      stop, and print one JSON line with the results
//
// Latency runs from writing a request to reading the whole response head (a 204 has no
// body); connect time from dialling to the end of the TLS handshake.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type results struct {
	Lat        []float64 `json:"lat"`
	Connect    []float64 `json:"connect"`
	Errors     int       `json:"errors"`
	RampErrors int       `json:"ramp_errors"`
	Bytes      int       `json:"bytes"`
	LastError  string    `json:"last_error"`
}

type fleet struct {
	port      int
	interval  time.Duration
	roots     *x509.CertPool
	measuring atomic.Bool
	connected atomic.Int64
	mu        sync.Mutex
	out       results
}

func (f *fleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.measuring.Load() {
		f.out.Errors++
	} else {
		f.out.RampErrors++
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	f.out.LastError = msg
}

func (f *fleet) dial(ctx context.Context, cert tls.Certificate) (*tls.Conn, *bufio.Reader, error) {
	dialer := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 60 * time.Second},
		Config: &tls.Config{
			RootCAs:      f.roots,
			Certificates: []tls.Certificate{cert},
			ServerName:   "localhost",
		},
	}
	t0 := time.Now()
	conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port)))
	if err != nil {
		return nil, nil, err
	}
	f.mu.Lock()
	f.out.Connect = append(f.out.Connect, time.Since(t0).Seconds())
	f.mu.Unlock()
	tc := conn.(*tls.Conn)
	return tc, bufio.NewReaderSize(tc, 1024), nil
}

// sleep waits d, or less if the run ends; it reports whether the run goes on.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func request(name string) []byte {
	body := `{"n":1}`
	return []byte(fmt.Sprintf(
		"POST /agent/v1/hosts/%s/heartbeat HTTP/1.1\r\nHost: localhost\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", name, len(body), body))
}

// readHead reads a response head up to its blank line and returns it.
func readHead(r *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		head = append(head, line...)
		if len(line) <= 2 {
			return head, nil
		}
	}
}

func (f *fleet) agent(ctx context.Context, name string, cert tls.Certificate, start time.Time, rng *rand.Rand) {
	jitter := func(d time.Duration) time.Duration { return time.Duration(rng.Float64() * float64(d)) }
	// Connections are long-lived: open them spread over one interval, then beat, also
	// spread, so the window sees steady state rather than a handshake storm.
	if !sleep(ctx, time.Until(start.Add(jitter(f.interval)))) {
		return
	}
	conn, reader, err := f.dial(ctx, cert)
	if err != nil {
		f.fail(err)
	}
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	if !sleep(ctx, time.Until(start.Add(f.interval+jitter(f.interval)))) {
		return
	}
	req := request(name)
	counted := false
	for {
		if conn == nil {
			if conn, reader, err = f.dial(ctx, cert); err != nil {
				f.fail(err)
			}
		}
		if conn != nil {
			if !counted {
				f.connected.Add(1)
				counted = true
			}
			t0 := time.Now()
			head, err := func() ([]byte, error) {
				if _, err := conn.Write(req); err != nil {
					return nil, err
				}
				return readHead(reader)
			}()
			latency := time.Since(t0).Seconds()
			switch {
			case err != nil:
				f.fail(err)
				conn.Close()
				conn = nil
			case !bytes.HasPrefix(head, []byte("HTTP/1.1 204 ")):
				f.fail(fmt.Errorf("%.80s", head))
			case f.measuring.Load():
				f.mu.Lock()
				f.out.Lat = append(f.out.Lat, latency)
				f.out.Bytes = len(req) + len(head)
				f.mu.Unlock()
			}
		}
		wait := float64(f.interval) * (0.9 + 0.2*rng.Float64())
		if !sleep(ctx, time.Duration(wait)) {
			return
		}
	}
}

func load(dir string) ([]string, []tls.Certificate, *x509.CertPool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "names"))
	if err != nil {
		return nil, nil, nil, err
	}
	names := strings.Fields(string(raw))
	key, err := os.ReadFile(filepath.Join(dir, "host.key"))
	if err != nil {
		return nil, nil, nil, err
	}
	certs := make([]tls.Certificate, len(names))
	for i, name := range names {
		pem, err := os.ReadFile(filepath.Join(dir, name+".crt"))
		if err != nil {
			return nil, nil, nil, err
		}
		if certs[i], err = tls.X509KeyPair(pem, key); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, nil, nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, nil, nil, fmt.Errorf("no certificate in %s", filepath.Join(dir, "ca.crt"))
	}
	return names, certs, roots, nil
}

func main() {
	dir := flag.String("dir", "", "folder with names, ca.crt, host.key and NAME.crt files")
	port := flag.Int("port", 0, "the plane's agent port on 127.0.0.1")
	interval := flag.Float64("interval", 30, "seconds between heartbeats")
	flag.Parse()
	names, certs, roots, err := load(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetload:", err)
		os.Exit(2)
	}
	f := &fleet{port: *port, interval: time.Duration(*interval * float64(time.Second)), roots: roots}
	fmt.Printf("ready %d\n", len(names))
	ctx, cancel := context.WithCancel(context.Background())
	var agents sync.WaitGroup
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		switch lines.Text() {
		case "go":
			start := time.Now()
			for i := range names {
				agents.Add(1)
				go func(i int) {
					defer agents.Done()
					f.agent(ctx, names[i], certs[i], start, rand.New(rand.NewSource(int64(i))))
				}(i)
			}
		case "status":
			fmt.Printf("connected %d\n", f.connected.Load())
		case "measure":
			f.measuring.Store(true)
		case "done":
			f.measuring.Store(false)
			cancel()
			agents.Wait()
			out, _ := json.Marshal(&f.out)
			fmt.Println(string(out))
			return
		}
	}
	cancel()
}
