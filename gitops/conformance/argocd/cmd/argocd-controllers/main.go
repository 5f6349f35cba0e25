// Command argocd-controllers runs Argo CD's own application controller or repo server, linked from the same
// github.com/argoproj/argo-cd/v3 module (and so the same health code) as argocd-health:
//
//	argocd-controllers application-controller [flags of argocd-application-controller]
//	argocd-controllers repo-server [flags of argocd-repo-server]
//
// One binary for both, as Argo CD's image has one: the two share most of their packages, and linking them once
// halves the build. divbase_localcluster.argocd runs them against the local control plane.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	controller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
)

var commands = map[string]func() *cobra.Command{
	"application-controller": controller.NewCommand,
	"repo-server":            reposerver.NewCommand,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: argocd-controllers application-controller|repo-server [flags]")
		os.Exit(2)
	}
	cmd := commands[os.Args[1]]()
	cmd.SetArgs(os.Args[2:])
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
