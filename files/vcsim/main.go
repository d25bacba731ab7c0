// vcsim-lab: the govmomi vCenter simulator on a given address, for tests and the lab,
// with changed block tracking (QueryChangedDiskAreas) from simulator/cbt.go.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (host:port)")
	user := flag.String("user", "user", "vCenter user name")
	pass := flag.String("password", "pass", "vCenter password")
	useTLS := flag.Bool("tls", true, "serve https")
	urlFile := flag.String("url-file", "", "write the service URL to this file when ready")
	vms := flag.Int("vms", 2, "virtual machines in the cluster (DC0_C0_RP0_VM0, _VM1, ...)")
	certFile := flag.String("cert", "", "PEM certificate to serve, made (with -key) when missing")
	keyFile := flag.String("key", "", "PEM private key of -cert, made when missing")
	methodDelay := flag.String("method-delay", "",
		"slow SOAP methods down like a busy vCenter: METHOD=MS,... (e.g. CreateSnapshot_Task=3000)")
	flag.Parse()
	delays, err := parseMethodDelay(*methodDelay)
	if err != nil {
		log.Fatal(err)
	}

	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = 1
	model.Host = 0
	model.ClusterHost = 1
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	// After Create, so that building the inventory is not slowed down.
	model.DelayConfig.MethodDelay = delays

	// Runs the endpoint hooks (the CBT registry hook of simulator/cbt.go) on
	// the registry Create made.
	model.Service.RegisterEndpoints = true
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		host, _, err := net.SplitHostPort(*listen)
		if err != nil {
			log.Fatal(err)
		}
		cert, err := loadOrCreateCertificate(*certFile, *keyFile, certNames(host))
		if err != nil {
			log.Fatal(err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	line := u.String()
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(line+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(line)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

// parseMethodDelay reads "Name=ms,Name=ms" into the simulator's per-method delays.
func parseMethodDelay(spec string) (map[string]int, error) {
	delays := map[string]int{}
	if spec == "" {
		return delays, nil
	}
	for _, item := range strings.Split(spec, ",") {
		name, ms, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(ms)
		if !ok || name == "" || err != nil || n < 0 {
			return nil, fmt.Errorf("-method-delay %q: want METHOD=MILLISECONDS,...", item)
		}
		delays[name] = n
	}
	return delays, nil
}
