// Command argocd-health computes the health of custom resources with Argo CD's own code, the way its application
// controller does (controller/health.go, setApplicationHealth): the resource overrides come from an argocd-cm
// ConfigMap through Argo CD's SettingsManager (util/settings, so the ConfigMap keys are parsed by Argo CD, e.g.
// resource.customizations.health.<group>_<kind> and resource.customizations.useOpenLibs.<group>_<kind>), the
// health through gitops-engine's health.GetResourceHealth with util/lua's ResourceHealthOverrides.
//
// Input: JSON lines {"argocdCM": {<data of argocd-cm>}, "object": {<live object>}} on stdin.
// Output: one JSON line per input, {"status": ..., "message": ..., "error": ...}; error is what
// GetResourceHealth returned (the controller logs it; the resource then shows status Unknown with the message).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/argoproj/gitops-engine/pkg/health"
	log "github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/argoproj/argo-cd/v3/common"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

const namespace = "argocd"

type request struct {
	ArgoCDCM map[string]string `json:"argocdCM"`
	Object   json.RawMessage   `json:"object"`
}

type response struct {
	Status  health.HealthStatusCode `json:"status"`
	Message string                  `json:"message"`
	Error   string                  `json:"error,omitempty"`
}

// overrides returns what the application controller reads from argocd-cm (SettingsManager.GetResourceOverrides).
func overrides(data map[string]string) (map[string]appv1.ResourceOverride, error) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      common.ArgoCDConfigMapName,
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/part-of": "argocd"},
		},
		Data: data,
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name:      common.ArgoCDSecretName,
		Namespace: namespace,
		Labels:    map[string]string{"app.kubernetes.io/part-of": "argocd"},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr := settings.NewSettingsManager(ctx, fake.NewClientset(cm, secret), namespace)
	return mgr.GetResourceOverrides()
}

func evaluate(req request, cache map[string]map[string]appv1.ResourceOverride) response {
	key, _ := json.Marshal(req.ArgoCDCM) // map keys are sorted: a canonical key
	ov, ok := cache[string(key)]
	if !ok {
		var err error
		if ov, err = overrides(req.ArgoCDCM); err != nil {
			return response{Error: fmt.Sprintf("argocd-cm: %v", err)}
		}
		cache[string(key)] = ov
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(req.Object); err != nil {
		return response{Error: fmt.Sprintf("object: %v", err)}
	}
	// as controller/health.go: health.GetResourceHealth(res.Live, lua.ResourceHealthOverrides(resourceOverrides))
	hs, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(ov))
	out := response{}
	if hs != nil {
		out.Status, out.Message = hs.Status, hs.Message
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetLevel(log.WarnLevel)
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	cache := map[string]map[string]appv1.ResourceOverride{}
	dec := json.NewDecoder(in)
	for {
		var req request
		if err := dec.Decode(&req); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "argocd-health: bad input: %v\n", err)
			os.Exit(2)
		}
		if err := out.Encode(evaluate(req, cache)); err != nil {
			fmt.Fprintf(os.Stderr, "argocd-health: %v\n", err)
			os.Exit(1)
		}
	}
}
