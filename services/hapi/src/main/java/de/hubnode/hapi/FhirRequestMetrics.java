package de.hubnode.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.servlet.ServletRequestDetails;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.TimeUnit;

/**
 * Counts and times every FHIR request as {@code hubnode_fhir_requests_seconds} by operation, resource
 * type and outcome class.
 *
 * <p>Exists because only the FHIR server knows which operation a URL was (read, search, transaction,
 * ...). Every label has a bounded set of values so no request can add a series: the operation is
 * HAPI's operation type code, the resource type only a type the server knows ({@code other}
 * otherwise, {@code none} for system-level calls), never an id or a search parameter.
 */
@Interceptor
public class FhirRequestMetrics {

	static final String NAME = "hubnode.fhir.requests";

	private static final Duration[] BUCKETS = {
		Duration.ofMillis(5), Duration.ofMillis(25), Duration.ofMillis(100), Duration.ofMillis(250),
		Duration.ofSeconds(1), Duration.ofMillis(2500), Duration.ofSeconds(10), Duration.ofSeconds(30)
	};

	private final MeterRegistry registry;
	private final Set<String> resourceTypes;

	public FhirRequestMetrics(MeterRegistry registry, FhirContext fhirContext) {
		this.registry = registry;
		this.resourceTypes = Set.copyOf(fhirContext.getResourceTypes());
	}

	/** Called once per request, after the response (success or OperationOutcome) has been written. */
	@Hook(Pointcut.SERVER_PROCESSING_COMPLETED)
	public void completed(RequestDetails request, ServletRequestDetails servletRequest) {
		int status = servletRequest == null ? 0 : servletRequest.getServletResponse().getStatus();
		Timer.builder(NAME)
				.description("FHIR requests answered, by operation, resource type and outcome class")
				.tag("operation", operation(request.getRestOperationType()))
				.tag("resource_type", resourceType(request.getResourceName()))
				.tag("outcome", outcome(status))
				.serviceLevelObjectives(BUCKETS)
				.register(registry)
				.record(request.getRequestStopwatch().getMillis(), TimeUnit.MILLISECONDS);
	}

	/** HAPI's code for the operation type ({@code search-type}, {@code read}, ...); {@code unknown} if none was bound. */
	static String operation(RestOperationTypeEnum type) {
		return type == null ? "unknown" : type.getCode();
	}

	String resourceType(String name) {
		if (name == null || name.isBlank()) {
			return "none";
		}
		return resourceTypes.contains(name) ? name : "other";
	}

	/** {@code 2xx}, {@code 4xx}, ...; {@code unknown} if no status was set. */
	static String outcome(int status) {
		return status >= 100 && status <= 599 ? (status / 100) + "xx" : "unknown";
	}
}
