package de.hubnode.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.parser.IParser;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.CanonicalType;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.MetadataResource;
import org.hl7.fhir.r4.model.StructureDefinition;
import org.hl7.fhir.r4.model.ValueSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The MII core data set profiles, the MII base/meta profiles and the German base profiles as a
 * validation support: every file listed in {@code profiles/INDEX} on the classpath (written by
 * {@code scripts/refresh-profiles}, sources in {@code profiles/SOURCE.md}).
 *
 * <p>Exists so {@code $validate} can check a resource against the profiles it declares without any
 * network access: the resources ship inside the jar, are parsed once at start-up and never change at run
 * time. Where two packages define the same canonical URL the first one in INDEX wins, as the manifest's
 * package order says.
 */
final class VendoredProfiles {

	private static final Logger LOG = LoggerFactory.getLogger(VendoredProfiles.class);
	static final String INDEX = "profiles/INDEX";
	/** Where the FHIR R4 core definitions live (DefaultProfileValidationSupport holds all of them). */
	private static final String CORE = "http://hl7.org/fhir/StructureDefinition/";

	private VendoredProfiles() {}

	/**
	 * A locked PrePopulatedValidationSupport holding every vendored resource, except profiles whose base
	 * definition chain does not end in the FHIR core: their snapshot cannot be generated, so they are left
	 * out (and logged) and a resource declaring one gets the warning for a profile the node does not hold.
	 */
	static PrePopulatedValidationSupport load(FhirContext ctx) {
		long started = System.nanoTime();
		ClassLoader loader = VendoredProfiles.class.getClassLoader();
		IParser json = ctx.newJsonParser();
		IParser xml = ctx.newXmlParser();
		Map<String, MetadataResource> byKey = new LinkedHashMap<>();
		for (String path : index(loader)) {
			IBaseResource resource = parse(loader, "profiles/" + path, path.endsWith(".xml") ? xml : json);
			if (resource instanceof MetadataResource meta) {
				byKey.putIfAbsent(meta.fhirType() + " " + meta.getUrl(), meta);
			}
		}
		Set<String> checkable = checkableProfiles(byKey.values());
		PrePopulatedValidationSupport support = new PrePopulatedValidationSupport(ctx);
		List<String> dropped = new ArrayList<>();
		for (MetadataResource resource : byKey.values()) {
			if (resource instanceof StructureDefinition sd) {
				if (checkable.contains(sd.getUrl())) {
					support.addStructureDefinition(sd);
				} else {
					dropped.add(sd.getUrl());
				}
			} else if (resource instanceof ValueSet) {
				support.addValueSet(resource);
			} else if (resource instanceof CodeSystem) {
				support.addCodeSystem(resource);
			}
		}
		support.lock();
		LOG.info(
				"{} vendored conformance resources loaded for validation in {} ms",
				byKey.size() - dropped.size(),
				(System.nanoTime() - started) / 1_000_000);
		if (!dropped.isEmpty()) {
			LOG.warn("{} vendored profiles left out, their base definitions are not held: {}", dropped.size(), dropped);
		}
		return support;
	}

	/** URLs of the profiles whose chain of base definitions ends in the FHIR core. */
	private static Set<String> checkableProfiles(Collection<MetadataResource> resources) {
		Map<String, String> baseOf = new HashMap<>();
		for (MetadataResource resource : resources) {
			if (resource instanceof StructureDefinition sd) {
				baseOf.put(sd.getUrl(), sd.getBaseDefinition() == null ? CORE : unversioned(sd.getBaseDefinition()));
			}
		}
		Set<String> checkable = new HashSet<>();
		boolean grew = true;
		while (grew) {
			grew = false;
			for (Map.Entry<String, String> e : baseOf.entrySet()) {
				String base = e.getValue();
				if (!checkable.contains(e.getKey()) && (base.startsWith(CORE) || checkable.contains(base))) {
					grew = checkable.add(e.getKey()) || grew;
				}
			}
		}
		return checkable;
	}

	private static List<String> index(ClassLoader loader) {
		try (InputStream in = loader.getResourceAsStream(INDEX)) {
			if (in == null) {
				throw new IllegalStateException(INDEX + " is missing from the classpath (run scripts/refresh-profiles)");
			}
			return new String(in.readAllBytes(), StandardCharsets.UTF_8).lines().filter(l -> !l.isBlank()).toList();
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
	}

	private static IBaseResource parse(ClassLoader loader, String path, IParser parser) {
		try (InputStream in = loader.getResourceAsStream(path)) {
			if (in == null) {
				throw new IllegalStateException(path + " is listed in " + INDEX + " but missing");
			}
			return parser.parseResource(in);
		} catch (IOException e) {
			throw new UncheckedIOException(e);
		}
	}

	/** A canonical reference without its {@code |version} suffix. */
	static String unversioned(String canonical) {
		int bar = canonical.indexOf('|');
		return bar < 0 ? canonical : canonical.substring(0, bar);
	}

	/** The canonical value of a ValueSet compose reference. */
	static String canonical(CanonicalType ref) {
		return ref.getValue() == null ? "" : unversioned(ref.getValue());
	}
}
