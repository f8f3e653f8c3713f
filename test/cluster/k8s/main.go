// Multi-call binary: kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet, kube-proxy, kubectl and etcd in one executable. The component is
// chosen by the name the binary is called by (symlink) or by the first
// argument: `k8s kubelet --flags...`.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

var components = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if !isComponent(name) && len(os.Args) > 1 && isComponent(os.Args[1]) {
		name = os.Args[1]
		args = append([]string{name}, os.Args[2:]...)
		os.Args = args
	}
	switch {
	case name == "etcd":
		etcdmain.Main(args)
	case name == "kubectl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(args)) // nolint:errcheck
		command := kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
	case components[name] != nil:
		os.Exit(cli.Run(components[name]()))
	default:
		names := []string{"etcd", "kubectl"}
		for n := range components {
			names = append(names, n)
		}
		fmt.Fprintf(os.Stderr, "usage: %s COMPONENT [flags]\ncomponents: %s\n", filepath.Base(os.Args[0]), strings.Join(names, " "))
		os.Exit(2)
	}
}

func isComponent(n string) bool {
	return n == "etcd" || n == "kubectl" || components[n] != nil
}
