package de.hubnode.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.ConceptValidationOptions;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.context.support.ValidationSupportContext;
import ca.uhn.fhir.context.support.ValueSetExpansionOptions;
import java.util.HashSet;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.ValueSet;

/**
 * Answers for terminology this node cannot check offline: code systems it does not hold in full
 * (SNOMED CT, LOINC, ICD-10-GM, OPS, ATC, ICD-O-3, Orphanet, HPO, ... — any system for which neither a
 * complete CodeSystem resource is held nor HAPI's built-in common code systems know it).
 *
 * <p>Exists because without it a code from such a system either passes silently or, worse, HAPI's JPA
 * terminology service tries to expand a value set over a versioned SNOMED CT edition and fails with
 * HAPI-0888 (HTTP 500 on a cold server, seen with the ICU and imaging profiles). Placed first in the
 * validation support chain it (1) reports every code from a system not held as a WARNING "cannot be
 * checked offline", never as valid and never as an error, and (2) answers the expansion of any value set
 * that draws on such a system (directly or through nested value sets) with a failed expansion, so no
 * later support attempts it.
 */
final class OfflineTerminologySupport implements IValidationSupport {

	static final String CANNOT_CHECK = "cannot be checked offline";

	private final FhirContext ctx;
	private final CommonCodeSystemsTerminologyService common;
	private final Map<String, Boolean> heldSystems = new ConcurrentHashMap<>();
	private final Map<String, Optional<String>> unheldSystemOfValueSet = new ConcurrentHashMap<>();

	OfflineTerminologySupport(FhirContext ctx) {
		this.ctx = ctx;
		this.common = new CommonCodeSystemsTerminologyService(ctx);
	}

	@Override
	public FhirContext getFhirContext() {
		return ctx;
	}

	@Override
	public String getName() {
		return "hubnode-offline-terminology";
	}

	@Override
	public void invalidateCaches() {
		heldSystems.clear();
		unheldSystemOfValueSet.clear();
	}

	@Override
	public boolean isCodeSystemSupported(ValidationSupportContext context, String system) {
		return system != null && !held(context, system);
	}

	@Override
	public CodeValidationResult validateCode(
			ValidationSupportContext context,
			ConceptValidationOptions options,
			String system,
			String code,
			String display,
			String valueSetUrl) {
		if (system == null || held(context, system)) {
			return null;
		}
		return cannotCheck(system, code);
	}

	@Override
	public boolean isValueSetSupported(ValidationSupportContext context, String valueSetUrl) {
		IBaseResource vs = context.getRootValidationSupport().fetchValueSet(valueSetUrl);
		return vs instanceof ValueSet valueSet && unheldSystem(context, valueSet, new HashSet<>()).isPresent();
	}

	@Override
	public CodeValidationResult validateCodeInValueSet(
			ValidationSupportContext context,
			ConceptValidationOptions options,
			String system,
			String code,
			String display,
			IBaseResource valueSet) {
		if (system != null && !held(context, system)) {
			return cannotCheck(system, code);
		}
		// A code from a held system in a value set that also draws on systems not held: the other
		// supports check it against the parts they can expand.
		return null;
	}

	@Override
	public ValueSetExpansionOutcome expandValueSet(
			ValidationSupportContext context, ValueSetExpansionOptions options, IBaseResource valueSet) {
		if (!(valueSet instanceof ValueSet vs)) {
			return null;
		}
		return unheldSystem(context, vs, new HashSet<>())
				.map(system -> new ValueSetExpansionOutcome(
						"ValueSet " + vs.getUrl() + " draws on " + system + ", which this node does not hold in full: "
								+ "its expansion " + CANNOT_CHECK,
						false))
				.orElse(null);
	}

	private CodeValidationResult cannotCheck(String system, String code) {
		String message = "Code '" + code + "' of " + system + " " + CANNOT_CHECK
				+ " (the code system is not held in full on this node)";
		return new CodeValidationResult()
				.setSeverity(IssueSeverity.WARNING)
				.setMessage(message)
				.addIssue(new CodeValidationIssue(
						message,
						IssueSeverity.WARNING,
						CodeValidationIssueCode.NOT_FOUND,
						CodeValidationIssueCoding.NOT_FOUND));
	}

	/** Whether the node holds the code system in full: a complete CodeSystem resource or a built-in one. */
	private boolean held(ValidationSupportContext context, String system) {
		String url = VendoredProfiles.unversioned(system);
		return heldSystems.computeIfAbsent(url, u -> {
			if (common.isCodeSystemSupported(context, u)) {
				return true;
			}
			IBaseResource cs = context.getRootValidationSupport().fetchCodeSystem(u);
			return cs instanceof CodeSystem codeSystem
					&& codeSystem.getContent() == CodeSystem.CodeSystemContentMode.COMPLETE;
		});
	}

	/** The first code system not held that the value set draws on, nested value sets included. */
	private Optional<String> unheldSystem(ValidationSupportContext context, ValueSet vs, Set<String> visiting) {
		String key = vs.getUrl();
		if (key != null) {
			Optional<String> cached = unheldSystemOfValueSet.get(key);
			if (cached != null) {
				return cached;
			}
			if (!visiting.add(key)) {
				return Optional.empty(); // a cycle: the outer call decides
			}
		}
		Optional<String> found = Optional.empty();
		for (ValueSet.ConceptSetComponent part : vs.getCompose().getInclude()) {
			found = unheldSystem(context, part, visiting);
			if (found.isPresent()) {
				break;
			}
		}
		if (found.isEmpty()) {
			for (ValueSet.ConceptSetComponent part : vs.getCompose().getExclude()) {
				found = unheldSystem(context, part, visiting);
				if (found.isPresent()) {
					break;
				}
			}
		}
		if (key != null) {
			unheldSystemOfValueSet.put(key, found);
		}
		return found;
	}

	private Optional<String> unheldSystem(
			ValidationSupportContext context, ValueSet.ConceptSetComponent part, Set<String> visiting) {
		if (part.hasSystem() && !held(context, part.getSystem())) {
			return Optional.of(part.getSystem() + (part.hasVersion() ? "|" + part.getVersion() : ""));
		}
		for (CanonicalType ref : part.getValueSet()) {
			IBaseResource nested = context.getRootValidationSupport().fetchValueSet(VendoredProfiles.canonical(ref));
			if (nested instanceof ValueSet nestedVs) {
				Optional<String> found = unheldSystem(context, nestedVs, visiting);
				if (found.isPresent()) {
					return found;
				}
			}
		}
		return Optional.empty();
	}
}
