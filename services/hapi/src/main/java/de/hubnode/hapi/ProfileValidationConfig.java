package de.hubnode.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.interceptor.api.IInterceptorService;
import ca.uhn.fhir.jpa.validation.JpaValidationSupportChain;
import ca.uhn.fhir.validation.IInstanceValidatorModule;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.r5.utils.validation.constants.BestPracticeWarningLevel;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Makes {@code $validate} profile-aware: HAPI's JPA validation support chain (core definitions from
 * DefaultProfileValidationSupport, snapshot generation, CommonCodeSystemsTerminologyService,
 * InMemoryTerminologyServerValidationSupport, the JPA terminology service) gets two supports in front:
 * our offline terminology answers and the vendored MII / German base profiles.
 *
 * <p>Exists because the chain HAPI builds knows only the FHIR core and what is stored in the database;
 * a resource declaring an MII profile in {@code meta.profile} would not be checked against it. The two
 * supports are inserted once every singleton exists (the chain assembles itself in its own
 * post-construct step), the offline terminology first so it answers expansions over code systems the
 * node does not hold before the JPA terminology service tries them. Errors that only say a definition
 * is not held become warnings ({@link UnheldDefinitionWarnings}). Every vendored profile's snapshot is
 * generated then, before the server listens ({@link ProfileSnapshots}).
 *
 * <p>Best-practice recommendations are not reported (HAPI's JPA server reports them as warnings): on MII
 * data they are the narrative of every resource ({@code dom-6}) and an Observation's performer, neither
 * of which an ETL's output has or the MII profiles ask for. They were a fifth of all warnings on the
 * KDS test bundles and hid the ones that matter.
 */
@Configuration(proxyBeanMethods = false)
public class ProfileValidationConfig {

	@Bean
	PrePopulatedValidationSupport vendoredProfileSupport(FhirContext fhirContext) {
		return VendoredProfiles.load(fhirContext);
	}

	@Bean
	OfflineTerminologySupport offlineTerminologySupport(FhirContext fhirContext) {
		return new OfflineTerminologySupport(fhirContext);
	}

	@Bean
	SmartInitializingSingleton profileValidationChain(
			JpaValidationSupportChain chain,
			PrePopulatedValidationSupport vendoredProfileSupport,
			OfflineTerminologySupport offlineTerminologySupport,
			IInstanceValidatorModule instanceValidator,
			IInterceptorService interceptors) {
		return () -> {
			((FhirInstanceValidator) instanceValidator).setBestPracticeWarningLevel(BestPracticeWarningLevel.Ignore);
			chain.addValidationSupport(0, vendoredProfileSupport);
			chain.addValidationSupport(0, offlineTerminologySupport);
			chain.invalidateCaches();
			interceptors.registerInterceptor(new UnheldDefinitionWarnings(chain));
			ProfileSnapshots.generate(chain, vendoredProfileSupport);
		};
	}
}
