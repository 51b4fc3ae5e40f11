// vcsim: serve govmomi's vSphere simulator on one TCP listener.
//
// Debian's golang-github-vmware-govmomi-dev ships the simulator library but
// not this command.  build.py compiles it against a patched private copy of
// the library (see fixes.py).  It prints "VCSIM_URL=<sdk url>" on stdout
// once the server accepts connections and runs until SIGINT/SIGTERM.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := flag.String("model", "vpx", "vpx (vCenter) or esx (standalone host)")
	clusters := flag.Int("clusters", 1, "clusters per datacenter (vpx)")
	clusterHosts := flag.Int("cluster-hosts", 3, "hosts per cluster (vpx)")
	hosts := flag.Int("standalone-hosts", 0, "standalone hosts per datacenter (vpx)")
	vms := flag.Int("vms", 2, "VMs per cluster and per standalone host")
	datastores := flag.Int("datastores", 1, "local datastores (LocalDS_<n>)")
	listen := flag.String("listen", "127.0.0.1:0", "address:port to listen on (port 0: any free port)")
	cert := flag.String("tls-cert", "", "PEM server certificate (empty: plain HTTP)")
	key := flag.String("tls-key", "", "PEM private key of -tls-cert")
	user := flag.String("username", "user", "the only user name accepted by Login")
	password := flag.String("password", "pass", "the only password accepted by Login")
	flag.Parse()

	var m *simulator.Model
	switch *model {
	case "vpx":
		m = simulator.VPX()
		m.Cluster = *clusters
		m.ClusterHost = *clusterHosts
		m.Host = *hosts
	case "esx":
		m = simulator.ESX()
	default:
		log.Fatalf("unknown -model %q: use vpx or esx", *model)
	}
	m.Machine = *vms
	m.Datastore = *datastores
	// Do not power the model's own VMs on: tests start from a known state.
	m.Autostart = false

	if err := m.Create(); err != nil {
		log.Fatalf("creating the %s model failed: %s", *model, err)
	}
	defer m.Remove()

	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("loading -tls-cert/-tls-key failed: %s", err)
		}
		m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}

	server := m.Service.NewServer()
	defer server.Close()

	// NewServer has started serving before it returns, so this line means
	// "ready".  Strip the credentials: the caller already knows them.
	ready := *server.URL
	ready.User = nil
	fmt.Printf("VCSIM_URL=%s\n", ready.String())
	_ = os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
