/*
 * GET /execution-parameters for multi-model-server, as a servingsdk endpoint plugin.
 *
 * SageMaker batch transform asks a container for its preferred MaxConcurrentTransforms, BatchStrategy and
 * MaxPayloadInMB. MMS 1.1.11 has no such route and its python handlers only see model requests, so this
 * tiny plugin answers it. container_serve/serve.py computes the JSON (ServeSettings.execution_parameters)
 * and passes it in the BYOC_EXECUTION_PARAMETERS environment variable; the plugin returns it verbatim.
 * BatchStrategy is spelled SINGLE_RECORD / MULTI_RECORD, as AWS documents this response ("Use your own
 * inference code with batch transform"); see container_serve.settings.BATCH_STRATEGIES.
 */
package byoc.mms;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

@Endpoint(
        urlPattern = "execution-parameters",
        endpointType = EndpointTypes.INFERENCE,
        description = "SageMaker batch transform execution parameters")
public class ExecutionParametersEndpoint extends ModelServerEndpoint {

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        String body = System.getenv("BYOC_EXECUTION_PARAMETERS");
        if (body == null || body.isEmpty()) {
            rsp.setStatus(404, "Not Found");
            body = "{\"error\": \"execution parameters are not configured\", \"code\": 404}";
        } else {
            rsp.setStatus(200, "OK");
        }
        rsp.setContentType("application/json");
        OutputStream out = rsp.getOutputStream();
        out.write(body.getBytes(StandardCharsets.UTF_8));
        out.flush();
    }
}
