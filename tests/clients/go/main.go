// Huawei Cloud's own CodeArts Build SDK for Go (huaweicloud-sdk-go-v3,
// services/codeartsbuild/v3), unmodified, against the sidecar: AK/SK-signed
// requests stop a build and read its status and history. The same steps as
// ../test_codearts.py; it exits non-zero at the first step that fails.
//
// Environment: CODEARTS_ENDPOINT, CODEARTS_AK, CODEARTS_SK, CODEARTS_JOB_ID,
// CODEARTS_BUILD_NO, and optionally CODEARTS_PROJECT_ID (sent as
// X-Project-Id, default "cancel-operator").
package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/auth/basic"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/config"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/core/sdkerr"
	codeartsbuild "github.com/huaweicloud/huaweicloud-sdk-go-v3/services/codeartsbuild/v3"
	"github.com/huaweicloud/huaweicloud-sdk-go-v3/services/codeartsbuild/v3/model"
)

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	if fallback == "" {
		fail("%s is not set", name)
	}
	return fallback
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func check(what string, err error) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func client(sk string) *codeartsbuild.CodeArtsBuildClient {
	credentials, err := basic.NewCredentialsBuilder().
		WithAk(env("CODEARTS_AK", "")).
		WithSk(sk).
		WithProjectId(env("CODEARTS_PROJECT_ID", "cancel-operator")).
		SafeBuild()
	check("credentials", err)
	hc, err := codeartsbuild.CodeArtsBuildClientBuilder().
		WithEndpoints([]string{env("CODEARTS_ENDPOINT", "")}).
		WithCredential(credentials).
		WithHttpConfig(config.DefaultHttpConfig().WithRetries(0)).
		SafeBuild()
	check("client", err)
	return codeartsbuild.NewCodeArtsBuildClient(hc)
}

func main() {
	c := client(env("CODEARTS_SK", ""))
	jobID := env("CODEARTS_JOB_ID", "")
	buildNo := env("CODEARTS_BUILD_NO", "")
	number64, err := strconv.ParseInt(buildNo, 10, 32)
	if err != nil {
		fail("CODEARTS_BUILD_NO %q: %v", buildNo, err)
	}
	number := int32(number64)

	// A wrong secret key is refused.
	_, err = client("not-the-secret-key-of-this-access-key").
		ShowJobStatus(&model.ShowJobStatusRequest{JobId: jobID})
	var refused *sdkerr.ServiceResponseError
	if !errors.As(err, &refused) || refused.StatusCode != 401 || refused.ErrorCode != "CB.00060210" {
		fail("a wrong secret key: want 401 CB.00060210, got %v", err)
	}

	status := func() bool {
		r, err := c.ShowJobStatus(&model.ShowJobStatusRequest{JobId: jobID})
		check("status", err)
		return r.Result != nil && *r.Result
	}
	history := func() *model.ShowListHistoryResponse {
		r, err := c.ShowListHistory(&model.ShowListHistoryRequest{
			JobId: jobID, Offset: 0, Limit: 10, Interval: 30,
		})
		check("history", err)
		return r
	}
	stop := func() bool {
		r, err := c.StopJob(&model.StopJobRequest{
			Body: &model.StopJobRequestBody{JobId: jobID, BuildNo: buildNo},
		})
		check("stop", err)
		return r.Result != nil && *r.Result
	}
	record := func(h *model.ShowListHistoryResponse) *model.HistoryRecord {
		if h.HistoryRecords == nil {
			return nil
		}
		i := slices.IndexFunc(*h.HistoryRecords, func(r model.HistoryRecord) bool {
			return r.BuildNumber != nil && *r.BuildNumber == number
		})
		if i < 0 {
			return nil
		}
		return &(*h.HistoryRecords)[i]
	}

	if !status() {
		fail("the build is not running")
	}
	h := history()
	if record(h) == nil || h.Total == nil || *h.Total < 1 {
		fail("history lacks build %d: %v", number, h)
	}

	if !stop() {
		fail("stopping a running build did not answer true")
	}
	deadline := time.Now().Add(90 * time.Second)
	for status() && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if status() {
		fail("the build still runs after it was stopped")
	}

	details, err := c.ShowHistoryDetails(&model.ShowHistoryDetailsRequest{
		JobId: jobID, BuildNumber: number,
	})
	check("details", err)
	if details.BuildNumber == nil || *details.BuildNumber != number ||
		details.BuildSteps == nil || len(*details.BuildSteps) == 0 {
		fail("history details: %v", details)
	}
	for _, step := range *details.BuildSteps {
		if step.Status == nil || !slices.Contains([]string{"success", "error", ""}, *step.Status) {
			fail("a build step's status: %v", step)
		}
	}

	if r := record(history()); r == nil || r.Result == nil || *r.Result != "ABORTED" {
		fail("the stopped build's history record: %v", r)
	}

	// Stopping it again: it has finished.
	if stop() {
		fail("stopping a finished build answered true")
	}
	fmt.Println("ok: the Go SDK stopped the build and read its status, history and details")
}
