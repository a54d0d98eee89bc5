// Prints AK/SK signing test vectors made by Huawei Cloud's own Go SDK signer
// (huaweicloud-sdk-go-v3 core/auth/signer, the version go.mod pins). The Go
// vectors in src/sidecar/aksk.rs are this program's output:
//
//	cd tests/clients/go && go run ./vectors
//
// Each request carries the headers the SDK's client adds before it signs
// (Content-Type, User-Agent, X-Project-Id) and a fixed X-Sdk-Date, so the
// output never changes. The SDK does not sign Host.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/signer"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/request"
)

const (
	ak   = "QTWAOYTTINDUT2QVKYUC"
	sk   = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
	date = "20260102T030405Z"
	host = "127.0.0.1:8153"
)

type query struct {
	key   string
	value any
}

func main() {
	requests := []struct {
		name, method, path string
		query              []query
		body               any
	}{
		{"stop", "POST", "/v3/jobs/stop", nil,
			map[string]string{"job_id": "f9d6c8466d614a9788e9a0acf6c15f46", "build_no": "20"}},
		{"status", "GET", "/v3/jobs/f9d6c8466d614a9788e9a0acf6c15f46/status", nil, nil},
		{"history", "GET", "/v3/jobs/demo/history",
			[]query{{"offset", 0}, {"limit", 10}, {"interval", 30}}, nil},
		{"encoded", "POST", "/v3/jobs/my job/3/stop",
			[]query{{"b", "x y"}, {"a", "é~*"}}, nil},
	}
	out := json.NewEncoder(os.Stdout)
	for _, r := range requests {
		b := request.NewHttpRequestBuilder().
			WithEndpoint("http://"+host).
			WithPath(r.path).
			WithMethod(r.method).
			AddHeaderParam("Content-Type", "application/json").
			AddHeaderParam("User-Agent", "huaweicloud-usdk-go/3.0").
			AddHeaderParam("X-Project-Id", "cancel-operator").
			AddHeaderParam("X-Sdk-Date", date)
		for _, q := range r.query {
			b.AddQueryParam(q.key, reflect.ValueOf(q.value))
		}
		if r.body != nil {
			b.WithBody("application/json", r.body)
		}
		req := b.Build()
		signed, err := signer.Sign(req, ak, sk)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for k, v := range signed {
			req.AddHeaderParam(k, v)
		}
		sent, err := req.ConvertRequest()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body := []byte{}
		if sent.Body != nil {
			body, _ = io.ReadAll(sent.Body)
		}
		_ = out.Encode(map[string]any{
			"name":    r.name,
			"method":  sent.Method,
			"path":    sent.URL.EscapedPath(),
			"query":   sent.URL.RawQuery,
			"headers": req.GetHeaderParams(),
			"body":    string(body),
		})
	}
}
