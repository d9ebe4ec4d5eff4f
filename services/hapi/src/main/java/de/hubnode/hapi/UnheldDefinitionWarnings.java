package de.hubnode.hapi;

import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.hl7.fhir.instance.model.api.IBaseResource;

/**
 * Turns validator errors that only say "this definition is not here" into warnings: a profile, base
 * definition or extension definition that the node does not hold (packages the MII modules depend on
 * from outside GitHub, e.g. the German medication IG's DosageDE, MIABIS extensions, HL7 genomics
 * reporting, or another version of a profile than the one vendored).
 *
 * <p>Exists for the same reason the offline terminology warns: what the node cannot check is reported,
 * never passed silently, but it is not the data's fault. A message is downgraded only when it is one of
 * the validator's "not found / could not be resolved" messages AND a StructureDefinition URL it names is
 * indeed unknown to the validation support chain; every other error stays an error. The message is
 * prefixed so a reader sees why it is a warning.
 *
 * <p>One message names no URL: a reference resolved inside a Bundle whose every target profile is unheld
 * is "Invalid Resource target type. Found Patient, but expected one of ([])" (the MII consent's
 * {@code Consent.patient} targets the ConsentManagement Patient of de.einwilligungsmanagement, not
 * vendored). The empty list says the validator knew none of the element's target profiles (with no target
 * profile at all it does not check the type), so no resource could pass: it is downgraded too.
 */
@Interceptor
final class UnheldDefinitionWarnings {

	static final String PREFIX = "Not checked, definition not held on this node: ";

	private static final List<String> NOT_FOUND_PHRASES = List.of(
			"Unknown profile",
			"Failed to retrieve profile",
			"has not been checked because it could not be found",
			"could not be resolved",
			"Unknown base definition",
			"Unable to resolve");
	/** A reference's target type checked against no type at all: every target profile is unheld. */
	private static final Pattern NO_KNOWN_TARGET =
			Pattern.compile("Invalid Resource target type\\. Found \\w+, but expected one of \\(\\[\\]\\)");
	private static final Pattern URL = Pattern.compile("https?://[^\\s'\"\\]\\[(),]+");

	private final IValidationSupport chain;

	UnheldDefinitionWarnings(IValidationSupport chain) {
		this.chain = chain;
	}

	@Hook(Pointcut.VALIDATION_COMPLETED)
	public ValidationResult downgrade(IBaseResource resource, String rawResource, ValidationResult result) {
		for (SingleValidationMessage message : result.getMessages()) {
			if (message.getSeverity() == ResultSeverityEnum.ERROR && namesUnheldDefinition(message.getMessage())) {
				message.setSeverity(ResultSeverityEnum.WARNING);
				message.setMessage(PREFIX + message.getMessage());
			}
		}
		return result;
	}

	private boolean namesUnheldDefinition(String text) {
		if (text != null && NO_KNOWN_TARGET.matcher(text).find()) {
			return true;
		}
		if (text == null || NOT_FOUND_PHRASES.stream().noneMatch(text::contains)) {
			return false;
		}
		Matcher urls = URL.matcher(text);
		while (urls.find()) {
			String url = urls.group();
			if (url.contains("/StructureDefinition/") && chain.fetchStructureDefinition(url) == null) {
				return true;
			}
		}
		return false;
	}
}
