// Command localcluster is one multicall binary holding the real Kubernetes control plane components (and kube-proxy for the pod network), so a
// machine without a container engine can run a genuine apiserver, controller-manager, scheduler, etcd and
// kubectl built from their Go modules. One binary links the shared code once (faster to build, smaller on
// disk); it dispatches on the name it was invoked as (symlinks) or on its first argument.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // CronJob time zones, as upstream's apiserver/controller-manager mains do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream mains
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl auth plugins
)

var commands = map[string]func(args []string) int{
	"kube-apiserver": func(args []string) int {
		return runCobra(apiserver.NewAPIServerCommand(), args)
	},
	"kube-controller-manager": func(args []string) int {
		return runCobra(controllermanager.NewControllerManagerCommand(), args)
	},
	"kube-proxy": func(args []string) int {
		return runCobra(proxy.NewProxyCommand(), args)
	},
	"kube-scheduler": func(args []string) int {
		return runCobra(scheduler.NewSchedulerCommand(), args)
	},
	"etcd": func(args []string) int {
		etcdmain.Main(os.Args)
		return 0
	},
	"kubectl": func(args []string) int {
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
		command := kubectlcmd.NewDefaultKubectlCommand()
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	},
}

// runCobra runs an upstream cobra command exactly as its own main would (cobra reads os.Args, which main
// has already rewritten to look like a direct invocation).
func runCobra(cmd *cobra.Command, _ []string) int {
	return cli.Run(cmd)
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := commands[name]; !ok {
		if len(args) == 0 || commands[args[0]] == nil {
			names := make([]string, 0, len(commands))
			for n := range commands {
				names = append(names, n)
			}
			fmt.Fprintf(os.Stderr, "usage: %s {%s} [args...] (or invoke through a symlink of that name)\n",
				name, strings.Join(names, "|"))
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	os.Args = append([]string{name}, args...)
	os.Exit(commands[name](args))
}
