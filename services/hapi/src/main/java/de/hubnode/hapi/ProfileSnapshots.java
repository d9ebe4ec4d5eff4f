package de.hubnode.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import java.util.ArrayList;
import java.util.List;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.validator.WorkerContextValidationSupportAdapter;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.StructureDefinition;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Generates the snapshot of every vendored profile, one after another, before the server takes a request.
 *
 * <p>Exists because HAPI generates a profile's snapshot the first time a resource declares it, and two
 * generations at once can corrupt the base definition they share (hapi-fhir#8034, open for 8.0 to 8.10):
 * a valid resource is then refused with "Index 0 out of bounds for length 0". A HAPI that has just
 * started (a rolling update, a restart) and is sent several validations at once would hit it. HAPI keeps
 * each generated snapshot on the profile for good (the resource's user data), so after this no request
 * generates one and the validator only reads. The cost is paid once per start, in seconds (logged).
 */
final class ProfileSnapshots {

	private static final Logger LOG = LoggerFactory.getLogger(ProfileSnapshots.class);

	private ProfileSnapshots() {}

	/** Generate the snapshots of `vendored`'s profiles through `chain`, the support the validator asks. */
	static void generate(IValidationSupport chain, PrePopulatedValidationSupport vendored) {
		long started = System.nanoTime();
		WorkerContextValidationSupportAdapter context =
				WorkerContextValidationSupportAdapter.newVersionSpecificWorkerContextWrapper(chain);
		List<String> failed = new ArrayList<>();
		List<IBaseResource> profiles = vendored.fetchAllStructureDefinitions();
		for (IBaseResource profile : profiles) {
			String url = ((StructureDefinition) profile).getUrl();
			try {
				context.fetchResource(org.hl7.fhir.r5.model.StructureDefinition.class, url);
			} catch (RuntimeException e) {
				failed.add(url + " (" + e.getMessage() + ")");
			}
		}
		LOG.info(
				"snapshots of {} vendored profiles generated in {} ms",
				profiles.size() - failed.size(),
				(System.nanoTime() - started) / 1_000_000);
		if (!failed.isEmpty()) {
			LOG.warn(
					"{} vendored profiles got no snapshot now; HAPI tries again when a resource declares one: {}",
					failed.size(),
					failed);
		}
	}
}
