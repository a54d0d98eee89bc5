// Huawei Cloud's own CodeArts Build SDK for Java
// (com.huaweicloud.sdk:huaweicloud-sdk-codeartsbuild), unmodified, against the
// sidecar: AK/SK-signed requests stop a build and read its status and
// history. The same steps as ../../../../test_codearts.py; it exits non-zero
// at the first step that fails.
//
// Environment: CODEARTS_ENDPOINT, CODEARTS_AK, CODEARTS_SK, CODEARTS_JOB_ID,
// CODEARTS_BUILD_NO, and optionally CODEARTS_PROJECT_ID (sent as
// X-Project-Id, default "cancel-operator").

import com.huaweicloud.sdk.codeartsbuild.v3.CodeArtsBuildClient;
import com.huaweicloud.sdk.codeartsbuild.v3.model.BuildStep;
import com.huaweicloud.sdk.codeartsbuild.v3.model.HistoryRecord;
import com.huaweicloud.sdk.codeartsbuild.v3.model.ShowHistoryDetailsRequest;
import com.huaweicloud.sdk.codeartsbuild.v3.model.ShowHistoryDetailsResponse;
import com.huaweicloud.sdk.codeartsbuild.v3.model.ShowJobStatusRequest;
import com.huaweicloud.sdk.codeartsbuild.v3.model.ShowListHistoryRequest;
import com.huaweicloud.sdk.codeartsbuild.v3.model.ShowListHistoryResponse;
import com.huaweicloud.sdk.codeartsbuild.v3.model.StopJobRequest;
import com.huaweicloud.sdk.codeartsbuild.v3.model.StopJobRequestBody;
import com.huaweicloud.sdk.core.auth.BasicCredentials;
import com.huaweicloud.sdk.core.exception.ServiceResponseException;
import java.util.List;
import java.util.Objects;

public final class CodeArts {
    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        if (value == null) {
            value = fallback;
        }
        if (value == null) {
            throw new IllegalStateException(name + " is not set");
        }
        return value;
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private static CodeArtsBuildClient client(String sk) {
        BasicCredentials credentials = new BasicCredentials()
            .withAk(env("CODEARTS_AK", null))
            .withSk(sk)
            .withProjectId(env("CODEARTS_PROJECT_ID", "cancel-operator"));
        return CodeArtsBuildClient.newBuilder()
            .withCredential(credentials)
            .withEndpoints(List.of(env("CODEARTS_ENDPOINT", null)))
            .build();
    }

    private final CodeArtsBuildClient client = client(env("CODEARTS_SK", null));
    private final String jobId = env("CODEARTS_JOB_ID", null);
    private final String buildNo = env("CODEARTS_BUILD_NO", null);
    private final int number = Integer.parseInt(buildNo);

    private boolean status() {
        return Boolean.TRUE.equals(
            client.showJobStatus(new ShowJobStatusRequest().withJobId(jobId)).getResult());
    }

    private ShowListHistoryResponse history() {
        return client.showListHistory(new ShowListHistoryRequest()
            .withJobId(jobId).withOffset(0).withLimit(10).withInterval(30));
    }

    private HistoryRecord record(ShowListHistoryResponse history) {
        List<HistoryRecord> records = history.getHistoryRecords();
        return records == null ? null : records.stream()
            .filter(r -> Objects.equals(r.getBuildNumber(), number))
            .findFirst()
            .orElse(null);
    }

    private Boolean stop() {
        return client.stopJob(new StopJobRequest()
            .withBody(new StopJobRequestBody().withJobId(jobId).withBuildNo(buildNo))).getResult();
    }

    private void run() throws InterruptedException {
        // A wrong secret key is refused.
        try {
            client("not-the-secret-key-of-this-access-key")
                .showJobStatus(new ShowJobStatusRequest().withJobId(jobId));
            check(false, "a wrong secret key was accepted");
        } catch (ServiceResponseException e) {
            check(e.getHttpStatusCode() == 401 && "CB.00060210".equals(e.getErrorCode()),
                "a wrong secret key: want 401 CB.00060210, got " + e);
        }

        check(status(), "the build is not running");
        ShowListHistoryResponse history = history();
        check(record(history) != null && history.getTotal() != null && history.getTotal() >= 1,
            "history lacks build " + number + ": " + history);

        check(Boolean.TRUE.equals(stop()), "stopping a running build did not answer true");
        long deadline = System.nanoTime() + 90_000_000_000L;
        while (status() && System.nanoTime() < deadline) {
            Thread.sleep(1000);
        }
        check(!status(), "the build still runs after it was stopped");

        ShowHistoryDetailsResponse details = client.showHistoryDetails(
            new ShowHistoryDetailsRequest().withJobId(jobId).withBuildNumber(number));
        check(Objects.equals(details.getBuildNumber(), number)
            && details.getBuildSteps() != null && !details.getBuildSteps().isEmpty(),
            "history details: " + details);
        for (BuildStep step : details.getBuildSteps()) {
            check(List.of("success", "error", "").contains(step.getStatus()),
                "a build step's status: " + step);
        }

        HistoryRecord stopped = record(history());
        check(stopped != null && "ABORTED".equals(stopped.getResult()),
            "the stopped build's history record: " + stopped);

        // Stopping it again: it has finished.
        check(Boolean.FALSE.equals(stop()), "stopping a finished build did not answer false");
        System.out.println("ok: the Java SDK stopped the build and read its status, history and details");
    }

    public static void main(String[] args) throws InterruptedException {
        new CodeArts().run();
    }
}
